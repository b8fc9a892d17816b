// Capture reader and `mailtap show`: golden transcripts, incomplete and cut captures,
// version refusal, file:line errors, the session outcome rule. Files only, no sockets.
//
// Golden files: tests/golden/show_basic.{txt,json} are the exact expected output for
// tests/golden/show_basic.jsonl (a format version 1 capture, kept as it was written),
// show_faults.{txt,json} for show_faults.jsonl (version 2, with fault records),
// show_records.{txt,json} for show_records.jsonl (version 3: an SMTPS client, the relay's own
// upstream EHLO and STARTTLS, handshakes on both legs, a blackholed message),
// show_copies.{txt,json} for show_copies.jsonl (version 4: the relay's copy as a bytes_ref) and
// show_text.{txt,json} for show_text.jsonl (version 5: bytes as text). After an intended
// change of layout, regenerate them with
//   MAILTAP_UPDATE_GOLDEN=1 ./build/tests/unit/mailtap_capture_tests
// and review the diff before committing.
#include <algorithm>
#include <gtest/gtest.h>

#include <cstdio>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include <variant>

#include "captures/reader.hpp"
#include "captures/show.hpp"

namespace fs = std::filesystem;
using namespace mailtap::captures;

namespace {

const fs::path golden_dir = fs::path(MAILTAP_SOURCE_DIR) / "tests" / "golden";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The golden capture's lines, each with its '\n'.
std::vector<std::string> golden_lines() {
  std::vector<std::string> lines;
  std::istringstream in(slurp(golden_dir / "show_basic.jsonl"));
  for (std::string l; std::getline(in, l);) lines.push_back(l + "\n");
  return lines;
}

std::string join(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l;
  return s;
}

// A scratch capture file named after the running test.
fs::path scratch(const std::string& content) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path p = fs::path(::testing::TempDir()) /
               (std::string("mailtap_") + info->test_suite_name() + "_" + info->name() + ".jsonl");
  std::ofstream(p, std::ios::binary | std::ios::trunc) << content;
  return p;
}

capture load(const fs::path& p) {
  std::string error;
  auto c = read_capture(p, error);
  EXPECT_TRUE(c) << error;
  return c ? *c : capture{};
}

std::string load_error(const fs::path& p) {
  std::string error;
  auto c = read_capture(p, error);
  EXPECT_FALSE(c);
  return error;
}

// Exact comparison, or rewrite when MAILTAP_UPDATE_GOLDEN=1.
void expect_golden(const std::string& actual, const std::string& file) {
  fs::path p = golden_dir / file;
  if (const char* u = std::getenv("MAILTAP_UPDATE_GOLDEN"); u && std::string(u) == "1") {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << actual;
    std::printf("rewrote %s\n", p.c_str());   // an update run, not a check: review the diff
    return;
  }
  ASSERT_TRUE(fs::exists(p)) << p << " missing; run with MAILTAP_UPDATE_GOLDEN=1";
  EXPECT_EQ(actual, slurp(p)) << "golden mismatch for " << p;
}

std::string transaction_line(std::string_view outcome) {
  return R"({"type":"transaction","mail_from":"a@x","rcpt_to":["b@y"],"rcpt_codes":[250],)"
         R"("message_id":null,"size":1,"final_reply":null,"outcome":")" +
         std::string(outcome) + R"(","synthesized":false,"start_us":1,"end_us":2})" + "\n";
}

}  // namespace

// ---------------------------------------------------------------- golden

TEST(CaptureShow, GoldenText) {
  capture c = load(golden_dir / "show_basic.jsonl");
  expect_golden(render_text(c), "show_basic.txt");
}

// The columns widen for a long session (a newcomer's trial: at 10 s and more the transcript's
// times pushed its text one column right, and the reply's continuation lines no longer lined up).
TEST(CaptureShow, ALongSessionsColumnsStayAligned) {
  capture c = load(golden_dir / "show_basic.jsonl");
  const std::uint64_t late = 12'345'678'000;   // 12,345 s: 12 digits with the fraction
  for (auto& e : c.events) std::visit([&](auto& ev) { ev.t_us += late; }, e);
  for (auto& s : c.stages) {
    s.start_us += late;
    s.think_us += late;
  }
  const std::string text = render_text(c);
  std::istringstream in(text);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  // Every transcript row's text starts in one column: first lines after their time, continuation
  // lines under them.
  std::size_t column = std::string::npos;
  bool in_transcript = false;
  for (const auto& l : lines) {
    if (l == "transcript") {
      in_transcript = true;
      continue;
    }
    if (!in_transcript || l.empty()) {
      if (in_transcript) break;
      continue;
    }
    if (l.find("[message body") != std::string::npos) continue;   // indented under the 354
    const auto at = l.find_first_of("CSRUF!=", l.find("ms  ") == std::string::npos ? 0 : l.find("ms  ") + 4);
    ASSERT_NE(at, std::string::npos) << l;
    if (column == std::string::npos) column = at;
    EXPECT_EQ(at, column) << l;
  }
  EXPECT_NE(column, std::string::npos);
  // Each number in the stage table is apart from the one before it.
  const auto header = std::find_if(lines.begin(), lines.end(), [](const std::string& l) { return l.rfind("stage ", 0) == 0; });
  ASSERT_NE(header, lines.end());
  for (auto row = header + 1; row != lines.end() && !row->empty(); ++row) {
    const std::string numbers = row->substr(0, row->find('|'));
    std::istringstream cells(numbers);
    std::vector<std::string> parts;
    for (std::string w; cells >> w;) parts.push_back(w);
    EXPECT_GE(parts.size(), 7u) << *row;   // the label and six numbers, none run together
    EXPECT_EQ(row->find('|'), header->size() + 2) << *row;
  }
}

TEST(CaptureShow, GoldenJson) {
  capture c = load(golden_dir / "show_basic.jsonl");
  expect_golden(render_json(c) + "\n", "show_basic.json");   // the file ends in a newline
}

TEST(CaptureShow, GoldenFaultsText) {
  capture c = load(golden_dir / "show_faults.jsonl");
  expect_golden(render_text(c), "show_faults.txt");
}

TEST(CaptureShow, GoldenFaultsJson) {
  capture c = load(golden_dir / "show_faults.jsonl");
  expect_golden(render_json(c) + "\n", "show_faults.json");
}

TEST(CaptureShow, GoldenRecordsText) {
  capture c = load(golden_dir / "show_records.jsonl");
  expect_golden(render_text(c), "show_records.txt");
}

TEST(CaptureShow, GoldenRecordsJson) {
  capture c = load(golden_dir / "show_records.jsonl");
  expect_golden(render_json(c) + "\n", "show_records.json");
}

// Version 4: the relay's copy of the message upstream is a bytes_ref (recorded by mailtap
// with swaks as the client and the built-in sink); show prints it as the bytes it refers to.
TEST(CaptureShow, GoldenCopiesText) {
  capture c = load(golden_dir / "show_copies.jsonl");
  expect_golden(render_text(c), "show_copies.txt");
}

TEST(CaptureShow, GoldenCopiesJson) {
  capture c = load(golden_dir / "show_copies.jsonl");
  expect_golden(render_json(c) + "\n", "show_copies.json");
}

namespace {

// Every byte the client sent, and every byte the relay sent upstream, bytes_refs resolved.
std::pair<std::string, std::string> client_in_and_upstream_out(const capture& c) {
  std::string client_in, upstream_out;
  for (const auto& e : c.events)
    if (const auto* b = std::get_if<bytes_event>(&e)) {
      if (b->leg == mailtap::protocol::leg::client && b->dir == mailtap::protocol::direction::in) client_in += b->data;
      if (b->leg == mailtap::protocol::leg::upstream && b->dir == mailtap::protocol::direction::out) upstream_out += b->data;
    }
  return {client_in, upstream_out};
}

// The message as the client sent it (from its `first_line` to the dot) went upstream unchanged.
void expect_message_went_upstream_unchanged(const std::string& client_in, const std::string& upstream_out,
                                            std::string_view first_line) {
  const auto body = client_in.find(first_line);
  ASSERT_NE(body, std::string::npos);
  const auto dot = client_in.find("\r\n.\r\n", body);
  ASSERT_NE(dot, std::string::npos);
  EXPECT_NE(upstream_out.find(client_in.substr(body, dot + 5 - body)), std::string::npos);
}

}  // namespace

TEST(CaptureReader, TheRelaysCopyReadsAsTheClientsMessage) {
  capture c = load(golden_dir / "show_copies.jsonl");
  EXPECT_EQ(c.header.version, 4);
  const auto [client_in, upstream_out] = client_in_and_upstream_out(c);
  expect_message_went_upstream_unchanged(client_in, upstream_out, "Subject: v4");
  EXPECT_EQ(std::count(upstream_out.begin(), upstream_out.end(), '.'), std::count(client_in.begin(), client_in.end(), '.'));
}

// Version 5: bytes as text (`latin1`), recorded by mailtap with swaks as the client and the
// built-in sink; the message has UTF-8, quotes, backslashes, a tab, control bytes and DEL.
TEST(CaptureShow, GoldenTextText) {
  capture c = load(golden_dir / "show_text.jsonl");
  expect_golden(render_text(c), "show_text.txt");
}

TEST(CaptureShow, GoldenTextJson) {
  capture c = load(golden_dir / "show_text.jsonl");
  expect_golden(render_json(c) + "\n", "show_text.json");
}

