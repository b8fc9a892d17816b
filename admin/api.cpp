// The admin API's routes and handlers (admin/api.hpp).
#include "admin/api.hpp"

#include <spdlog/spdlog.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "admin/auth.hpp"
#include "admin/fault_input.hpp"
#include "admin/metrics_page.hpp"
#include "admin/ui_assets.hpp"
#include "captures/reader.hpp"
#include "captures/show.hpp"
#include "protocol/observer.hpp"
#include "protocol/terminal_text.hpp"

namespace mailtap::admin {

namespace json = boost::json;

namespace {

// A raw capture served at most this large; a larger one is read from the captures
// directory (the response is built in memory).
constexpr std::uintmax_t max_raw_capture_bytes = 64ull * 1024 * 1024;

response json_of(int status, const json::value& v) { return json_response(status, json::serialize(v)); }

// POST /api/v1/scenarios opens its path as the relay does (open(2)): a relative one from the
// relay's working directory, which the caller (a CLI in another directory, a browser) may not
// know. A relative path that is not there there says so; "" otherwise.
std::string relative_path_note(const std::string& file) {
  const std::filesystem::path p(file);
  std::error_code ec;
  if (p.empty() || p.is_absolute() || std::filesystem::exists(p, ec)) return "";
  const std::filesystem::path cwd = std::filesystem::current_path(ec);
  return " (a relative path is taken from the relay's working directory, " +
         (ec ? std::string("unknown") : protocol::terminal_safe(cwd.native())) + ")";
}

// A path is handed to open(2), which reads it up to its first NUL: "/tmp/x/sc.toml\0junk" loaded
// sc.toml while the reply and the log named the whole string. No other control character has
// a place in a path typed into a request either, and one would break the log line. So a path
// holding one is refused: its first (C0, DEL, or a C1 control as UTF-8 encodes it), as "U+0000
// (NUL) at byte 15"; "" when there is none.
std::string control_character_in(std::string_view text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == 0xc2 && i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xe0) == 0x80)
      c = static_cast<unsigned char>(text[i + 1]);   // U+0080..U+009F
    else if (c >= 0x20 && c != 0x7f)
      continue;
    char code[16];
    std::snprintf(code, sizeof code, "U+%04X", c);
    return std::string(code) + (c == 0 ? " (NUL)" : "") + " at byte " + std::to_string(i + 1);
  }
  return "";
}

// The body's format from its Content-Type; nullopt for one the route does not take.
std::optional<body_format> format_of(const request& req) {
  const auto& t = req.content_type;
  if (t == "application/json") return body_format::json;
  if (t == "application/toml" || t == "text/toml" || t == "text/x-toml") return body_format::toml;
  return std::nullopt;
}

response unsupported_media(const request& req, std::string_view wanted) {
  return error_response(415, "Content-Type '" + (req.content_type.empty() ? std::string("none") : req.content_type) +
                                 "' not accepted: send " + std::string(wanted));
}

// A non-negative integer query parameter within [0, max]; false and `problem` otherwise.
bool count_param(const std::map<std::string, std::string>& q, const char* name, std::size_t max, std::size_t& out,
                 std::string& problem) {
  auto it = q.find(name);
  if (it == q.end()) return true;
  std::size_t v = 0;
  const auto& s = it->second;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v > max) {
    problem = std::string("query '") + name + "': expected an integer from 0 to " + std::to_string(max) + ", got '" +
              s.substr(0, 40) + "'";
    return false;
  }
  out = v;
  return true;
}

json::object row_json(const session_row& r) {
  json::object o;
  o["id"] = r.id;
  o["started_at"] = r.started_at;
  o["client"] = r.client;
  o["upstream"] = r.upstream;
  o["outcome"] = r.outcome;
  o["end_reason"] = r.end_reason.empty() ? json::value(nullptr) : json::value(r.end_reason);
  o["in_progress"] = r.in_progress;
  o["complete"] = r.complete;
  o["transactions"] = r.transactions;
  o["duration_us"] = r.duration_us;
  o["size_bytes"] = r.size_bytes;
  o["sender"] = r.sender ? json::value(captures::utf8_safe(*r.sender)) : json::value(nullptr);
  o["without_mail"] = r.without_mail;
  json::array recipients;
  for (const auto& rcpt : r.recipients) recipients.emplace_back(captures::utf8_safe(rcpt));
  o["recipients"] = std::move(recipients);
  o["recipients_total"] = r.recipients_total;
  o["faults"] = r.faults;
  json::array rules;
  for (const auto& rule : r.fault_rules) rules.emplace_back(captures::utf8_safe(rule));
  o["fault_rules"] = std::move(rules);
  if (!r.error.empty()) o["error"] = r.error;
  return o;
}

