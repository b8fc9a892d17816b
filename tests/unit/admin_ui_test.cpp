// admin/: the web UI as the server answers for it (admin/ui_assets.hpp: / and /ui/NAME with
// the UI's own Content-Security-Policy, behind the Host check; every module the page imports
// is embedded; no UI source parses HTML from strings), and the session list's envelope and
// fault columns (admin/session_catalog.hpp) that the UI's table shows.
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>

#include "admin/api.hpp"
#include "admin/ui_assets.hpp"
#include "scratch_dir.hpp"

namespace mailtap::admin {
namespace {

namespace fs = std::filesystem;

request ui_get(std::string target, std::string method = "GET", std::string host = "127.0.0.1:8025") {
  request q;
  q.method = std::move(method);
  q.target = std::move(target);
  q.host = std::move(host);
  return q;
}

std::string header(const response& r, const std::string& name) {
  for (const auto& [k, v] : r.headers)
    if (k == name) return v;
  return "";
}

struct api_fixture {
  std::unique_ptr<policies::engine> engine = policies::make_engine(1);
  relay_metrics metrics;
  directory_catalog catalog{"/nonexistent"};
  api a{[this] {
    api_context c;
    c.faults = engine.get();
    c.metrics = &metrics;
    c.sessions = &catalog;
    c.ready = [] { return true; };
    c.allowed_hosts = loopback_host_allowlist("127.0.0.1");
    return c;
  }()};
};

TEST(AdminUi, RootIsTheIndexPageWithTheUiPolicy) {
  api_fixture f;
  auto r = f.a.handle(ui_get("/"));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
  EXPECT_NE(r.body.find("<script type=\"module\" src=\"/ui/app.js\">"), std::string::npos);
  const auto csp = header(r, "Content-Security-Policy");
  EXPECT_NE(csp.find("default-src 'self'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("connect-src 'self' ws://127.0.0.1:8025;"), std::string::npos) << csp;
  EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos) << csp;
  EXPECT_EQ(csp.find("unsafe"), std::string::npos) << csp;
  EXPECT_EQ(csp.find("sandbox"), std::string::npos) << csp;
  // The query is not part of the path.
  EXPECT_EQ(f.a.handle(ui_get("/?x=1")).status, 200);
}

TEST(AdminUi, FilesUnderUiWithTheirMediaTypes) {
  api_fixture f;
  auto js = f.a.handle(ui_get("/ui/app.js"));
  EXPECT_EQ(js.status, 200);
  EXPECT_EQ(js.content_type, "text/javascript; charset=utf-8");
  EXPECT_FALSE(header(js, "Content-Security-Policy").empty());
  auto css = f.a.handle(ui_get("/ui/app.css"));
  EXPECT_EQ(css.status, 200);
  EXPECT_EQ(css.content_type, "text/css; charset=utf-8");
  EXPECT_EQ(f.a.handle(ui_get("/ui/nope.js")).status, 404);
  EXPECT_EQ(f.a.handle(ui_get("/ui/")).status, 404);
  EXPECT_EQ(f.a.handle(ui_get("/ui/../openapi.json")).status, 404);
  auto post = f.a.handle(ui_get("/ui/app.js", "POST"));
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(header(post, "Allow"), "GET, HEAD");
  // The API's routes are untouched: JSON without the UI's policy (http_server adds its own).
  auto health = f.a.handle(ui_get("/healthz"));
  EXPECT_EQ(health.status, 200);
  EXPECT_TRUE(header(health, "Content-Security-Policy").empty());
}

TEST(AdminUi, ForeignHostsAreRefusedOnUiRoutesToo) {
  api_fixture f;
  EXPECT_EQ(f.a.handle(ui_get("/", "GET", "evil.example:8025")).status, 403);
  EXPECT_EQ(f.a.handle(ui_get("/ui/app.js", "GET", "evil.example")).status, 403);
  EXPECT_EQ(f.a.handle(ui_get("/", "GET", "")).status, 403);
  EXPECT_EQ(f.a.handle(ui_get("/", "GET", "localhost:9")).status, 200);
  EXPECT_EQ(f.a.handle(ui_get("/", "GET", "[::1]:8025")).status, 200);
}

TEST(AdminUi, APolicyNamesTheWebSocketSourceOnlyFromAPlainHost) {
  EXPECT_NE(ui_content_security_policy("localhost:8025").find("connect-src 'self' ws://localhost:8025;"), std::string::npos);
  EXPECT_NE(ui_content_security_policy("[::1]:8025").find("ws://[::1]:8025;"), std::string::npos);
  EXPECT_NE(ui_content_security_policy("127.0.0.1").find("ws://127.0.0.1;"), std::string::npos);
  // A port part that is not digits could smuggle a directive: no WebSocket source then.
  for (const char* bad : {"127.0.0.1:80; script-src *", "127.0.0.1:8o", "[::1]x:80", "127.0.0.1:1234567", ""}) {
    const auto csp = ui_content_security_policy(bad);
    EXPECT_EQ(csp.find("ws://"), std::string::npos) << bad;
    EXPECT_EQ(csp.find("script-src *"), std::string::npos) << bad;
    EXPECT_NE(csp.find("connect-src 'self';"), std::string::npos) << bad;
  }
}

std::set<std::string> embedded_names() {
  std::set<std::string> names;
  for (const auto& f : ui_files()) names.insert(std::string(f.name));
  return names;
}

TEST(AdminUi, EveryModuleImportAndPageReferenceIsEmbedded) {
  const auto names = embedded_names();
  ASSERT_TRUE(names.contains("index.html"));
  ASSERT_TRUE(names.contains("app.js"));
  const std::regex import_from(R"(from '\./([a-z_]+\.js)')");
  const std::regex page_ref(R"re((?:src|href)="/ui/([a-z_.]+)")re");
  std::size_t imports = 0;
  for (const auto& f : ui_files()) {
    const std::string text(f.bytes);
    const auto& pattern = f.name.ends_with(".html") ? page_ref : import_from;
    for (std::sregex_iterator it(text.begin(), text.end(), pattern), end; it != end; ++it) {
      ++imports;
      EXPECT_TRUE(names.contains((*it)[1].str())) << f.name << " refers to " << (*it)[1] << ", which is not embedded";
    }
  }
  EXPECT_GE(imports, 10u);
}

TEST(AdminUi, EveryUiSourceFileIsEmbedded) {
  const auto names = embedded_names();
  const fs::path dir = fs::path(MAILTAP_SOURCE_DIR) / "admin" / "ui";
  for (const auto& entry : fs::directory_iterator(dir)) {
    const auto ext = entry.path().extension();
    if (ext == ".js" || ext == ".css" || ext == ".html" || ext == ".svg") {
      EXPECT_TRUE(names.contains(entry.path().filename().string()))
          << entry.path() << " is not listed in admin/CMakeLists.txt (ui_names)";
    }
  }
}

// Captured text reaches the page only as text nodes (admin/ui/dom.js): no source may parse
// HTML from a string.
TEST(AdminUi, NoSourceParsesHtmlFromStrings) {
  for (const auto& f : ui_files()) {
    if (!f.name.ends_with(".js")) continue;
    for (const char* sink : {"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "DOMParser",
                             "createContextualFragment", "eval(", "new Function"})
      EXPECT_EQ(f.bytes.find(sink), std::string_view::npos) << f.name << " uses " << sink;
  }
}

// ---- the session list's envelope and fault columns

TEST(SessionCatalog, RowsNameSenderRecipientsAndFaults) {
  scratch_dir dir;
  const fs::path golden = fs::path(MAILTAP_SOURCE_DIR) / "tests" / "golden";
  fs::copy_file(golden / "show_faults.jsonl", dir.path() / "show-faults-0001.jsonl");
  fs::copy_file(golden / "show_basic.jsonl", dir.path() / "show-basic-0001.jsonl");
  directory_catalog catalog(dir.path());
  auto page = catalog.list({});
  ASSERT_EQ(page.rows.size(), 2u);
  const auto& faulted = page.rows[0].id == "show-faults-0001" ? page.rows[0] : page.rows[1];
  ASSERT_EQ(faulted.id, "show-faults-0001");
  ASSERT_TRUE(faulted.sender.has_value());
  EXPECT_EQ(*faulted.sender, "alice@example.org");
  EXPECT_EQ(faulted.recipients, (std::vector<std::string>{"bob@example.net", "carol@example.net"}));
  EXPECT_EQ(faulted.recipients_total, 2u);
  EXPECT_EQ(faulted.faults, 5u);
  EXPECT_EQ(faulted.fault_rules, (std::vector<std::string>{"slow-link", "slow-banner", "no-starttls", "greylist-rcpt"}));

  // The API's row carries them too.
  auto engine = policies::make_engine(1);
  relay_metrics metrics;
  api_context c;
  c.faults = engine.get();
  c.metrics = &metrics;
  c.sessions = &catalog;
  c.allowed_hosts = loopback_host_allowlist("127.0.0.1");
  api a(std::move(c));
  auto r = a.handle(ui_get("/api/v1/sessions"));
  ASSERT_EQ(r.status, 200) << r.body;
  auto doc = boost::json::parse(r.body);
  bool seen = false;
  for (const auto& row : doc.at("sessions").as_array()) {
    if (row.at("id") != "show-faults-0001") continue;
    seen = true;
    EXPECT_EQ(row.at("sender"), "alice@example.org");
    EXPECT_EQ(row.at("recipients").as_array().size(), 2u);
    EXPECT_EQ(row.at("recipients_total").to_number<int>(), 2);
    EXPECT_EQ(row.at("faults").to_number<int>(), 5);
    EXPECT_EQ(row.at("fault_rules").as_array().size(), 4u);
  }
  EXPECT_TRUE(seen);
}

TEST(SessionCatalog, RecipientsAreDistinctAndBounded) {
  scratch_dir dir;
  // A capture whose one transaction names more distinct recipients than a row lists.
  std::string capture =
      R"({"type":"header","format":"mailtap-capture","version":2,"session":"many","seed":1,"client":"127.0.0.1:1",)"
      R"("listen":"127.0.0.1:2525","upstream":"builtin","started_at":"2025-01-15T10:00:00.000000Z","started_mono_us":0,)"
      R"("relay":"mailtap 0.1.0","bare_eol":"strict"})"
      "\n";
  std::string rcpts, codes;
  const std::size_t distinct = max_row_recipients + 5;
  for (std::size_t i = 0; i < distinct + 3; ++i) {
    rcpts += std::string(i ? "," : "") + "\"r" + std::to_string(i % distinct) + "@example.com\"";
    codes += std::string(i ? "," : "") + "250";
  }
  capture += R"({"type":"transaction","mail_from":"","rcpt_to":[)" + rcpts + R"(],"rcpt_codes":[)" + codes +
             R"(],"message_id":null,"size":0,"final_reply":null,"outcome":"delivered","synthesized":false,"start_us":1,)"
             R"("end_us":2})" "\n";
  { std::ofstream(dir.path() / "many.jsonl") << capture; }
  directory_catalog catalog(dir.path());
  auto page = catalog.list({});
  ASSERT_EQ(page.rows.size(), 1u);
  const auto& row = page.rows[0];
  ASSERT_EQ(row.outcome == "unreadable", false) << row.error;
  ASSERT_TRUE(row.sender.has_value());
  EXPECT_EQ(*row.sender, "");   // the null reverse-path
  EXPECT_EQ(row.recipients.size(), max_row_recipients);
  EXPECT_EQ(row.recipients.front(), "r0@example.com");
  EXPECT_EQ(row.recipients_total, distinct);
  EXPECT_EQ(row.faults, 0u);
}

// A QA trial: a BDAT sent without MAIL was recorded with mail_from "", and the catalog gave
// it sender "", the null reverse-path of a bounce. Its sender is null, and without_mail says why.
TEST(SessionCatalog, AFirstTransactionWithoutMailHasNoSender) {
  scratch_dir dir;
  const std::string header =
      R"({"type":"header","format":"mailtap-capture","version":5,"session":"nomail","seed":1,"client":"127.0.0.1:1",)"
      R"("listen":"127.0.0.1:2525","upstream":"builtin","started_at":"2025-01-15T10:00:00.000000Z","started_mono_us":0,)"
      R"("relay":"mailtap 0.1.0","bare_eol":"strict"})"
      "\n";
  const std::string txn =
      R"({"type":"transaction","mail_from":"","rcpt_to":[],"rcpt_codes":[],"message_id":null,"size":5,)"
      R"("final_reply":{"code":503,"enhanced":"5.5.1","text":"Error: need MAIL command"},"outcome":"rejected",)"
      R"("synthesized":false,"without_mail":true,"start_us":1,"end_us":2})"
      "\n";
  { std::ofstream(dir.path() / "nomail.jsonl") << header << txn; }
  directory_catalog catalog(dir.path());
  auto page = catalog.list({});
  ASSERT_EQ(page.rows.size(), 1u);
  ASSERT_NE(page.rows[0].outcome, "unreadable") << page.rows[0].error;
  EXPECT_FALSE(page.rows[0].sender.has_value());
  EXPECT_TRUE(page.rows[0].without_mail);

  auto engine = policies::make_engine(1);
  relay_metrics metrics;
  api_context c;
  c.faults = engine.get();
  c.metrics = &metrics;
  c.sessions = &catalog;
  c.allowed_hosts = loopback_host_allowlist("127.0.0.1");
  api a(std::move(c));
  auto r = a.handle(ui_get("/api/v1/sessions"));
  ASSERT_EQ(r.status, 200) << r.body;
  const auto row = boost::json::parse(r.body).at("sessions").at(0);
  EXPECT_TRUE(row.at("sender").is_null()) << r.body;
  EXPECT_EQ(row.at("without_mail"), true) << r.body;
  auto one = a.handle(ui_get("/api/v1/sessions/nomail"));
  ASSERT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(boost::json::parse(one.body).at("transactions").at(0).at("without_mail"), true) << one.body;
}

}  // namespace
}  // namespace mailtap::admin