TEST(CaptureReader, TextBytesReadAsTheBytesTheClientSent) {
  capture c = load(golden_dir / "show_text.jsonl");
  EXPECT_EQ(c.header.version, 5);
  const auto [client_in, upstream_out] = client_in_and_upstream_out(c);
  // UTF-8 in the message is its bytes (ü is C3 BC), and so are the control bytes and DEL.
  EXPECT_NE(client_in.find("Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln, \"quoted\" and \\back\\slashed\ttabbed.\r\n"),
            std::string::npos);
  EXPECT_NE(client_in.find("control bytes \x01\x1b[0m and DEL \x7f\r\n"), std::string::npos);
  expect_message_went_upstream_unchanged(client_in, upstream_out, "Subject: v5");
}

TEST(CaptureReader, BasicModel) {
  capture c = load(golden_dir / "show_basic.jsonl");
  EXPECT_EQ(c.header.version, 1);
  EXPECT_EQ(c.header.session, "show-basic-0001");
  EXPECT_EQ(c.header.seed, 42u);
  EXPECT_EQ(c.header.client, "192.0.2.10:50123");
  EXPECT_EQ(c.header.upstream, "mx.example.net:25");
  EXPECT_EQ(c.header.bare_eol, "strict");
  EXPECT_TRUE(c.complete);
  EXPECT_FALSE(c.truncated_line);
  ASSERT_TRUE(c.end);
  EXPECT_EQ(c.end->reason, "client_quit");
  EXPECT_EQ(c.stages.size(), 9u);
  EXPECT_EQ(c.stages.front().ph, mailtap::protocol::phase::connect);
  ASSERT_EQ(c.transactions.size(), 1u);
  EXPECT_EQ(c.transactions[0].size, 56u);
  EXPECT_EQ(c.transactions[0].message_id, "<m1@example.org>");
  ASSERT_TRUE(c.transactions[0].final_reply);
  EXPECT_EQ(c.transactions[0].final_reply->code, 250);
  EXPECT_EQ(session_outcome(c), "delivered");

  // Events keep file order; bytes come back decoded and byte-exact.
  ASSERT_FALSE(c.events.empty());
  const auto* first = std::get_if<bytes_event>(&c.events[0]);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->data, "220 mx.example.net ESMTP\r\n");
  EXPECT_EQ(first->leg, mailtap::protocol::leg::upstream);
  EXPECT_EQ(first->dir, mailtap::protocol::direction::in);
  const auto* banner = std::get_if<reply_event>(&c.events[1]);
  ASSERT_TRUE(banner);
  EXPECT_EQ(banner->reply.code, 220);
  EXPECT_EQ(banner->reply.raw, "220 mx.example.net ESMTP\r\n");
  std::size_t commands = 0, notes = 0;
  for (const auto& e : c.events) {
    commands += std::holds_alternative<command_event>(e);
    notes += std::holds_alternative<note_event>(e);
  }
  EXPECT_EQ(commands, 5u);
  EXPECT_EQ(notes, 1u);
}

TEST(CaptureShow, JsonShape) {
  capture c = load(golden_dir / "show_basic.jsonl");
  boost::json::value v = boost::json::parse(render_json(c));
  const auto& o = v.as_object();
  EXPECT_EQ(o.at("id").as_string(), "show-basic-0001");
  EXPECT_EQ(o.at("outcome").as_string(), "delivered");
  EXPECT_EQ(o.at("complete").as_bool(), true);
  EXPECT_EQ(o.at("end_reason").as_string(), "client_quit");
  EXPECT_EQ(o.at("seed").to_number<std::uint64_t>(), 42u);
  EXPECT_EQ(o.at("stages").as_array().size(), 9u);
  const auto& t = o.at("transactions").as_array().at(0).as_object();
  EXPECT_EQ(t.at("final_reply").as_object().at("code").to_number<int>(), 250);
  EXPECT_EQ(t.at("synthesized").as_bool(), false);
  bool saw_ehlo_reply = false, saw_body = false;
  for (const auto& ev : o.at("events").as_array()) {
    const auto& e = ev.as_object();
    if (e.at("kind") == "reply" && e.at("text").as_string().starts_with("250-mx.example.net\n250-PIPELINING")) {
      saw_ehlo_reply = true;
    }
    if (e.at("kind") == "bytes" && e.at("text") == "Hello Bob\\r\\n.\\r\\n") {
      saw_body = true;
      EXPECT_EQ(e.at("size").to_number<int>(), 14);
    }
  }
  EXPECT_TRUE(saw_ehlo_reply);
  EXPECT_TRUE(saw_body);
}

TEST(CaptureShow, LongBytesAreCutInJson) {
  auto lines = golden_lines();
  lines.insert(lines.begin() + 1, R"({"type":"bytes","t_us":1,"leg":"client","dir":"in","b64":")" +
                                      std::string(400, 'Q') + "\"}\n");   // 300 bytes
  capture c = load(scratch(join(lines)));
  auto v = boost::json::parse(render_json(c));
  const auto& e = v.at("events").as_array().at(0).as_object();
  EXPECT_EQ(e.at("size").to_number<int>(), 300);
  EXPECT_TRUE(e.at("text").as_string().ends_with("...(300 bytes)"));
}

// ---------------------------------------------------------------- incomplete captures

TEST(CaptureReader, NoEndRecordIsIncomplete) {
  auto lines = golden_lines();
  lines.pop_back();
  capture c = load(scratch(join(lines)));
  EXPECT_FALSE(c.complete);
  EXPECT_FALSE(c.end);
  EXPECT_FALSE(c.truncated_line);
  std::string text = render_text(c);
  EXPECT_NE(text.find("capture   INCOMPLETE (no end record)\n"), std::string::npos) << text;
  EXPECT_NE(text.find("end       (none)\n"), std::string::npos) << text;
  auto v = boost::json::parse(render_json(c));
  EXPECT_EQ(v.at("complete").as_bool(), false);
  EXPECT_TRUE(v.at("end_reason").is_null());
}

TEST(CaptureReader, CutLastLineLoadsIncomplete) {
  auto lines = golden_lines();
  std::string end = lines.back();
  lines.pop_back();
  std::string content = join(lines) + end.substr(0, end.size() / 2);   // crash mid-write
  capture c = load(scratch(content));
  EXPECT_TRUE(c.truncated_line);
  EXPECT_FALSE(c.complete);
  EXPECT_FALSE(c.end);
  EXPECT_EQ(c.transactions.size(), 1u);
  EXPECT_NE(render_text(c).find("capture   INCOMPLETE (no end record; last line cut)\n"), std::string::npos);
  EXPECT_EQ(boost::json::parse(render_json(c)).at("complete").as_bool(), false);
}