json::array names_of(const std::vector<policies::rule>& rules) {
  json::array a;
  for (const auto& r : rules) a.emplace_back(r.name);
  return a;
}

// The 409 of a rule named as one in force: a duplicate within the request keeps the
// loader's message (400), naming both lines.
std::string already_armed(const std::string& name) {
  const std::string n = name.substr(0, 128);
  return "rule '" + n + "' is already armed (remove it first: DELETE /api/v1/faults/" + n + ", or mailtap faults remove " +
         n + ")";
}

void log_mutation(const request& req, const std::string& what) {
  spdlog::info("admin: {} {} from {}: {}", req.method, req.target, req.peer.empty() ? "?" : req.peer, what);
}

bool known_outcome(std::string_view outcome) {
  return std::find(std::begin(session_outcomes), std::end(session_outcomes), outcome) != std::end(session_outcomes);
}

}  // namespace

std::string host_name_of(std::string_view host) {
  std::string name;
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    name = std::string(host.substr(0, close == std::string_view::npos ? host.size() : close + 1));
  } else {
    name = std::string(host.substr(0, host.find(':')));
  }
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return name;
}

std::set<std::string> loopback_host_allowlist(const std::string& bind_host) {
  std::set<std::string> hosts = {"localhost", "127.0.0.1", "[::1]"};
  std::string h = bind_host;
  if (h.find(':') != std::string::npos && (h.empty() || h.front() != '[')) h = "[" + h + "]";
  hosts.insert(host_name_of(h));
  return hosts;
}

api::api(api_context ctx) : ctx_(std::move(ctx)) {
  router_.add("GET", "/healthz", [](const call&) { return json_of(200, json::object{{"status", "ok"}}); });
  router_.add("GET", "/readyz", [this](const call&) {
    if (ctx_.ready && ctx_.ready()) return json_of(200, json::object{{"status", "ready"}});
    return error_response(503, "not ready: the relay is not listening or is draining");
  });
  router_.add("GET", "/metrics", [this](const call&) {
    metrics_sources s;
    s.relay = ctx_.metrics;
    s.captures = ctx_.capture_counters;
    if (ctx_.faults) {
      s.faults = ctx_.faults->injected_since_start();
      s.fault_decide_errors = ctx_.faults->decide_errors();
    }
    response r;
    r.content_type = metrics_content_type;
    r.body = render_metrics(s);
    return r;
  });
  router_.add("GET", "/api/v1/openapi.json", [](const call&) {
    response r;
    r.body = std::string(openapi_document());
    return r;
  });
  router_.add("GET", events_path, [](const call&) {
    auto r = error_response(426, "a WebSocket endpoint: connect with Upgrade: websocket");
    r.headers.emplace_back("Upgrade", "websocket");
    return r;
  });
  add_session_routes();
  add_fault_routes();
}

