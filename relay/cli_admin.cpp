// `mailtap faults list|add|remove|reset` and `mailtap sessions list`: the command-line
// clients of a running relay's admin API (admin/README.md), for shell scripts and CI.
// Text by default, the API's JSON with --json. Exit codes: 0 done; 1 the relay refused or
// cannot be reached (an unknown rule, a name already in use, no answer); 2 usage or input
// error (a bad rule file: the relay's one-line error names the key and line).
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "admin/client.hpp"
#include "admin/session_catalog.hpp"
#include "config_reader/document.hpp"
#include "relay/cli.hpp"
#include "relay/config.hpp"

namespace mailtap::cli {

namespace {

namespace json = boost::json;

constexpr const char* default_admin = "127.0.0.1:8025";

struct admin_options {
  std::string admin = default_admin;
  std::string token_file;
  bool json = false;
};

void add_admin_options(CLI::App* cmd, admin_options& o) {
  cmd->add_option("--admin", o.admin, "The relay's admin API address (default 127.0.0.1:8025, or $MAILTAP_ADMIN)")
      ->envname("MAILTAP_ADMIN");
  cmd->add_option("--admin-token-file", o.token_file,
                  "File holding the admin API's token, when it has one (default $MAILTAP_ADMIN_TOKEN_FILE, "
                  "else the token in $MAILTAP_ADMIN_TOKEN)")
      ->envname("MAILTAP_ADMIN_TOKEN_FILE");
  cmd->add_flag("--json", o.json, "Print the API's JSON answer");
}

// The token to send: --admin-token-file's, else $MAILTAP_ADMIN_TOKEN, else none. False and a
// one-line error (naming the file or the variable, never the token) when it is not a valid one.
bool admin_token(const admin_options& o, std::string& token, std::string& error) {
  if (!o.token_file.empty()) {
    auto read = read_admin_token_file(o.token_file, error);
    if (!read) return false;
    token = std::move(*read);
    return true;
  }
  if (const char* env = std::getenv("MAILTAP_ADMIN_TOKEN"); env && *env) {
    // Checked before it goes into a header line: no control character can ride along.
    if (auto problem = admin_token_problem(env); !problem.empty()) {
      error = "$MAILTAP_ADMIN_TOKEN: " + problem;
      return false;
    }
    token = env;
  }
  return true;
}

// One call; prints the JSON answer with --json, else lets `text` print it. Returns the exit code.
// `body_name`: the file the request's body came from, named in place of "request" where the
// relay's refusal points into the body ("request:5: key 'code': ..."; admin/fault_input.cpp).
int call(const char* what, const admin_options& o, const admin::client_request& req,
         const std::function<void(const json::value&)>& text, const std::string& body_name = {}) {
  std::string why;
  // The relay's ready line prints its admin API as a URL ("admin API on http://127.0.0.1:8025"):
  // that form is taken too, with or without a trailing slash.
  std::string_view address = o.admin;
  if (address.starts_with("http://")) address.remove_prefix(7);
  if (address.ends_with('/')) address.remove_suffix(1);
  auto where = parse_endpoint(address, why);
  if (!where) {
    std::fprintf(stderr, "mailtap %s: --admin '%s': %s\n", what, o.admin.c_str(), why.c_str());
    return exit_usage;
  }
  auto authorized = req;
  if (!admin_token(o, authorized.token, why)) {
    std::fprintf(stderr, "mailtap %s: %s\n", what, why.c_str());
    return exit_usage;
  }
  auto res = admin::http_call(*where, authorized);
  if (!res.error.empty()) {
    std::fprintf(stderr, "mailtap %s: %s\n", what, res.error.c_str());
    return exit_problem;
  }
  boost::system::error_code ec;
  auto doc = json::parse(res.body, ec);
  if (res.status >= 300) {
    std::string message = !ec && doc.is_object() && doc.as_object().contains("error") && doc.at("error").is_string()
                              ? std::string(doc.at("error").as_string())
                              : "HTTP " + std::to_string(res.status);
    if (res.status == 401) message += " (the token: --admin-token-file FILE or $MAILTAP_ADMIN_TOKEN)";
    // The body's own prefixes only (admin/fault_input.cpp): the HTTP server's 413/414/431 say
    // "request ..." of the request as a whole.
    constexpr std::string_view body_source = "request";
    if (!body_name.empty() && (message.starts_with("request:") || message.starts_with("request (JSON):")))
      message.replace(0, body_source.size(), body_name);
    std::fprintf(stderr, "mailtap %s: %s\n", what, message.c_str());
    // The relay read the input and refused it: an input error. Anything else: a problem.
    return res.status == 400 || res.status == 413 || res.status == 415 ? exit_usage : exit_problem;
  }
  if (ec) {
    std::fprintf(stderr, "mailtap %s: the admin API's answer is not JSON\n", what);
    return exit_problem;
  }
  if (o.json) std::cout << res.body;
  else text(doc);
  std::cout.flush();
  return exit_ok;
}

std::string str(const json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_null()) return "-";
  if (v.is_bool()) return v.as_bool() ? "yes" : "no";
  if (v.is_int64()) return std::to_string(v.as_int64());
  if (v.is_uint64()) return std::to_string(v.as_uint64());
  return json::serialize(v);
}

void print_faults(const json::value& doc) {
  const auto& rules = doc.at("faults").as_array();
  if (rules.empty()) {
    std::printf("no fault rules\n");
    return;
  }
  // Each text column is as wide as its longest cell (a profile's rule names, a verb filter's
  // phases), at least as wide as before.
  struct row {
    std::string name, type, phases;
  };
  std::vector<row> cells;
  int name_w = 24, type_w = 16, phases_w = 20;
  for (const auto& r : rules) {
    row c{str(r.at("name")), str(r.at("type")), {}};
    for (const auto& p : r.at("phases").as_array()) c.phases += (c.phases.empty() ? "" : ",") + str(p);
    name_w = std::max(name_w, static_cast<int>(c.name.size()));
    type_w = std::max(type_w, static_cast<int>(c.type.size()));
    phases_w = std::max(phases_w, static_cast<int>(c.phases.size()));
    cells.push_back(std::move(c));
  }
  std::printf("%-*s %-*s %-*s %9s %6s\n", name_w, "NAME", type_w, "TYPE", phases_w, "PHASES", "INJECTED", "ACTIVE");
  for (std::size_t i = 0; i < rules.size(); ++i)
    std::printf("%-*s %-*s %-*s %9s %6s\n", name_w, cells[i].name.c_str(), type_w, cells[i].type.c_str(), phases_w,
                cells[i].phases.c_str(), str(rules[i].at("injected")).c_str(), str(rules[i].at("active")).c_str());
}

void print_sessions(const json::value& doc) {
  const auto& rows = doc.at("sessions").as_array();
  if (rows.empty()) {
    std::printf("no sessions\n");
    return;
  }
  int client_w = 22;   // an IPv6 client is wider
  for (const auto& r : rows) client_w = std::max(client_w, static_cast<int>(str(r.at("client")).size()));
  std::printf("%-34s %-28s %-*s %-11s %12s\n", "ID", "STARTED", client_w, "CLIENT", "OUTCOME", "DURATION ms");
  for (const auto& r : rows) {
    const auto us = r.at("duration_us").is_uint64() ? r.at("duration_us").as_uint64()
                                                    : static_cast<std::uint64_t>(r.at("duration_us").as_int64());
    std::printf("%-34s %-28s %-*s %-11s %12.3f\n", str(r.at("id")).c_str(), str(r.at("started_at")).c_str(), client_w,
                str(r.at("client")).c_str(), str(r.at("outcome")).c_str(), static_cast<double>(us) / 1000.0);
  }
  if (doc.at("more").as_bool()) std::printf("(more: --offset %zu)\n", static_cast<std::size_t>(
                                                                         doc.at("offset").to_number<std::uint64_t>() +
                                                                         rows.size()));
}

// The admin API's body limit (admin/http_server.hpp, http_limits::max_body_bytes): a larger
// rule file is named here, never half sent.
constexpr std::size_t rules_max_bytes = 256 * 1024;

// A rule file's text ("-": standard input; a file must be a regular one) and its media type:
// JSON for *.json, else TOML. False with `problem` set when it cannot be sent.
bool read_rules(const std::string& file, std::string& body, std::string& type, std::string& problem) {
  if (file == "-") {
    body.resize(rules_max_bytes + 1);
    std::cin.read(body.data(), static_cast<std::streamsize>(body.size()));
    body.resize(static_cast<std::size_t>(std::cin.gcount()));
    if (std::cin.bad()) problem = "cannot read standard input";
    else if (body.size() > rules_max_bytes) problem = "larger than " + std::to_string(rules_max_bytes) + " bytes";
    if (!problem.empty()) return false;
  } else {
    auto read = config_reader::read_file(file, rules_max_bytes);
    if (!read.ok()) {
      problem = read.problem;
      return false;
    }
    body = std::move(read.text);
  }
  const bool is_json = file.size() > 5 && file.compare(file.size() - 5, 5, ".json") == 0;
  const bool looks_json = !body.empty() && (body.find_first_not_of(" \t\r\n") != std::string::npos) &&
                          (body[body.find_first_not_of(" \t\r\n")] == '{');
  type = is_json || (file == "-" && looks_json) ? "application/json" : "application/toml";
  return true;
}

void register_faults(CLI::App& app, int& exit_code) {
  auto* faults = app.add_subcommand("faults", "Fault rules of a running relay, through its admin API");
  faults->require_subcommand(1);
  // Each subcommand binds its own options: CLI11 fills an option from its environment variable
  // when that subcommand's own flag was not given, so options shared between subcommands let
  // $MAILTAP_ADMIN override the --admin given to another one.
  auto o = std::make_shared<admin_options>();

  auto* list = faults->add_subcommand("list", "List the rules in force: type, phases, injections");
  add_admin_options(list, *o);
  list->callback([o, &exit_code] { exit_code = call("faults list", *o, {"GET", "/api/v1/faults", "", "", ""}, print_faults); });

  o = std::make_shared<admin_options>();
  auto* add = faults->add_subcommand("add", "Add the [[fault]] rules of a TOML file (or a JSON one, *.json; - reads stdin)");
  auto file = std::make_shared<std::string>();
  add->add_option("file", *file, "Rule file: [[fault]] tables (TOML), or JSON; '-' for standard input")->required();
  add_admin_options(add, *o);
  add->callback([o, file, &exit_code] {
    admin::client_request req{"POST", "/api/v1/faults", "", "", ""};
    std::string problem;
    if (!read_rules(*file, req.body, req.content_type, problem)) {
      std::fprintf(stderr, "mailtap faults add: %s: %s\n", file->c_str(), problem.c_str());
      exit_code = exit_usage;
      return;
    }
    exit_code = call(
        "faults add", *o, req,
        [](const json::value& doc) {
          for (const auto& n : doc.at("added").as_array()) std::printf("added %s\n", str(n).c_str());
        },
        *file == "-" ? std::string("stdin") : *file);
  });

  o = std::make_shared<admin_options>();
  auto* remove = faults->add_subcommand("remove", "Remove one rule by name (sessions already open keep it)");
  auto name = std::make_shared<std::string>();
  remove->add_option("name", *name, "Rule name")->required();
  add_admin_options(remove, *o);
  remove->callback([o, name, &exit_code] {
    exit_code = call("faults remove", *o, {"DELETE", "/api/v1/faults/" + admin::url_encode(*name), "", "", ""},
                     [](const json::value& doc) { std::printf("removed %s\n", str(doc.at("removed")).c_str()); });
  });

  o = std::make_shared<admin_options>();
  auto* reset = faults->add_subcommand("reset", "Remove every rule with its state and counts (between tests)");
  add_admin_options(reset, *o);
  reset->callback([o, &exit_code] {
    exit_code = call("faults reset", *o, {"POST", "/api/v1/faults/reset", "", "", ""}, [](const json::value& doc) {
      std::printf("reset: %s rule(s) removed\n", str(doc.at("removed")).c_str());
    });
  });
}

void register_sessions(CLI::App& app, int& exit_code) {
  auto* sessions = app.add_subcommand("sessions", "Sessions a running relay recorded, through its admin API");
  sessions->require_subcommand(1);
  struct list_options : admin_options {
    std::size_t limit = 20, offset = 0;
    std::string outcome, client;
  };
  auto o = std::make_shared<list_options>();
  auto* list = sessions->add_subcommand("list", "List sessions, newest first");
  add_admin_options(list, *o);
  list->add_option("--limit", o->limit, "At most this many (default 20, at most 500)")->check(count_up_to(500));
  list->add_option("--offset", o->offset, "Skip this many (newest first)")->check(count_up_to(1'000'000'000));
  // The outcomes the API accepts, from the one list (admin/session_catalog.hpp): "unreadable"
  // was missing here, in the help and in what the option took.
  list->add_option("--outcome", o->outcome, "Only this outcome: " + admin::session_outcomes_text(", "))
      ->check(CLI::IsMember(std::vector<std::string>(std::begin(admin::session_outcomes),
                                                     std::end(admin::session_outcomes))));
  list->add_option("--client", o->client, "Only clients whose address contains this");
  list->callback([o, &exit_code] {
    std::string target = "/api/v1/sessions?limit=" + std::to_string(o->limit) + "&offset=" + std::to_string(o->offset);
    if (!o->outcome.empty()) target += "&outcome=" + admin::url_encode(o->outcome);
    if (!o->client.empty()) target += "&client=" + admin::url_encode(o->client);
    exit_code = call("sessions list", *o, {"GET", target, "", "", ""}, print_sessions);
  });
}

}  // namespace

void register_admin_clients(CLI::App& app, int& exit_code) {
  register_faults(app, exit_code);
  register_sessions(app, exit_code);
}

}  // namespace mailtap::cli