// The golden capture (show_basic.jsonl) cut after its last line that holds `marker`, then
// a cut line: a relay killed there.
capture cut_after(std::string_view marker, std::size_t which = 0) {
  auto lines = golden_lines();
  std::vector<std::size_t> found;
  for (std::size_t i = 0; i < lines.size(); ++i)
    if (lines[i].find(marker) != std::string::npos) found.push_back(i);
  EXPECT_GT(found.size(), which) << marker;
  if (found.size() <= which) return {};
  lines.resize(found[which] + 1);
  return load(scratch(join(lines) + R"({"type":"bytes","t_us":7000,"leg":"up)"));
}

TEST(CaptureReader, CutAfterTheDotWentUpstreamRebuildsAnUnknownTransaction) {
  // Killed after the message's end went upstream, before its reply: no transaction record,
  // no data_end stage. The reader rebuilds the transaction from the transcript, and the
  // body's summary gives its size.
  capture c = cut_after("SGVsbG8gQm9i", 1);   // "Hello Bob\r\n.\r\n", the relay's copy upstream
  EXPECT_TRUE(c.truncated_line);
  ASSERT_EQ(c.transactions.size(), 1u);
  const transaction& t = c.transactions[0];
  EXPECT_TRUE(t.rebuilt);
  EXPECT_EQ(t.mail_from, "alice@example.org");
  EXPECT_EQ(t.rcpt_to, std::vector<std::string>{"bob@example.net"});
  EXPECT_EQ(t.rcpt_codes, std::vector<int>{250});
  EXPECT_EQ(t.message_id, "<m1@example.org>");
  EXPECT_EQ(t.size, 56u);   // as a record would say: the terminator excluded
  EXPECT_FALSE(t.final_reply);
  EXPECT_EQ(t.result, mailtap::protocol::outcome::unknown);   // it may have been delivered
  EXPECT_EQ(t.start_us, 4000u);
  EXPECT_EQ(t.end_us, 6500u);
  EXPECT_EQ(session_outcome(c), "unknown");
  EXPECT_EQ(session_outcome(c, true), "none") << "a session in progress: its open transaction has no outcome yet";
  const std::string text = render_text(c);
  EXPECT_NE(text.find("   [message body: 56 bytes]\n"), std::string::npos) << text;
  EXPECT_NE(text.find("transactions (1)\n#1 unknown (no record: the capture ends inside this transaction; "
                      "rebuilt from the transcript)\n"),
            std::string::npos)
      << text;
  auto v = boost::json::parse(render_json(c));
  EXPECT_EQ(v.at("outcome").as_string(), "unknown");
  EXPECT_EQ(v.at("transactions").at(0).at("rebuilt").as_bool(), true);
}

// A trial: a relay killed while a delay fault held the destination's 250 to the dot (the
// reply recorded as it came, no transaction record, which is written as the reply goes on):
// nothing was rebuilt, and show and diagnose said the session had no transaction. The
// destination's word decides, as the relay would have recorded it: delivered, with that reply.
TEST(CaptureReader, CutWhileTheDestinationsAcceptanceWasHeldRebuildsADeliveredTransaction) {
  capture c = cut_after(R"("code":250,"enhanced":"2.0.0")");
  ASSERT_EQ(c.transactions.size(), 1u);
  const transaction& t = c.transactions[0];
  EXPECT_TRUE(t.rebuilt);
  EXPECT_EQ(t.result, mailtap::protocol::outcome::delivered);
  ASSERT_TRUE(t.final_reply);
  EXPECT_EQ(t.final_reply->code, 250);
  EXPECT_EQ(t.final_reply->text, "Ok: queued as 4ABC");
  EXPECT_EQ(t.size, 56u);
  EXPECT_EQ(session_outcome(c), "delivered");

  // A 221 there is no reply an end of data can have (the relay answers 451 and never passes it
  // on): the message's fate is unknown, as the relay records it.
  auto lines = golden_lines();
  std::size_t at = lines.size();
  for (std::size_t i = 0; i < lines.size(); ++i)
    if (lines[i].find(R"("type":"reply")") != std::string::npos &&
        lines[i].find(R"("code":250,"enhanced":"2.0.0")") != std::string::npos)
      at = i;
  ASSERT_LT(at, lines.size());
  lines[at].replace(lines[at].find(R"("code":250)"), 10, R"("code":221)");
  lines.resize(at + 1);
  const capture c221 = load(scratch(join(lines)));
  ASSERT_EQ(c221.transactions.size(), 1u);
  EXPECT_EQ(c221.transactions[0].result, mailtap::protocol::outcome::unknown);
  EXPECT_FALSE(c221.transactions[0].final_reply);

  // A 250 that came before the dot went (the destination gave up on the message early; the relay
  // answers 451 and never sends the end) accepted nothing (a review).
  lines = golden_lines();
  std::size_t dot = lines.size();
  for (std::size_t i = 0; i < lines.size(); ++i)
    if (lines[i].find("SGVsbG8gQm9iDQouDQo=") != std::string::npos && lines[i].find(R"("dir":"out")") != std::string::npos)
      dot = i;
  ASSERT_LT(dot, lines.size());
  lines.resize(dot);   // the client's dot arrived; the relay's copy of it never went
  lines.push_back(R"({"type":"reply","t_us":6400,"leg":"upstream","dir":"in","code":250,"enhanced":"2.0.0","lines":["2.0.0 early"]})" "\n");
  const capture early = load(scratch(join(lines)));
  ASSERT_EQ(early.transactions.size(), 1u);
  EXPECT_EQ(early.transactions[0].result, mailtap::protocol::outcome::aborted);
  EXPECT_FALSE(early.transactions[0].final_reply);
}

TEST(CaptureReader, CutBeforeTheDotWentUpstreamRebuildsAnAbortedTransaction) {
  capture c = cut_after("SGVsbG8gQm9i", 0);   // the client's dot arrived; the relay had not sent it on
  ASSERT_EQ(c.transactions.size(), 1u);
  EXPECT_TRUE(c.transactions[0].rebuilt);
  EXPECT_EQ(c.transactions[0].size, 56u);
  EXPECT_EQ(c.transactions[0].result, mailtap::protocol::outcome::aborted);   // nothing was delivered
}

TEST(CaptureReader, CutBeforeTheRecipientsAnsweredRebuildsThemWithoutCodes) {
  capture c = cut_after(R"("code":250,"enhanced":"2.1.0")");   // MAIL answered, RCPT and DATA not yet
  ASSERT_EQ(c.transactions.size(), 1u);
  EXPECT_EQ(c.transactions[0].rcpt_to, std::vector<std::string>{"bob@example.net"});
  EXPECT_TRUE(c.transactions[0].rcpt_codes.empty());
  EXPECT_EQ(c.transactions[0].size, 0u);
  EXPECT_EQ(c.transactions[0].result, mailtap::protocol::outcome::aborted);
}

TEST(CaptureReader, NoTransactionIsRebuiltBeforeMailIsAnsweredOrAfterItsRecord) {
  EXPECT_TRUE(cut_after(R"("text":"MAIL FROM:<alice@example.org>")").transactions.empty());
  // Cut after the transaction's record: it is there once, as recorded.
  capture c = cut_after(R"("type":"transaction")");
  ASSERT_EQ(c.transactions.size(), 1u);
  EXPECT_FALSE(c.transactions[0].rebuilt);
  EXPECT_EQ(c.transactions[0].result, mailtap::protocol::outcome::delivered);
}

TEST(CaptureReader, EveryRecipientRefusedGivesTheRuleIsOutcome) {
  // A second transaction, open when the relay stopped, whose only recipient was refused 550.
  auto lines = golden_lines();
  lines.pop_back();   // the end record
  for (const char* line : {
           R"({"type":"command","t_us":10000,"leg":"client","dir":"in","text":"MAIL FROM:<carol@example.org>"})",
           R"({"type":"command","t_us":10000,"leg":"client","dir":"in","text":"RCPT TO:<dave@example.net>"})",
           R"({"type":"reply","t_us":10500,"leg":"upstream","dir":"in","code":250,"enhanced":"2.1.0","lines":["2.1.0 Ok"]})",
           R"({"type":"reply","t_us":10500,"leg":"upstream","dir":"in","code":550,"enhanced":"5.1.1","lines":["5.1.1 No such user"]})"})
    lines.push_back(std::string(line) + "\n");
  // Without its QUIT, which ended the session in the golden file.
  std::erase_if(lines, [](const std::string& l) { return l.find("UVVJVA0K") != std::string::npos ||
                                                         l.find(R"("text":"QUIT")") != std::string::npos ||
                                                         l.find("221") != std::string::npos; });
  capture c = load(scratch(join(lines)));
  ASSERT_EQ(c.transactions.size(), 2u);
  EXPECT_FALSE(c.transactions[0].rebuilt);
  EXPECT_TRUE(c.transactions[1].rebuilt);
  EXPECT_EQ(c.transactions[1].mail_from, "carol@example.org");
  EXPECT_EQ(c.transactions[1].rcpt_codes, std::vector<int>{550});
  EXPECT_EQ(c.transactions[1].result, mailtap::protocol::outcome::rejected);
}

TEST(CaptureReader, UnterminatedWholeLastLineIsKept) {
  std::string content = join(golden_lines());
  content.pop_back();   // the end record survived; only its newline is missing
  capture c = load(scratch(content));
  EXPECT_FALSE(c.truncated_line);
  EXPECT_TRUE(c.end);
  EXPECT_TRUE(c.complete);
}

TEST(CaptureReader, DroppedRecordsMakeItIncomplete) {
  auto lines = golden_lines();
  lines.back() = R"({"type":"end","t_us":11000,"reason":"client_quit","detail":"","ended_at":"2025-01-15T09:30:00.011000Z",)"
                 R"("complete":false,"dropped_records":3})" "\n";
  capture c = load(scratch(join(lines)));
  EXPECT_FALSE(c.complete);
  EXPECT_NE(render_text(c).find("capture   INCOMPLETE (3 records dropped)\n"), std::string::npos);
}

TEST(CaptureReader, CutHeaderIsAnError) {
  fs::path p = scratch(R"({"type":"header","format":"mailtap-cap)");
  EXPECT_EQ(load_error(p), p.string() + ":1: header record is cut (the writer stopped mid-line)");
}

// ---------------------------------------------------------------- errors and versions

TEST(CaptureReader, NewerVersionIsRefused) {
  auto lines = golden_lines();
  auto at = lines[0].find("\"version\":1");
  ASSERT_NE(at, std::string::npos);
  const std::string newer = std::to_string(format_version + 1);
  lines[0].replace(at, 11, "\"version\":" + newer);
  fs::path p = scratch(join(lines));
  EXPECT_EQ(load_error(p), p.string() + ":1: capture format version " + newer + " is newer than this mailtap (" +
                               std::to_string(format_version) + ")");
}

TEST(CaptureReader, VersionZeroIsRefused) {
  auto lines = golden_lines();
  lines[0].replace(lines[0].find("\"version\":1"), 11, "\"version\":0");
  fs::path p = scratch(join(lines));
  EXPECT_EQ(load_error(p), p.string() + ":1: unsupported capture format version 0");
}

// A tester's trial: "version": 18446744073709551616 (past any integer JSON reads as one) was
// refused as "unsupported capture format version 1.8446744073709552E19", a number the file does
// not hold. A version that is not an integer says so, and a huge one that it is out of range.
TEST(CaptureReader, AVersionThatIsNoIntegerIsRefusedWithoutPrintingAnotherNumber) {
  auto lines = golden_lines();
  const auto at = lines[0].find("\"version\":1");
  ASSERT_NE(at, std::string::npos);
  auto with_version = [&](const std::string& v) {
    auto bad = lines;
    bad[0].replace(at, 11, "\"version\":" + v);
    return scratch(join(bad));
  };
  fs::path p = with_version("18446744073709551616");
  EXPECT_EQ(load_error(p), p.string() + ":1: unsupported capture format version: out of range (this mailtap reads "
                                        "versions 1 to " + std::to_string(format_version) + ")");
  p = with_version("1e300");
  EXPECT_EQ(load_error(p), p.string() + ":1: unsupported capture format version: out of range (this mailtap reads "
                                        "versions 1 to " + std::to_string(format_version) + ")");
  p = with_version("2.5");
  EXPECT_EQ(load_error(p), p.string() + ":1: unsupported capture format version: not an integer (this mailtap reads "
                                        "versions 1 to " + std::to_string(format_version) + ")");
  p = with_version("5.0");
  EXPECT_EQ(load_error(p), p.string() + ":1: unsupported capture format version: not written as an integer (a decimal "
                                        "point or an exponent) (this mailtap reads versions 1 to " +
                               std::to_string(format_version) + ")");
  p = with_version("-3");
  EXPECT_EQ(load_error(p), p.string() + ":1: unsupported capture format version -3");
  p = with_version("18446744073709551615");   // an integer JSON reads: printed as written
  EXPECT_EQ(load_error(p), p.string() + ":1: capture format version 18446744073709551615 is newer than this mailtap (" +
                               std::to_string(format_version) + ")");
}

// A tester's trial: a header whose started_at was "9999999-99-99" was read; `captures list`
// showed it as 1970-01-01 and the admin API returned the string. started_at and ended_at are
// RFC 3339 times (FORMAT.md): anything else is refused, naming the record and the field.
TEST(CaptureReader, AStartOrEndTimeThatIsNotRfc3339IsRefused) {
  auto lines = golden_lines();
  const std::string good_start = "\"started_at\":\"2025-01-15T09:30:00.000000Z\"";
  const std::string good_end = "\"ended_at\":\"2025-01-15T09:30:00.011000Z\"";
  ASSERT_NE(lines[0].find(good_start), std::string::npos);
  ASSERT_NE(lines.back().find(good_end), std::string::npos);
  for (std::string bad_time : {"9999999-99-99", "", "2025-01-15", "2025-01-15T09:30:00", "2025-02-30T09:30:00Z",
                               "2025-13-01T00:00:00Z", "2025-01-15T25:00:00Z", "yesterday"}) {
    auto bad = lines;
    bad[0].replace(bad[0].find(good_start), good_start.size(), "\"started_at\":\"" + bad_time + "\"");
    fs::path p = scratch(join(bad));
    EXPECT_EQ(load_error(p), p.string() + ":1: header record: field \"started_at\" is not an RFC 3339 time "
                                          "(2026-12-02T10:00:00.000000Z): \"" + bad_time + "\"") << bad_time;
    bad = lines;
    bad.back().replace(bad.back().find(good_end), good_end.size(), "\"ended_at\":\"" + bad_time + "\"");
    p = scratch(join(bad));
    EXPECT_EQ(load_error(p), p.string() + ":" + std::to_string(lines.size()) + ": end record: field \"ended_at\" is "
                                          "not an RFC 3339 time (2026-12-02T10:00:00.000000Z): \"" + bad_time + "\"")
        << bad_time;
  }
  // RFC 3339 without a fraction, with an offset, a leap second: read.
  for (std::string fine : {"2025-01-15T09:30:00Z", "2025-01-15T10:30:00.5+01:00", "2016-12-31T23:59:60Z"}) {
    auto ok = lines;
    ok[0].replace(ok[0].find(good_start), good_start.size(), "\"started_at\":\"" + fine + "\"");
    std::string error;
    EXPECT_TRUE(read_capture(scratch(join(ok)), error)) << fine << ": " << error;
  }
}

TEST(CaptureReader, GarbageLineNamesFileAndLine) {
  auto lines = golden_lines();
  lines[2] = "[1, 2, 3]\n";
  fs::path p = scratch(join(lines));
  EXPECT_EQ(load_error(p), p.string() + ":3: not a JSON object");

  lines[2] = "this is not json\n";
  p = scratch(join(lines));
  std::string error = load_error(p);
  EXPECT_EQ(error.rfind(p.string() + ":3: not a JSON object", 0), 0u) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos);
}