void api::add_session_routes() {
  router_.add("GET", "/api/v1/sessions", [this](const call& c) {
    session_filter f;
    std::string problem;
    if (!count_param(c.query, "limit", max_page_rows, f.limit, problem) ||
        !count_param(c.query, "offset", std::size_t{1} << 40, f.offset, problem))
      return error_response(400, problem);
    for (const auto& [key, value] : c.query) {
      if (key == "outcome") {
        if (!known_outcome(value))
          return error_response(400, "query 'outcome': unknown outcome '" + value.substr(0, 40) + "': expected " +
                                         session_outcomes_text());
        f.outcome = value;
      } else if (key == "client") {
        f.client = value;
      } else if (key != "limit" && key != "offset") {
        return error_response(400, "unknown query parameter '" + key.substr(0, 40) + "'");
      }
    }
    auto page = ctx_.sessions->list(f);
    json::array rows;
    for (const auto& r : page.rows) rows.emplace_back(row_json(r));
    return json_of(200, json::object{{"sessions", std::move(rows)},
                                     {"limit", f.limit},
                                     {"offset", f.offset},
                                     {"more", page.more},
                                     {"scan_limited", page.scan_limited}});
  });
  router_.add("GET", "/api/v1/sessions/{id}", [this](const call& c) {
    const auto& id = c.params.at("id");
    auto path = ctx_.sessions->capture_path(id);
    if (!path) return error_response(404, "no session '" + id.substr(0, 128) + "'");
    const bool open_now = ctx_.sessions->in_progress(id);   // before the read: see session_catalog.cpp
    std::string error;
    bool header_pending = false;
    auto cap = read_session_capture(*path, open_now, header_pending, error);
    if (header_pending) {   // a session just opened: nothing recorded yet
      captures::capture opening;
      opening.header.session = id;
      cap = std::move(opening);
    }
    if (!cap) return error_response(422, error);
    if (cap->end) return json_response(200, captures::render_json(*cap));
    // No end record: in progress (the relay has it open: its outcome as the list gives it, the
    // transaction it is inside not counted yet) or cut short (show's outcome); which, it says.
    json::value doc = json::parse(captures::render_json(*cap));
    if (open_now) doc.as_object()["outcome"] = captures::session_outcome(*cap, true);
    doc.as_object()["in_progress"] = open_now;
    return json_of(200, doc);
  });
  router_.add("GET", "/api/v1/sessions/{id}/raw", [this](const call& c) {
    const auto& id = c.params.at("id");
    auto path = ctx_.sessions->capture_path(id);
    if (!path) return error_response(404, "no session '" + id.substr(0, 128) + "'");
    std::error_code ec;
    auto size = std::filesystem::file_size(*path, ec);
    if (!ec && size > max_raw_capture_bytes)
      return error_response(413, "capture larger than 64 MiB: read " + path->string() + " instead");
    std::ifstream in(*path, std::ios::binary);
    if (!in) return error_response(500, "cannot read " + path->filename().string());
    response r;
    r.content_type = "application/x-ndjson";
    r.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + id + ".jsonl\"");
    // RFC 9110 9.3.2: HEAD gets GET's header, its length from the file's size; the file is left unread.
    if (c.req.method == "HEAD" && !ec) {
      r.head_length = size;
      return r;
    }
    std::ostringstream body;
    body << in.rdbuf();
    if (!in && !in.eof()) return error_response(500, "cannot read " + path->filename().string());
    r.body = body.str();
    return r;
  });
}

void api::add_fault_routes() {
  router_.add("GET", "/api/v1/faults", [this](const call&) {
    json::array rules;
    for (const auto& s : ctx_.faults->list()) {
      json::array phases;
      for (auto p : s.phases) phases.emplace_back(protocol::to_string(p));
      rules.emplace_back(json::object{{"name", s.name},
                                      {"type", s.type},
                                      {"phases", std::move(phases)},
                                      {"injected", s.injected},
                                      {"max_count", s.max_count ? json::value(*s.max_count) : json::value(nullptr)},
                                      {"active", s.active},
                                      {"source", s.added_at_runtime ? "api" : "config"}});
    }
    return json_of(200, json::object{{"faults", std::move(rules)}});
  });
  router_.add("POST", "/api/v1/faults", [this](const call& c) {
    auto format = format_of(c.req);
    if (!format) return unsupported_media(c.req, "application/json or application/toml");
    auto loaded = rules_from_body(c.req.body, *format);
    if (!loaded.ok()) return error_response(400, loaded.error);
    auto names = names_of(loaded.rules);
    for (auto& r : loaded.rules) r.added_at_runtime = true;
    std::string armed;
    if (auto problem = ctx_.faults->add_all(std::move(loaded.rules), &armed))
      return error_response(409, armed.empty() ? *problem : already_armed(armed));
    log_mutation(c.req, "added fault rule(s) " + json::serialize(names));
    return json_of(201, json::object{{"added", std::move(names)}});
  });
  router_.add("GET", "/api/v1/faults/counters", [this](const call&) {
    json::array counters;
    for (const auto& f : ctx_.faults->counters())
      counters.emplace_back(json::object{{"rule", f.rule}, {"type", f.type}, {"count", f.count}});
    return json_of(200, json::object{{"counters", std::move(counters)}, {"decide_errors", ctx_.faults->decide_errors()}});
  });
  router_.add("POST", "/api/v1/faults/reset", [this](const call& c) {
    // It takes no body, so any is ignored: clients send none, or urllib's empty form. A form
    // posted from a page elsewhere is refused by its Origin (api::handle).
    const auto rules = ctx_.faults->list().size();
    ctx_.faults->reset();
    log_mutation(c.req, "reset: removed " + std::to_string(rules) + " fault rule(s) with their state and counts");
    return json_of(200, json::object{{"reset", true}, {"removed", rules}});
  });
  router_.add("DELETE", "/api/v1/faults/{name}", [this](const call& c) {
    const auto& name = c.params.at("name");
    if (!ctx_.faults->remove(name)) return error_response(404, "no fault rule named '" + name.substr(0, 128) + "'");
    log_mutation(c.req, "removed fault rule '" + name + "'");
    return json_of(200, json::object{{"removed", name}});
  });
  router_.add("POST", "/api/v1/scenarios", [this](const call& c) {
    if (format_of(c.req) != body_format::json) return unsupported_media(c.req, "application/json: {\"path\": FILE}");
    boost::system::error_code ec;
    auto doc = json::parse(c.req.body, ec);
    if (ec) return error_response(400, "request (JSON): not JSON: " + ec.message());
    const json::value* path = doc.is_object() ? doc.get_object().if_contains("path") : nullptr;
    if (!path || !path->is_string() || doc.get_object().size() != 1)
      return error_response(400, "request (JSON): expected {\"path\": \"FILE\"}, the scenario file to load");
    const std::string file(path->get_string());
    if (auto control = control_character_in(file); !control.empty())
      return error_response(400, "request (JSON): key 'path': a control character, " + control +
                                     ": a scenario file's path cannot hold one");
    auto loaded = policies::load_scenario(file);
    if (!loaded.ok()) return error_response(400, loaded.error + relative_path_note(file));
    auto names = names_of(loaded.rules);
    for (auto& r : loaded.rules) r.added_at_runtime = true;
    std::string armed;
    if (auto problem = ctx_.faults->add_all(std::move(loaded.rules), &armed))
      return error_response(409, file + ": " + (armed.empty() ? *problem : already_armed(armed)));
    log_mutation(c.req, "loaded scenario " + file + ": fault rule(s) " + json::serialize(names));
    return json_of(201, json::object{{"added", std::move(names)}, {"file", file}});
  });
}