// An error line quotes what the file holds safe for a terminal: a trial's header session
// "a<U+202E>b" reversed the rest of the line on stderr (C0 controls were escaped already).
TEST(CaptureReader, AnErrorQuotesTheFilesTextWithItsControlsEscaped) {
  auto lines = golden_lines();
  const std::string good = "\"session\":\"show-basic-0001\"";
  lines[0].replace(lines[0].find(good), good.size(), "\"session\":\"a\\u202eb\\u0085c\"");
  fs::path p = scratch(join(lines));
  const std::string error = load_error(p);
  EXPECT_NE(error.find("\"a\\xe2\\x80\\xaeb\\xc2\\x85c\""), std::string::npos) << error;
  EXPECT_EQ(error.find("\xe2\x80\xae"), std::string::npos) << error;
}

// A session id is a plain name (it names export eml's files and index rows), and a time fits
// in 10^15 µs (2^63 printed as +9223372036854775.808 ms, stamped pcap frames in 1970 and
// kept replay server from greeting): both refused with the record and field named.
TEST(CaptureReader, ASessionIdThatIsAPathAndAnOverlongTimeAreRefused) {
  auto lines = golden_lines();
  const std::string good = "\"session\":\"show-basic-0001\"";
  for (std::string id : {"../victim/traversal", "/tmp/absolute", ".x"}) {
    auto bad = lines;
    bad[0].replace(bad[0].find(good), good.size(), "\"session\":\"" + id + "\"");
    fs::path p = scratch(join(bad));
    const std::string error = load_error(p);
    EXPECT_EQ(error.rfind(p.string() + ":1: header record: field \"session\" is not a session id", 0), 0u) << error;
  }
  auto bad = lines;
  bad[2] = R"({"type":"command","t_us":9223372036854775808,"leg":"client","dir":"in","text":"NOOP"})" "\n";
  fs::path p = scratch(join(bad));
  EXPECT_EQ(load_error(p), p.string() + ":3: command record: field \"t_us\" is not a time in microseconds up to 10^15 (31 years)");
  bad[2] = R"({"type":"command","t_us":1000000000000000,"leg":"client","dir":"in","text":"NOOP"})" "\n";
  p = scratch(join(bad));
  std::string error;
  EXPECT_TRUE(read_capture(p, error)) << error;   // 10^15 itself is taken
}

TEST(CaptureReader, GarbageLastLineIsNotMistakenForACut) {
  std::string content = join(golden_lines()) + "garbage";
  fs::path p = scratch(content);
  std::string error = load_error(p);
  EXPECT_EQ(error.rfind(p.string() + ":47: not a JSON object", 0), 0u) << error;
}

TEST(CaptureReader, FieldErrorsNameTheRecord) {
  auto lines = golden_lines();
  lines[2] = R"({"type":"bytes","t_us":1500,"leg":"upstream","dir":"in","b64":"!!!!"})" "\n";
  fs::path p = scratch(join(lines));
  EXPECT_EQ(load_error(p), p.string() + ":3: bytes record: field \"b64\" is not valid base64");

  lines[2] = R"({"type":"command","text":"NOOP"})" "\n";
  p = scratch(join(lines));
  EXPECT_EQ(load_error(p), p.string() + ":3: command record: missing field \"t_us\"");

  lines[2] = R"({"type":"stage","name":"teleport","start_us":0,"duration_us":0,"upstream_us":0,"relay_us":0,"think_us":0})" "\n";
  p = scratch(join(lines));
  EXPECT_EQ(load_error(p), p.string() + ":3: stage record: unknown stage name \"teleport\"");

  lines[2] = R"({"type":"wormhole"})" "\n";
  p = scratch(join(lines));
  EXPECT_EQ(load_error(p), p.string() + ":3: unknown record type \"wormhole\"");

  lines[2] = R"({"type":"worm\nhole"})" "\n";   // stays one line
  p = scratch(join(lines));
  EXPECT_EQ(load_error(p), p.string() + ":3: unknown record type \"worm\\nhole\"");

  lines[2] = R"({"t_us":5})" "\n";
  p = scratch(join(lines));
  EXPECT_EQ(load_error(p), p.string() + ":3: record has no \"type\"");
}

TEST(CaptureReader, StructureErrors) {
  auto lines = golden_lines();
  fs::path p = scratch(join({lines.begin() + 1, lines.end()}));
  EXPECT_EQ(load_error(p), p.string() + ":1: first record is \"stage\", not a header");

  auto twice = lines;
  twice.insert(twice.begin() + 1, lines[0]);
  p = scratch(join(twice));
  EXPECT_EQ(load_error(p), p.string() + ":2: second header record");

  auto after = lines;
  after.push_back(R"({"type":"note","t_us":12000,"text":"late"})" "\n");
  p = scratch(join(after));
  EXPECT_EQ(load_error(p), p.string() + ":47: \"note\" record after the end record");

  p = scratch("");
  EXPECT_EQ(load_error(p), p.string() + ": empty capture, no header record");

  auto not_ours = lines;
  not_ours[0] = R"({"type":"header","format":"something-else","version":1})" "\n";
  p = scratch(join(not_ours));
  EXPECT_EQ(load_error(p), p.string() + ":1: not a mailtap capture (header \"format\" is not \"mailtap-capture\")");
}

TEST(CaptureReader, MissingFileIsAnErrorNotAThrow) {
  fs::path p = fs::path(::testing::TempDir()) / "mailtap_no_such_capture.jsonl";
  std::string error = load_error(p);
  EXPECT_EQ(error.rfind(p.string() + ": cannot open", 0), 0u) << error;
}

TEST(CaptureReader, DirectoryIsAnError) {
  fs::path p = fs::path(::testing::TempDir());
  EXPECT_EQ(load_error(p), p.string() + ": is a directory, not a capture file");
}

TEST(CaptureReader, Base64EdgeCases) {
  auto lines = golden_lines();
  auto bytes_line = [](const std::string& b64) {
    return R"({"type":"bytes","t_us":1,"leg":"client","dir":"in","b64":")" + b64 + "\"}\n";
  };
  lines.insert(lines.begin() + 1, {bytes_line(""), bytes_line("QQ=="), bytes_line("QUI="), bytes_line("QUJD"),
                                   bytes_line("/+8A")});
  capture c = load(scratch(join(lines)));
  auto data = [&](std::size_t i) { return std::get<bytes_event>(c.events.at(i)).data; };
  EXPECT_EQ(data(0), "");
  EXPECT_EQ(data(1), "A");
  EXPECT_EQ(data(2), "AB");
  EXPECT_EQ(data(3), "ABC");
  EXPECT_EQ(data(4), std::string("\xff\xef\x00", 3));

  for (std::string bad : {"QQ=", "Q===", "QQ=A", "QQ==QQ==", "QU I"}) {
    auto broken = golden_lines();
    broken.insert(broken.begin() + 1, bytes_line(bad));
    load_error(scratch(join(broken)));
  }
}

TEST(CaptureReader, InvalidUtf8FromTheWireIsAccepted) {
  // The writer passes 8-bit bytes of commands through unescaped.
  auto lines = golden_lines();
  lines.insert(lines.begin() + 1, "{\"type\":\"command\",\"t_us\":1,\"text\":\"MAIL FROM:<j\xe9r\xf4me@x>\"}\n");
  capture c = load(scratch(join(lines)));
  EXPECT_EQ(std::get<command_event>(c.events.at(0)).text, "MAIL FROM:<j\xe9r\xf4me@x>");
}

TEST(CaptureShow, WireTextIsMadeSafe) {
  // Not UTF-8 -> \xNN in both reports; ESC and C1 controls -> \xNN on the terminal only;
  // well-formed UTF-8 (SMTPUTF8) passes.
  auto lines = golden_lines();
  lines.insert(lines.begin() + 1,
               {"{\"type\":\"command\",\"t_us\":1,\"text\":\"MAIL FROM:<j\xe9r\xf4me@x>\"}\n",
                "{\"type\":\"note\",\"t_us\":2,\"text\":\"esc \\u001b[31m c1 \xc2\x9b end\"}\n",
                "{\"type\":\"reply\",\"t_us\":3,\"leg\":\"upstream\",\"dir\":\"in\",\"code\":250,"
                "\"enhanced\":\"\",\"lines\":[\"gr\xc3\xbc\xc3\x9f dich\"]}\n"});
  capture c = load(scratch(join(lines)));
  std::string text = render_text(c);
  EXPECT_NE(text.find("C> MAIL FROM:<j\\xe9r\\xf4me@x>\n"), std::string::npos) << text;
  EXPECT_NE(text.find("!! esc \\x1b[31m c1 \\xc2\\x9b end\n"), std::string::npos) << text;
  EXPECT_NE(text.find("S< 250 gr\xc3\xbc\xc3\x9f dich\n"), std::string::npos) << text;
  std::string json = render_json(c);
  boost::json::error_code ec;
  auto v = boost::json::parse(json, ec);   // strict parser: rejects invalid UTF-8
  ASSERT_FALSE(ec) << ec.message();
  const auto& events = v.at("events").as_array();
  EXPECT_EQ(events.at(0).at("text").as_string(), "MAIL FROM:<j\\xe9r\\xf4me@x>");
  EXPECT_EQ(events.at(1).at("text").as_string(), "esc \x1b[31m c1 \xc2\x9b end");
  EXPECT_EQ(events.at(2).at("text").as_string(), "250 gr\xc3\xbc\xc3\x9f dich");
}

// A hostile trial: a right-to-left override (U+202E) in an address reversed what followed it on
// the operator's terminal in show, captures list and search. Bidirectional controls print as
// \xNN; other UTF-8 (an en dash, U+2013, beside them) passes.
TEST(CaptureShow, BidirectionalControlsAreEscapedOnTheTerminal) {
  EXPECT_EQ(terminal_safe("a\xe2\x80\xae" "txt.exe b\xe2\x81\xa6" "c\xe2\x80\x8f d\xe2\x80\x93" "e"),
            "a\\xe2\\x80\\xaetxt.exe b\\xe2\\x81\\xa6" "c\\xe2\\x80\\x8f d\xe2\x80\x93" "e");
  // U+061C, the Arabic letter mark, is one too; U+061B (the Arabic semicolon) beside it passes.
  EXPECT_EQ(terminal_safe("x\xd8\x9cy\xd8\x9b"), "x\\xd8\\x9cy\xd8\x9b");
  // So are the line and paragraph separators, U+2028 and U+2029 (a trial: printed raw).
  EXPECT_EQ(terminal_safe("a\xe2\x80\xa8" "b\xe2\x80\xa9" "c"), "a\\xe2\\x80\\xa8" "b\\xe2\\x80\\xa9" "c");
}

// ---------------------------------------------------------------- session outcome

TEST(CaptureReader, SessionOutcomeRules) {
  auto header = golden_lines()[0];
  capture none = load(scratch(header));
  EXPECT_EQ(session_outcome(none), "none");

  capture delivered = load(scratch(header + transaction_line("delivered") + transaction_line("delivered")));
  EXPECT_EQ(session_outcome(delivered), "delivered");

  capture mixed = load(scratch(header + transaction_line("delivered") + transaction_line("tempfailed") +
                               transaction_line("rejected")));
  EXPECT_EQ(session_outcome(mixed), "tempfailed");

  capture aborted = load(scratch(header + transaction_line("aborted") + transaction_line("delivered")));
  EXPECT_EQ(session_outcome(aborted), "aborted");
}

TEST(CaptureShow, SynthesizedReplyIsLabelled) {
  auto lines = golden_lines();
  for (auto& l : lines) {
    auto at = l.find("\"synthesized\":false");
    if (at != std::string::npos) l.replace(at, 19, "\"synthesized\":true");
  }
  capture c = load(scratch(join(lines)));
  EXPECT_NE(render_text(c).find("   final reply  250 2.0.0 Ok: queued as 4ABC (synthesized by relay)\n"),
            std::string::npos)
      << render_text(c);
}

// ---------------------------------------------------------------- issue 14: records that tell the truth

std::size_t find_row(const std::string& text, const std::string& row) {
  std::size_t at = text.find(row);
  EXPECT_NE(at, std::string::npos) << "no \"" << row << "\" in\n" << text;
  return at;
}

// A v1/v2 writer recorded a message the relay answered 250 itself as delivered+synthesized;
// the upgrade makes it blackholed, in the model, the report and --json.
TEST(CaptureReader, OldSynthesizedDeliveryReadsAsBlackholed) {
  auto lines = golden_lines();
  for (auto& l : lines) {
    auto at = l.find("\"synthesized\":false");
    if (at != std::string::npos) l.replace(at, 19, "\"synthesized\":true");
  }
  capture c = load(scratch(join(lines)));
  ASSERT_EQ(c.transactions.size(), 1u);
  EXPECT_EQ(c.transactions[0].result, mailtap::protocol::outcome::blackholed);
  EXPECT_EQ(session_outcome(c), "blackholed");
  std::string text = render_text(c);
  find_row(text, "\noutcome   blackholed\n");
  find_row(text, "\n#1 blackholed\n");
  auto v = boost::json::parse(render_json(c));
  EXPECT_EQ(v.at("outcome"), "blackholed");
  EXPECT_EQ(v.at("transactions").at(0).at("outcome"), "blackholed");
  // Relayed deliveries stay delivered.
  EXPECT_EQ(load(golden_dir / "show_basic.jsonl").transactions[0].result, mailtap::protocol::outcome::delivered);
}

TEST(CaptureReader, BlackholedOutcomeReadsInVersion3) {
  capture c = load(golden_dir / "show_records.jsonl");
  EXPECT_EQ(c.header.version, 3);
  ASSERT_EQ(c.transactions.size(), 1u);
  EXPECT_EQ(c.transactions[0].result, mailtap::protocol::outcome::blackholed);
}

// Every recipient refused reads as the same codes at MAIL would: the v2 capture's two 451s
// (greylisting) then QUIT said aborted; upgraded, it says tempfailed.
TEST(CaptureReader, OldAllRecipientsRefusedReadsByTheirCodes) {
  capture c = load(golden_dir / "show_faults.jsonl");
  ASSERT_EQ(c.transactions.size(), 1u);
  EXPECT_EQ(c.transactions[0].rcpt_codes, (std::vector<int>{451, 451}));
  EXPECT_EQ(c.transactions[0].result, mailtap::protocol::outcome::tempfailed);

  auto header = golden_lines()[0];   // version 1: the same upgrade
  auto refused = [&](const std::string& codes, const std::string& outcome) {
    return R"({"type":"transaction","mail_from":"a@x","rcpt_to":["b@y","c@y"],"rcpt_codes":[)" + codes +
           R"(],"message_id":null,"size":0,"final_reply":null,"outcome":")" + outcome +
           R"(","synthesized":false,"start_us":1,"end_us":2})" + "\n";
  };
  capture v = load(scratch(header + refused("552,550", "aborted") + refused("550,451", "rejected") +
                           refused("250,451", "aborted") + refused("451", "aborted")));
  ASSERT_EQ(v.transactions.size(), 4u);
  EXPECT_EQ(v.transactions[0].result, mailtap::protocol::outcome::rejected);
  EXPECT_EQ(v.transactions[1].result, mailtap::protocol::outcome::tempfailed);
  EXPECT_EQ(v.transactions[2].result, mailtap::protocol::outcome::aborted) << "one recipient was accepted";
  EXPECT_EQ(v.transactions[3].result, mailtap::protocol::outcome::aborted) << "a recipient without its code";
}