bool api::host_allowed(std::string_view host, const request& req) const {
  const std::string name = host_name_of(host);
  if (ctx_.allowed_hosts.contains(name)) return true;
  return ctx_.allow_local_address && !name.empty() && name == req.local;
}

std::optional<response> api::admit_events(const request& req) const {
  if (!host_allowed(req.host, req)) return error_response(403, "Host '" + req.host.substr(0, 100) + "' not allowed");
  if (!ctx_.token.empty()) {
    // A browser's WebSocket cannot send Authorization: it offers the token as a subprotocol,
    // or puts it in the query (admin/README.md, "Authentication").
    std::string token = bearer_token_of(req.authorization);
    if (token.empty()) token = subprotocol_token_of(req.websocket_protocols);
    if (parsed_target target; token.empty() && parse_target(req.target, target))
      if (auto it = target.query.find("token"); it != target.query.end()) token = it->second;
    if (!token_equal(token, ctx_.token)) return unauthorized(!token.empty());
  }
  // A browser always sends Origin on a WebSocket upgrade (RFC 6455 4.1): only a page served
  // from the admin API's own names may subscribe. Other clients send none.
  if (!origin_allowed(req)) return error_response(403, "Origin '" + req.origin.substr(0, 100) + "' not allowed");
  return std::nullopt;
}

bool api::origin_allowed(const request& req) const {
  if (req.origin.empty()) return true;
  std::string_view o = req.origin;
  const auto scheme = o.find("://");
  return scheme != std::string_view::npos && host_allowed(o.substr(scheme + 3), req);
}

response api::handle(const request& req) const {
  // RFC 9112 3.2: an HTTP/1.1 request has a Host; without one, or with a name this
  // listener is not, it may come from a page that rebound a DNS name to loopback.
  if (!host_allowed(req.host, req))
    return error_response(403, "Host '" + req.host.substr(0, 100) + "' not allowed (the admin API answers to " +
                                   "localhost, its own address and the names given to it: add this one with " +
                                   "--admin-host NAME or admin_hosts)");
  // The web UI's pages are not API routes (nor in its OpenAPI document). They hold no data
  // (the same files in every binary) and a browser's navigation cannot send a token, so they
  // come before the token check; everything they fetch comes after it.
  if (is_ui_target(req.target)) return serve_ui(req);
  if (!ctx_.token.empty()) {
    const auto token = bearer_token_of(req.authorization);
    if (!token_equal(token, ctx_.token)) return unauthorized(!token.empty());
  }
  // A mutation from a page elsewhere (a form posts text/plain or a urlencoded body with no
  // preflight; a browser names the page in Origin, RFC 6454 7.3): only the API's own pages
  // may change it (a hostile trial reset every fault rule from http://evil.example).
  if (req.method != "GET" && req.method != "HEAD" && !origin_allowed(req))
    return error_response(403, "Origin '" + req.origin.substr(0, 100) + "' not allowed to change this relay");
  return router_.handle(req);
}

}  // namespace mailtap::admin