// The relay's own upstream commands show as U> lines before the replies they got.
TEST(CaptureShow, RelayOwnCommandsPrecedeTheirReplies) {
  capture c = load(golden_dir / "show_records.jsonl");
  std::string text = render_text(c);
  std::size_t ehlo = find_row(text, " U> EHLO mailtap\n");
  std::size_t reply = find_row(text, " S< 250-mx.example.net\n");
  std::size_t starttls = find_row(text, " U> STARTTLS\n");
  std::size_t ready = find_row(text, " S< 220 2.0.0 Ready to start TLS\n");
  EXPECT_LT(ehlo, reply);
  EXPECT_LT(reply, starttls);
  EXPECT_LT(starttls, ready);
  find_row(text, " U> RSET\n");
  bool saw = false;
  const boost::json::value shown = boost::json::parse(render_json(c));
  for (const auto& ev : shown.at("events").as_array()) {
    if (ev.at("kind") == "command" && ev.at("text") == "STARTTLS") {
      EXPECT_EQ(ev.at("leg"), "upstream");
      EXPECT_EQ(ev.at("dir"), "out");
      saw = true;
    }
    if (ev.at("kind") == "command" && ev.at("text") == "QUIT") {
      EXPECT_EQ(ev.at("leg"), "client");
    }
  }
  EXPECT_TRUE(saw);
}

// A hostile trial: commands a client pipelined behind a DATA dot a delay rule held ("RSET\r\nNOOP\r\n
// QUIT\r\n" in the read that carried the dot), where the destination hung up during the hold, had
// no C> line: the relay never took them as commands, so it wrote no command record for them, only
// their bytes when the session ended (protocol/client_input.cpp record_and_drop_rest), and show
// prints command records. These are the records the relay wrote (its stage records left out): show
// prints the lines at that record's place and time, saying they were never read.
TEST(CaptureShow, LinesTheRelayRecordedButNeverReadAsCommandsArePrinted) {
  const std::string text =
      R"({"type":"header","format":"mailtap-capture","version":5,"session":"20261207-171601-03874c50-000001","seed":13757245211066428519,"master_seed":1,"session_number":1,"client":"127.0.0.1:50126","listen":"127.0.0.1:40317","upstream":"127.0.0.1:34189","started_at":"2026-12-07T17:16:01.676913Z","started_mono_us":52456211602,"relay":"mailtap 0.1.0","bare_eol":"strict"})" "\n"
      R"({"type":"bytes","t_us":1305,"leg":"upstream","dir":"in","latin1":"220 scripted.test ESMTP\r\n"})" "\n"
      R"({"type":"reply","t_us":1305,"leg":"upstream","dir":"in","code":220,"enhanced":"","lines":["scripted.test ESMTP"]})" "\n"
      R"({"type":"bytes","t_us":1305,"leg":"client","dir":"out","latin1":"220 scripted.test ESMTP\r\n"})" "\n"
      R"({"type":"command","t_us":1473,"leg":"client","dir":"in","text":"EHLO client.test"})" "\n"
      R"({"type":"bytes","t_us":1473,"leg":"upstream","dir":"out","latin1":"EHLO client.test\r\n"})" "\n"
      R"({"type":"bytes","t_us":1473,"leg":"client","dir":"in","latin1":"EHLO client.test\r\n"})" "\n"
      R"({"type":"bytes","t_us":1615,"leg":"upstream","dir":"in","latin1":"250-scripted.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"})" "\n"
      R"({"type":"reply","t_us":1615,"leg":"upstream","dir":"in","code":250,"enhanced":"","lines":["scripted.test","PIPELINING","ENHANCEDSTATUSCODES"]})" "\n"
      R"({"type":"bytes","t_us":1615,"leg":"client","dir":"out","latin1":"250-scripted.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"})" "\n"
      R"({"type":"command","t_us":1686,"leg":"client","dir":"in","text":"MAIL FROM:<sender@example.test>"})" "\n"
      R"({"type":"bytes","t_us":1686,"leg":"upstream","dir":"out","latin1":"MAIL FROM:<sender@example.test>\r\n"})" "\n"
      R"({"type":"bytes","t_us":1686,"leg":"client","dir":"in","latin1":"MAIL FROM:<sender@example.test>\r\n"})" "\n"
      R"({"type":"bytes","t_us":1727,"leg":"upstream","dir":"in","latin1":"250 2.1.0 Ok\r\n"})" "\n"
      R"({"type":"reply","t_us":1727,"leg":"upstream","dir":"in","code":250,"enhanced":"2.1.0","lines":["2.1.0 Ok"]})" "\n"
      R"({"type":"bytes","t_us":1727,"leg":"client","dir":"out","latin1":"250 2.1.0 Ok\r\n"})" "\n"
      R"({"type":"command","t_us":1777,"leg":"client","dir":"in","text":"RCPT TO:<rcpt@example.test>"})" "\n"
      R"({"type":"bytes","t_us":1777,"leg":"upstream","dir":"out","latin1":"RCPT TO:<rcpt@example.test>\r\n"})" "\n"
      R"({"type":"bytes","t_us":1777,"leg":"client","dir":"in","latin1":"RCPT TO:<rcpt@example.test>\r\n"})" "\n"
      R"({"type":"bytes","t_us":1818,"leg":"upstream","dir":"in","latin1":"250 2.1.5 Ok\r\n"})" "\n"
      R"({"type":"reply","t_us":1818,"leg":"upstream","dir":"in","code":250,"enhanced":"2.1.5","lines":["2.1.5 Ok"]})" "\n"
      R"({"type":"bytes","t_us":1818,"leg":"client","dir":"out","latin1":"250 2.1.5 Ok\r\n"})" "\n"
      R"({"type":"command","t_us":1858,"leg":"client","dir":"in","text":"DATA"})" "\n"
      R"({"type":"bytes","t_us":1858,"leg":"upstream","dir":"out","latin1":"DATA\r\n"})" "\n"
      R"({"type":"bytes","t_us":1858,"leg":"client","dir":"in","latin1":"DATA\r\n"})" "\n"
      R"({"type":"bytes","t_us":2155,"leg":"upstream","dir":"in","latin1":"354 go\r\n"})" "\n"
      R"({"type":"reply","t_us":2155,"leg":"upstream","dir":"in","code":354,"enhanced":"","lines":["go"]})" "\n"
      R"({"type":"bytes","t_us":2155,"leg":"client","dir":"out","latin1":"354 go\r\n"})" "\n"
      R"({"type":"bytes","t_us":2211,"leg":"client","dir":"in","latin1":"From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: integration test\r\nMessage-ID: <x@example.test>\r\n\r\nhello\r\n.\r\n"})" "\n"
      R"({"type":"bytes","t_us":2211,"leg":"upstream","dir":"out","latin1":"From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: integration test\r\nMessage-ID: <x@example.test>\r\n\r\nhello\r\n"})" "\n"
      R"({"type":"note","t_us":302897,"text":"upstream_closed: upstream closed the connection"})" "\n"
      R"({"type":"fault","t_us":302897,"rule":"hold-data_end","fault_type":"delay","decision":"delay","phase":"data_end","planned_delay_us":2000000,"actual_delay_us":300592,"detail":"end of data held; the upstream was lost before it was forwarded"})" "\n"
      R"({"type":"bytes","t_us":302897,"leg":"client","dir":"out","latin1":"451 4.4.2 mailtap lost the upstream connection during message transfer\r\n"})" "\n"
      R"({"type":"reply","t_us":302897,"leg":"client","dir":"out","code":451,"enhanced":"4.4.2","lines":["4.4.2 mailtap lost the upstream connection during message transfer"]})" "\n"
      R"({"type":"transaction","mail_from":"sender@example.test","rcpt_to":["rcpt@example.test"],"rcpt_codes":[250],"message_id":"<x@example.test>","size":116,"final_reply":{"code":451,"enhanced":"4.4.2","text":"mailtap lost the upstream connection during message transfer"},"outcome":"tempfailed","synthesized":true,"without_mail":false,"start_us":1686,"end_us":302897})" "\n"
      R"({"type":"bytes","t_us":302897,"leg":"client","dir":"out","latin1":"421 4.4.2 mailtap closing: upstream connection is closed\r\n"})" "\n"
      R"({"type":"reply","t_us":302897,"leg":"client","dir":"out","code":421,"enhanced":"4.4.2","lines":["4.4.2 mailtap closing: upstream connection is closed"]})" "\n"
      R"({"type":"bytes","t_us":302897,"leg":"client","dir":"in","latin1":"RSET\r\nNOOP\r\nQUIT\r\n"})" "\n"
      R"({"type":"end","t_us":302897,"reason":"upstream_closed","detail":"upstream closed the connection","ended_at":"2026-12-07T17:16:01.979810Z","complete":true,"dropped_records":0})" "\n";
  const std::string shown = render_text(load(scratch(text)));
  const std::size_t closing = find_row(shown, " R> 421 4.4.2 mailtap closing: upstream connection is closed\n");
  const std::size_t rset = find_row(shown, "+  302.897 ms  C> RSET\n");
  const std::size_t noop = find_row(shown, "+  302.897 ms  C> NOOP\n");
  const std::size_t quit = find_row(shown, "+  302.897 ms  C> QUIT\n");
  const std::size_t why = find_row(shown, "[3 lines recorded, never read by the relay as commands]\n");
  EXPECT_LT(closing, rset);   // in the order the capture gives: its bytes record came last
  EXPECT_LT(rset, noop);
  EXPECT_LT(noop, quit);
  EXPECT_LT(quit, why);
  // The lines the relay did read, each once, and nothing of the message.
  EXPECT_EQ(shown.find("C> DATA"), shown.rfind("C> DATA"));
  EXPECT_EQ(shown.find("C> From:"), std::string::npos) << shown;
  EXPECT_EQ(shown.find("C> hello"), std::string::npos) << shown;
}

// A capture from before normalize_to was recorded, under bare_eol normalize: the relay then read
// a bare LF as a line's end, so "\n.\n" ended the message, and what followed was commands (here
// QUIT, read, and NOOP after it, never read). show cut the client's bytes in today's normalize,
// where only CRLF.CRLF ends a message: the message never ended and NOOP was not printed. It cuts
// them as replay does now (captures/client_steps.hpp message_framing).
TEST(CaptureShow, AnOlderNormalizeCapturesUnreadLinesAfterABareLfDotArePrinted) {
  const std::string text =
      R"({"type":"header","format":"mailtap-capture","version":5,"session":"20261208-100000-00000000-000001","seed":1,"client":"127.0.0.1:50000","listen":"127.0.0.1:2525","upstream":"127.0.0.1:25","started_at":"2026-12-08T10:00:00.000000Z","started_mono_us":1000,"relay":"mailtap 0.1.0","bare_eol":"normalize"})" "\n"
      R"({"type":"bytes","t_us":100,"leg":"upstream","dir":"in","latin1":"220 mx.test ESMTP\r\n"})" "\n"
      R"({"type":"reply","t_us":100,"leg":"upstream","dir":"in","code":220,"enhanced":"","lines":["mx.test ESMTP"]})" "\n"
      R"({"type":"bytes","t_us":100,"leg":"client","dir":"out","latin1":"220 mx.test ESMTP\r\n"})" "\n"
      R"({"type":"command","t_us":200,"leg":"client","dir":"in","text":"HELO client.test"})" "\n"
      R"({"type":"bytes","t_us":200,"leg":"upstream","dir":"out","latin1":"HELO client.test\r\n"})" "\n"
      R"({"type":"bytes","t_us":200,"leg":"client","dir":"in","latin1":"HELO client.test\r\n"})" "\n"
      R"({"type":"bytes","t_us":300,"leg":"upstream","dir":"in","latin1":"250 mx.test\r\n"})" "\n"
      R"({"type":"reply","t_us":300,"leg":"upstream","dir":"in","code":250,"enhanced":"","lines":["mx.test"]})" "\n"
      R"({"type":"bytes","t_us":300,"leg":"client","dir":"out","latin1":"250 mx.test\r\n"})" "\n"
      R"({"type":"command","t_us":400,"leg":"client","dir":"in","text":"DATA"})" "\n"
      R"({"type":"bytes","t_us":400,"leg":"upstream","dir":"out","latin1":"DATA\r\n"})" "\n"
      R"({"type":"bytes","t_us":400,"leg":"client","dir":"in","latin1":"DATA\r\n"})" "\n"
      R"({"type":"bytes","t_us":500,"leg":"upstream","dir":"in","latin1":"354 go\r\n"})" "\n"
      R"({"type":"reply","t_us":500,"leg":"upstream","dir":"in","code":354,"enhanced":"","lines":["go"]})" "\n"
      R"({"type":"bytes","t_us":500,"leg":"client","dir":"out","latin1":"354 go\r\n"})" "\n"
      R"({"type":"bytes","t_us":600,"leg":"client","dir":"in","latin1":"hi\n.\nQUIT\r\nNOOP\r\n"})" "\n"
      R"({"type":"bytes","t_us":600,"leg":"upstream","dir":"out","latin1":"hi\r\n.\r\n"})" "\n"
      R"({"type":"bytes","t_us":700,"leg":"upstream","dir":"in","latin1":"250 2.0.0 queued\r\n"})" "\n"
      R"({"type":"reply","t_us":700,"leg":"upstream","dir":"in","code":250,"enhanced":"2.0.0","lines":["2.0.0 queued"]})" "\n"
      R"({"type":"bytes","t_us":700,"leg":"client","dir":"out","latin1":"250 2.0.0 queued\r\n"})" "\n"
      R"({"type":"command","t_us":700,"leg":"client","dir":"in","text":"QUIT"})" "\n"
      R"({"type":"bytes","t_us":700,"leg":"upstream","dir":"out","latin1":"QUIT\r\n"})" "\n"
      R"({"type":"bytes","t_us":800,"leg":"upstream","dir":"in","latin1":"221 bye\r\n"})" "\n"
      R"({"type":"reply","t_us":800,"leg":"upstream","dir":"in","code":221,"enhanced":"","lines":["bye"]})" "\n"
      R"({"type":"bytes","t_us":800,"leg":"client","dir":"out","latin1":"221 bye\r\n"})" "\n"
      R"({"type":"end","t_us":900,"reason":"client_quit","detail":"","ended_at":"2026-12-08T10:00:00.001000Z","complete":true,"dropped_records":0})" "\n";
  const std::string shown = render_text(load(scratch(text)));
  const std::size_t noop = find_row(shown, "+    0.600 ms  C> NOOP\n");
  const std::size_t why = find_row(shown, "[1 line recorded, never read by the relay as commands]\n");
  EXPECT_LT(noop, why);
  EXPECT_EQ(shown.find("C> QUIT"), shown.rfind("C> QUIT")) << shown;   // read: its command record's row only
  EXPECT_EQ(shown.find("C> hi"), std::string::npos) << shown;
}

TEST(CaptureReader, OldCommandsAreTheClients) {
  capture c = load(golden_dir / "show_faults.jsonl");
  std::size_t commands = 0;
  for (const auto& e : c.events)
    if (const auto* cmd = std::get_if<command_event>(&e)) {
      ++commands;
      EXPECT_EQ(cmd->leg, mailtap::protocol::leg::client);
      EXPECT_EQ(cmd->dir, mailtap::protocol::direction::in);
    }
  EXPECT_GT(commands, 0u);
}

// The waterfall: tls rows named by leg, rows by start time, and the think time drawn.
TEST(CaptureShow, WaterfallLabelsTlsByLegInTimeOrderWithThinkTime) {
  capture c = load(golden_dir / "show_records.jsonl");
  std::string text = render_text(c);
  std::size_t connect = find_row(text, "\nconnect ");
  std::size_t client_tls = find_row(text, "\ntls client ");
  std::size_t banner = find_row(text, "\nbanner ");
  std::size_t upstream_tls = find_row(text, "\ntls upstream ");
  std::size_t ehlo = find_row(text, "\nehlo ");
  EXPECT_LT(connect, client_tls) << "the file has the client's handshake first; it started later";
  EXPECT_LT(client_tls, banner);
  EXPECT_LT(banner, upstream_tls);
  EXPECT_LT(upstream_tls, ehlo);
  EXPECT_EQ(text.find("\ntls  "), std::string::npos) << "a tls row without its leg";
  find_row(text, "bar: - think, # upstream, = relay, . sender");
  // EHLO came 4 ms after the banner went out (session 13.4 ms over 40 columns): about 12
  // columns of think time end where its bar begins.
  std::size_t row_end = text.find('\n', ehlo + 1);
  std::string row = text.substr(ehlo + 1, row_end - ehlo - 1);
  std::string bar = row.substr(row.find('|') + 1);
  EXPECT_NE(bar.find("-----------#"), std::string::npos) << row;
  auto v = boost::json::parse(render_json(c));
  const auto& stages = v.at("stages").as_array();
  EXPECT_EQ(stages.at(1).at("name"), "tls");
  EXPECT_EQ(stages.at(1).at("leg"), "client");
  EXPECT_EQ(stages.at(3).at("leg"), "upstream");
  EXPECT_TRUE(stages.at(0).at("leg").is_null());
  for (std::size_t i = 1; i < stages.size(); ++i)
    EXPECT_LE(stages.at(i - 1).at("start_us").to_number<std::uint64_t>(),
              stages.at(i).at("start_us").to_number<std::uint64_t>());
}

// Issue 14 item 13: a split-dot session's body is the transaction's size, not 0.
TEST(CaptureShow, WithheldDotMessageShowsItsBody) {
  auto header = golden_lines()[0];
  std::string body = R"({"type":"reply","t_us":10,"leg":"upstream","dir":"in","code":354,"enhanced":"","lines":["go"]})"
                     "\n"
                     R"({"type":"bytes","t_us":20,"leg":"client","dir":"in","b64":"Ym9keQ0KLg=="})"
                     "\n"
                     R"({"type":"bytes","t_us":30,"leg":"client","dir":"in","b64":"DQo="})"
                     "\n"
                     R"({"type":"stage","name":"body","start_us":10,"duration_us":20,"upstream_us":0,"relay_us":0,"client_us":20,"think_us":0})"
                     "\n"
                     R"({"type":"stage","name":"data_end","start_us":30,"duration_us":8000000,"upstream_us":0,"relay_us":8000000,"client_us":0,"think_us":0})"
                     "\n"
                     R"({"type":"transaction","mail_from":"a@x","rcpt_to":["b@y"],"rcpt_codes":[250],"message_id":null,"size":6,"final_reply":null,"outcome":"aborted","synthesized":false,"start_us":5,"end_us":8000030})"
                     "\n";
  capture c = load(scratch(header + body));
  std::string text = render_text(c);
  find_row(text, "[message body: 6 bytes]");
  find_row(text, "\ndata_end ");
}

// A QA trial: a BDAT sent without MAIL was recorded with mail_from "", and show printed
// "from <>", the null sender of a bounce. Its record says without_mail (added within version
// 5), and show prints "(no MAIL)"; a capture without the field (written before) reads false,
// and a real MAIL FROM:<> still reads "<>".
TEST(CaptureShow, ATransactionWithoutMailIsNoNullSender) {
  const std::string original = slurp(golden_dir / "show_text.jsonl");
  const std::string sender = R"("mail_from":"sender@example.test")";
  const std::string synthesized = R"("synthesized":false,)";
  ASSERT_NE(original.find(sender), std::string::npos);
  ASSERT_NE(original.find(synthesized), std::string::npos);
  std::string bounce = original, no_mail = original;
  bounce.replace(bounce.find(sender), sender.size(), R"("mail_from":"")");
  no_mail.replace(no_mail.find(sender), sender.size(), R"("mail_from":"")");
  no_mail.replace(no_mail.find(synthesized), synthesized.size(), R"("synthesized":false,"without_mail":true,)");

  capture c = load(scratch(no_mail));
  ASSERT_EQ(c.transactions.size(), 1u);
  EXPECT_TRUE(c.transactions[0].without_mail);
  const std::string text = render_text(c);
  find_row(text, "\n   from         (no MAIL)\n");
  EXPECT_EQ(text.find("<>"), std::string::npos) << text;
  auto v = boost::json::parse(render_json(c));
  EXPECT_EQ(v.at("transactions").at(0).at("without_mail"), true);
  EXPECT_EQ(v.at("transactions").at(0).at("mail_from"), "");

  capture b = load(golden_dir / "show_text.jsonl");
  EXPECT_FALSE(b.transactions[0].without_mail);   // absent: false
  b = load(scratch(bounce));
  EXPECT_FALSE(b.transactions[0].without_mail);
  find_row(render_text(b), "\n   from         <>\n");
  EXPECT_EQ(boost::json::parse(render_json(b)).at("transactions").at(0).at("without_mail"), false);
}

// ---------------------------------------------------------------- the message body marker

namespace {

// A session recorded through the relay with a delay fault at MAIL (`delay = "1500ms"`) and swaks
// pipelining MAIL, RCPT and DATA: the destination's 354 is recorded at 2.566 ms, the client gets
// it (with the held 250s) at 1502.868 ms, and its body is recorded at 1503.710 ms. (Trimmed: no
// EHLO, no stages.)
std::string delayed_mail_capture() {
  return R"({"type":"header","format":"mailtap-capture","version":5,"session":"20261207-131735-27628cab-000001","seed":1,"client":"127.0.0.1:47860","listen":"127.0.0.1:39179","upstream":"builtin","started_at":"2026-12-07T13:17:35.986965Z","started_mono_us":38157202789,"relay":"mailtap 0.1.0","bare_eol":"strict"})"
         "\n"
         R"({"type":"bytes","t_us":571,"leg":"upstream","dir":"in","latin1":"220 sink ESMTP\r\n"})"
         "\n"
         R"({"type":"reply","t_us":571,"leg":"upstream","dir":"in","code":220,"enhanced":"","lines":["sink ESMTP"]})"
         "\n"
         R"({"type":"bytes","t_us":571,"leg":"client","dir":"out","latin1":"220 sink ESMTP\r\n"})"
         "\n"
         R"({"type":"command","t_us":2512,"leg":"client","dir":"in","text":"MAIL FROM:<root@vm>"})"
         "\n"
         R"({"type":"command","t_us":2512,"leg":"client","dir":"in","text":"RCPT TO:<a@example.com>"})"
         "\n"
         R"({"type":"command","t_us":2512,"leg":"client","dir":"in","text":"DATA"})"
         "\n"
         R"({"type":"bytes","t_us":2512,"leg":"upstream","dir":"out","latin1":"MAIL FROM:<root@vm>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n"})"
         "\n"
         R"({"type":"bytes","t_us":2512,"leg":"client","dir":"in","latin1":"MAIL FROM:<root@vm>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n"})"
         "\n"
         R"({"type":"bytes","t_us":2566,"leg":"upstream","dir":"in","latin1":"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data\r\n"})"
         "\n"
         R"({"type":"reply","t_us":2566,"leg":"upstream","dir":"in","code":250,"enhanced":"2.1.0","lines":["2.1.0 Ok"]})"
         "\n"
         R"({"type":"reply","t_us":2566,"leg":"upstream","dir":"in","code":250,"enhanced":"2.1.5","lines":["2.1.5 Ok"]})"
         "\n"
         R"({"type":"reply","t_us":2566,"leg":"upstream","dir":"in","code":354,"enhanced":"","lines":["End data"]})"
         "\n"
         R"({"type":"fault","t_us":1502868,"rule":"slow-mail","fault_type":"delay","decision":"delay","phase":"mail","planned_delay_us":1500000,"actual_delay_us":1500302,"detail":"reply 250 held"})"
         "\n"
         R"({"type":"bytes","t_us":1502868,"leg":"client","dir":"out","latin1":"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data\r\n"})"
         "\n"
         R"({"type":"bytes","t_us":1503710,"leg":"client","dir":"in","latin1":"Subject: x\r\n\r\nbody\r\n.\r\n"})"
         "\n"
         R"({"type":"bytes","t_us":1503710,"leg":"upstream","dir":"out","latin1":"Subject: x\r\n\r\nbody\r\n.\r\n"})"
         "\n"
         R"({"type":"bytes","t_us":1503855,"leg":"upstream","dir":"in","latin1":"250 2.0.0 Ok: queued as 1000001\r\n"})"
         "\n"
         R"({"type":"reply","t_us":1503855,"leg":"upstream","dir":"in","code":250,"enhanced":"2.0.0","lines":["2.0.0 Ok: queued as 1000001"]})"
         "\n"
         R"({"type":"bytes","t_us":1503855,"leg":"client","dir":"out","latin1":"250 2.0.0 Ok: queued as 1000001\r\n"})"
         "\n"
         R"({"type":"transaction","mail_from":"root@vm","rcpt_to":["a@example.com"],"rcpt_codes":[250],"message_id":null,"size":20,"final_reply":{"code":250,"enhanced":"2.0.0","text":"Ok: queued as 1000001"},"outcome":"delivered","synthesized":false,"start_us":2512,"end_us":1503855})"
         "\n"
         R"({"type":"end","t_us":1504304,"reason":"client_quit","detail":"","ended_at":"2026-12-07T13:17:37.491269Z","complete":true,"dropped_records":0})"
         "\n";
}

}  // namespace

// A replay/diagnose trial with real Postfix: with a delay fault at MAIL, `show` printed the
// `[message body]` marker under the destination's 354, 1.5 s before the client was even let
// send the body (the marker followed the 354 by record order). It is at the time the body was
// recorded: after the fault's row, with that time, before the destination's 250 to its end.
TEST(CaptureShow, TheMessageBodyMarkerIsAtTheTimeTheBodyWasRecorded) {
  const std::string text = render_text(load(scratch(delayed_mail_capture())));
  const std::size_t go = find_row(text, "+    2.566 ms  S< 354 End data\n");
  const std::size_t fault = find_row(text, "+ 1502.868 ms  F! slow-mail (delay)");
  const std::size_t marker = find_row(text, "\n+ 1503.710 ms     [message body: 20 bytes]\n");
  const std::size_t queued = find_row(text, "+ 1503.855 ms  S< 250 2.0.0 Ok: queued as 1000001\n");
  EXPECT_LT(go, fault);
  EXPECT_LT(fault, marker);
  EXPECT_LT(marker, queued);
  EXPECT_EQ(text.find("[message body"), text.rfind("[message body")) << "one marker\n" << text;
}

// Where nothing was printed between the 354 and the body (as in nearly every session), the
// marker stays right under the 354, without a time of its own, as the golden files pin it.
TEST(CaptureShow, AMessageBodyMarkerRightUnderItsReplyHasNoTimeOfItsOwn) {
  std::string capture = delayed_mail_capture();
  const std::string fault_record = capture.substr(capture.find(R"({"type":"fault")"));
  capture.erase(capture.find(R"({"type":"fault")"), fault_record.find('\n') + 1);
  const std::string text = render_text(load(scratch(capture)));
  find_row(text, "+    2.566 ms  S< 354 End data\n                  [message body: 20 bytes]\n");
}
