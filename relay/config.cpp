// Configuration loading: TOML over a base config, read with the reading layer shared with the
// [[fault]] rules (config_reader/README.md). Validates every key, reports the first problem in
// file order as one line "FILE:LINE: key 'KEY': problem", and never throws (anything thrown
// is caught at the two entry points). Pure function of its inputs plus the file system
// (scenario existence, the config file).
#include "relay/config.hpp"

#include "config_reader/document.hpp"
#include "config_reader/duration.hpp"
#include "config_reader/table_reader.hpp"
#include "policies/scenario_loader.hpp"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <limits>
#include <string_view>
#include <system_error>
#include <utility>

#include "protocol/action.hpp"
#include "protocol/terminal_text.hpp"

namespace mailtap {

namespace {

namespace fs = std::filesystem;
using config_reader::echo;
using config_reader::echo_path;
using config_reader::one_line;
using config_reader::problem_log;
using config_reader::table_reader;

// A config file is a few hundred bytes; refuse anything absurd rather than slurp it.
constexpr std::size_t max_config_file_bytes = 1 << 20;
// timeouts.min_data_rate: above 1 GB/s no real sender could keep up; a typo, not a policy.
constexpr std::int64_t min_data_rate_limit = 1'000'000'000;
// relay_name is sent in replies ("220 NAME ESMTP"); a domain name is at most 255 octets
// (RFC 1035 2.3.4), and the reply line must fit 512 octets (RFC 5321 4.5.3.1.5).
constexpr std::size_t max_relay_name_chars = 255;

// Applies each key of the document to the config, reading with config_reader (one problem
// log for the file, its [[fault]] tables included, so the first problem in file order wins).
class loader {
 public:
  loader(problem_log& log, fs::path base_dir, config& out) : log_(log), base_dir_(std::move(base_dir)), out_(out) {}

  void apply(const toml::table& root) {
    table_reader r(log_, root);
    r.each([&](std::string_view k) { return top_key(r, k); });
    for (auto& rule : policies::read_fault_tables(log_, root)) out_.faults.push_back(std::move(rule));
    for (auto& rule : scenario_rules_) out_.faults.push_back(std::move(rule));
    if (log_.failed()) return;
    if (auto duplicate = policies::duplicate_rule_name(out_.faults)) log_.at_line(0, std::move(*duplicate));
  }

 private:
  bool top_key(table_reader& r, std::string_view k) {
    if (k == "listen") {
      if (auto e = endpoint_value(r, false)) out_.listen = *e;
    } else if (k == "upstream") {
      upstream(r);
    } else if (k == "admin") {
      out_.admin_explicit = true;
      if (const auto* off = r.value().as_string(); off && off->get() == "off") out_.admin_off = true;
      else if (auto e = endpoint_value(r, false)) out_.admin = *e;
    } else if (k == "admin_token") {
      admin_token(r);
    } else if (k == "admin_token_file") {
      admin_token_file(r);
    } else if (k == "admin_hosts") {
      admin_hosts(r);
    } else if (k == "captures") {
      captures(r);
    } else if (k == "scenarios") {
      scenarios(r);
    } else if (k == "fault") {
      // read_fault_tables, after the other keys
    } else if (k == "seed") {
      if (auto v = r.integer(0, std::numeric_limits<std::int64_t>::max(), "a non-negative integer"))
        out_.seed = static_cast<std::uint64_t>(*v);
    } else if (k == "first_session") {
      if (auto v = r.integer(1, std::numeric_limits<std::int64_t>::max(), "a positive integer"))
        out_.first_session = static_cast<std::uint64_t>(*v);
    } else if (k == "max_sessions") {
      if (auto v = r.integer(1, max_sessions_limit)) out_.max_sessions = static_cast<std::size_t>(*v);
    } else if (k == "threads") {
      if (auto v = r.integer(0, max_threads_limit, "an integer from 0 (one per core) to " + std::to_string(max_threads_limit)))
        out_.threads = static_cast<std::size_t>(*v);
    } else if (k == "busy_poll_us") {
      if (auto v = r.integer(0, max_busy_poll_us, "an integer from 0 (never) to " + std::to_string(max_busy_poll_us)))
        out_.busy_poll = std::chrono::microseconds(*v);
    } else if (k == "relay_name") {
      relay_name(r);
    } else if (k == "log_level") {
      if (auto v = r.choice(log_levels)) out_.log_level = *v;
    } else if (k == "record_auth_username") {
      if (auto b = r.boolean()) out_.record_auth_username = *b;
    } else if (k == "upstream_identity") {
      if (auto v = r.choice({"none", "proxy_v1", "proxy_v2", "xclient"})) out_.identity = *parse_upstream_identity(*v);
    } else if (k == "listen_proxy_protocol") {
      if (auto b = r.boolean()) out_.listen_proxy_protocol = *b;
    } else if (k == "transparent") {
      if (auto b = r.boolean()) out_.transparent = *b;
    } else if (k == "data") {
      if (auto sub = r.section()) data(*sub);
    } else if (k == "timeouts") {
      if (auto sub = r.section()) timeouts(*sub);
    } else if (k == "tls") {
      if (auto sub = r.section()) tls(*sub);
    } else if (k == "sink") {
      if (auto sub = r.section()) sink(*sub);
    } else {
      return false;
    }
    return true;
  }

  // admin_token and admin_token_file: one or the other, never both in one file.
  void admin_token(table_reader& r) {
    const std::string* s = r.string("a string of " + std::to_string(admin_token_min_chars) + " to " +
                                    std::to_string(admin_token_max_chars) + " characters");
    if (!s) return;
    if (auto problem = admin_token_problem(*s); !problem.empty()) return r.fail(problem);
    take_admin_token(r, *s);
  }

  void admin_token_file(table_reader& r) {
    auto p = r.file(base_dir_, true);
    if (!p) return;
    std::string why;
    auto token = read_admin_token_file(*p, why);
    if (!token) return r.fail(why);
    take_admin_token(r, *token);
  }

  void admin_hosts(table_reader& r) {
    const auto* arr = r.value().as_array();
    if (!arr) return r.wrong_type("an array of host names or addresses");
    if (arr->size() > max_admin_hosts) return r.fail("more than " + std::to_string(max_admin_hosts) + " entries");
    std::vector<std::string> names;
    for (const toml::node& item : *arr) {
      const auto* s = item.as_string();
      std::string problem;
      auto name = s ? admin_host_name(s->get(), problem) : std::nullopt;
      if (!name) return r.fail_at(item, "admin_hosts", s ? problem : "expected an array of host names or addresses");
      names.push_back(std::move(*name));
    }
    out_.admin_hosts = std::move(names);
  }

  void take_admin_token(table_reader& r, std::string token) {
    if (admin_token_seen_) return r.fail("admin_token and admin_token_file go one without the other");
    admin_token_seen_ = true;
    out_.admin_token = std::move(token);
  }

  // `captures = "DIR"`, or a [captures] table: dir, fsync, max_age, max_bytes.
  void captures(table_reader& r) {
    if (!r.value().is_table()) {
      if (auto p = r.directory(base_dir_)) out_.captures_dir = *p;
      return;
    }
    auto sub = r.section();
    sub->each([&](std::string_view k) {
      if (k == "dir") {
        if (auto p = sub->directory(base_dir_)) out_.captures_dir = *p;
      } else if (k == "fsync") {
        if (auto b = sub->boolean()) out_.captures_fsync = *b;
      } else if (k == "max_age") {
        if (auto v = sub->timeout()) out_.captures_max_age = std::chrono::ceil<std::chrono::seconds>(*v);
      } else if (k == "max_bytes") {
        if (auto v = sub->byte_size(1, std::uint64_t{1} << 62)) out_.captures_max_bytes = *v;
      } else {
        return false;
      }
      return true;
    });
  }

  std::optional<endpoint> endpoint_value(table_reader& r, bool for_upstream) {
    static constexpr std::string_view expected_listen = "a string HOST:PORT or [V6]:PORT";
    static constexpr std::string_view expected_upstream = "a string HOST:PORT, [V6]:PORT or \"builtin\"";
    const std::string* s = r.string(for_upstream ? expected_upstream : expected_listen);
    if (!s) return std::nullopt;
    std::string problem;
    auto e = parse_endpoint(*s, problem);
    if (!e) {
      r.fail(problem);
      return std::nullopt;
    }
    if (for_upstream && e->port == 0) {
      r.fail("port 0 cannot be connected to in '" + echo(*s) + "'");
      return std::nullopt;
    }
    return e;
  }

  void upstream(table_reader& r) {
    if (const auto* s = r.value().as_string(); s && s->get() == "builtin") {
      out_.upstream.reset();
      return;
    }
    if (auto e = endpoint_value(r, true)) out_.upstream = *e;
  }

  // Each listed file is loaded as a scenario; its problems name that file and are ranked at
  // the line that lists it.
  void scenarios(table_reader& r) {
    const auto* arr = r.value().as_array();
    if (!arr) return r.wrong_type("an array of file paths");
    const toml::node& whole = r.value();
    std::vector<fs::path> list;
    for (std::size_t i = 0; i < arr->size(); ++i) {
      const std::string key = "scenarios[" + std::to_string(i) + "]";
      r.focus(key, *arr->get(i));
      if (auto p = scenario_file(r, list)) list.push_back(std::move(*p));
    }
    r.focus("scenarios", whole);   // `key` is gone; each() must not see it
    if (list.size() == arr->size()) out_.scenarios = std::move(list);
  }

  // `listed`: the files read before it in the list. One listed twice is refused as such: loading
  // it again said "duplicate rule name 'a' (first at line 1)" of the file's own first rule.
  std::optional<fs::path> scenario_file(table_reader& r, const std::vector<fs::path>& listed) {
    const std::string* s = r.string("a string (a scenario file path)");
    if (!s) return std::nullopt;
    if (s->empty() || s->find('\0') != std::string::npos) {
      r.fail("expected a scenario file path, got '" + echo(*s) + "'");
      return std::nullopt;
    }
    fs::path p(*s);
    if (p.is_relative()) p = base_dir_ / p;
    p = p.lexically_normal();
    std::error_code ec;
    const auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) {
      r.fail("scenario file not found: " + echo_path(p.native()));
      return std::nullopt;
    }
    if (fs::is_directory(st)) {
      r.fail("scenario path is a directory, not a file: " + echo_path(p.native()));
      return std::nullopt;
    }
    for (std::size_t j = 0; j < listed.size(); ++j) {
      std::error_code same_ec;
      if (listed[j] == p || fs::equivalent(listed[j], p, same_ec)) {
        r.fail("the scenario file " + echo_path(p.native()) + " is listed twice (also scenarios[" + std::to_string(j) +
               "]): list each file once");
        return std::nullopt;
      }
    }
    auto loaded = policies::load_scenario(p.native());
    if (!loaded.ok()) {
      log_.at_line(r.value().source().begin.line, std::move(loaded.error));
      return std::nullopt;
    }
    for (auto& rule : loaded.rules) scenario_rules_.push_back(std::move(rule));
    return p;
  }

  void relay_name(table_reader& r) {
    static constexpr std::string_view expected =
        "a non-empty name of printable ASCII without spaces, at most 255 characters";
    const std::string* s = r.string(expected);
    if (!s) return;
    bool ok = !s->empty() && s->size() <= max_relay_name_chars;
    for (unsigned char c : *s) ok = ok && c > 0x20 && c < 0x7f;
    if (!ok) return r.fail("expected " + std::string(expected) + ", got '" + echo(*s) + "'");
    out_.relay_name = *s;
  }

  void data(table_reader& r) {
    r.each([&](std::string_view k) {
      if (k != "bare_line_endings") return false;
      if (auto v = r.choice({"strict", "normalize", "raw"})) out_.bare_eol = *protocol::parse_bare_eol_mode(*v);
      return true;
    });
  }

  void timeouts(table_reader& r) {
    r.each([&](std::string_view k) {
      if (k == "min_data_rate") {   // bytes per second, not a duration (0 turns it off)
        if (auto v = r.integer(0, min_data_rate_limit, "an integer number of bytes per second from 0 to " +
                                                           std::to_string(min_data_rate_limit)))
          out_.timeouts.min_data_rate = static_cast<std::uint64_t>(*v);
        return true;
      }
      std::chrono::milliseconds* target = nullptr;
      if (k == "client_idle") target = &out_.timeouts.client_idle;
      else if (k == "client_command") target = &out_.timeouts.client_command;
      else if (k == "upstream_connect") target = &out_.upstream_connect_timeout;
      else if (k == "upstream_greeting") target = &out_.timeouts.upstream_greeting;
      else if (k == "upstream_reply") target = &out_.timeouts.upstream_reply;
      else if (k == "upstream_data_init") target = &out_.timeouts.upstream_data_init;
      else if (k == "upstream_data_end") target = &out_.timeouts.upstream_data_end;
      else if (k == "upstream_data_block") target = &out_.timeouts.upstream_data_block;
      else if (k == "drain") target = &out_.drain_timeout;
      if (!target) return false;
      if (auto v = r.timeout()) *target = *v;
      return true;
    });
  }

  void tls(table_reader& r) {
    auto& out = out_.tls;
    bool insecure_seen = false, insecure = false;
    const toml::node* insecure_node = nullptr;
    const toml::node* verify_node = nullptr;
    r.each([&](std::string_view k) {
      if (k == "cert") {
        if (auto p = r.file(base_dir_, true)) out.cert_file = *p;
      } else if (k == "key") {
        if (auto p = r.file(base_dir_, true)) out.key_file = *p;
      } else if (k == "ca_file") {
        if (auto p = r.file(base_dir_, true)) out.ca_file = *p;
      } else if (k == "state_dir") {
        if (auto p = r.directory(base_dir_)) out.state_dir = *p;
      } else if (k == "listen") {
        if (auto e = endpoint_value(r, false)) out.listen = *e;
      } else if (k == "starttls") {
        if (auto b = r.boolean()) out.offer_starttls = *b;
      } else if (k == "upstream") {
        if (auto v = r.choice({"mirror", "required", "opportunistic", "never"}))
          out.upstream = *protocol::parse_upstream_tls_mode(*v);
      } else if (k == "upstream_implicit") {
        if (auto b = r.boolean()) out.upstream_implicit = *b;
      } else if (k == "insecure_upstream") {   // the old spelling of verify_upstream = "none"
        if (auto b = r.boolean()) {
          insecure_seen = true;
          insecure = *b;
          if (*b) insecure_node = &r.value();
        }
      } else if (k == "verify_upstream") {
        if (auto v = r.choice({"none", "record", "require"})) {
          out.verify_upstream = parse_upstream_verify(*v);
          verify_node = &r.value();
        }
      } else if (k == "upstream_fingerprint") {
        const std::string* s = r.string("\"sha256:HEX\"");
        if (!s) return true;
        std::string why;
        if (auto fp = parse_sha256_fingerprint(*s, why)) out.upstream_fingerprint = *fp;
        else r.fail(why);
      } else if (k == "handshake_timeout") {
        if (auto v = r.timeout()) out.handshake_timeout = *v;
      } else {
        return false;
      }
      return true;
    });
    const toml::node& table = r.table();
    if ((out.cert_file.empty()) != (out.key_file.empty()))
      log_.at(table, "tls", "cert and key go together: set both or neither");
    if (insecure_seen && verify_node && insecure != (*out.verify_upstream == upstream_verify::none))
      r.fail_at(*verify_node, "verify_upstream",
                "contradicts insecure_upstream = " + std::string(insecure ? "true" : "false") +
                    " (insecure_upstream = true is the old spelling of verify_upstream = \"none\")");
    else if (insecure && !verify_node)
      out.verify_upstream = upstream_verify::none;
    if (!out.upstream_fingerprint.empty() && out.verify_upstream == upstream_verify::none)
      r.fail_at(verify_node ? *verify_node : insecure_node ? *insecure_node : table, "upstream_fingerprint",
                "a pinned fingerprint is a verification: it cannot go with verify_upstream = \"none\"");
  }

  void sink(table_reader& r) {
    r.each([&](std::string_view k) {
      std::string* target = k == "auth_user" ? &out_.sink.auth_user : k == "auth_password" ? &out_.sink.auth_password : nullptr;
      if (!target) return false;
      if (const std::string* s = r.string("a string")) *target = *s;
      return true;
    });
  }

  problem_log& log_;
  fs::path base_dir_;
  config& out_;
  std::vector<policies::rule> scenario_rules_;   // after the file's own [[fault]] tables
  bool admin_token_seen_ = false;
};

// The directory relative paths in the file resolve against, made absolute so the result does
// not depend on a later change of working directory.
fs::path base_directory(const fs::path& file) {
  std::error_code ec;
  fs::path dir = file.parent_path();
  if (dir.empty()) {
    dir = fs::current_path(ec);
    return ec ? fs::path(".") : dir;
  }
  fs::path abs = fs::absolute(dir, ec);
  return ec ? dir : abs.lexically_normal();
}

// An error line as a terminal gets it (protocol/terminal_text.hpp terminal_safe, which
// config_reader's echo and the capture readers' error lines use too): C0 and C1 controls, the
// bidirectional controls, U+2028 and U+2029, and bytes that are not UTF-8 (a value cut short
// inside a character) escaped. Its backslashes are left alone: they are escape_bytes' own.
std::string terminal_line(std::string_view line) { return protocol::terminal_safe(line); }

std::optional<config> load_impl(std::string_view toml_text, std::string_view source_name,
                                const config& base, std::string& error) {
  auto root = config_reader::parse(toml_text, source_name, error);
  if (!root) {
    error = terminal_line(error);
    return std::nullopt;
  }
  config out = base;
  problem_log log(echo_path(source_name));
  loader(log, base_directory(fs::path(source_name)), out).apply(*root);
  if (log.failed()) {
    error = terminal_line(log.first());
    return std::nullopt;
  }
  error.clear();
  return out;
}

bool is_ipv6_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
         c == '.';
}

bool is_host_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
         c == '.' || c == '_';
}

}  // namespace

bool is_log_level(std::string_view text) {
  return std::find(std::begin(log_levels), std::end(log_levels), text) != std::end(log_levels);
}

std::string endpoint::to_string() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::optional<endpoint> parse_endpoint(std::string_view text, std::string& error) {
  error.clear();
  const std::string shown = "'" + terminal_line(echo(text)) + "'";
  const auto bad = [&](std::string problem) -> std::optional<endpoint> {
    error = std::move(problem) + " in " + shown + " (expected HOST:PORT or [V6]:PORT)";
    return std::nullopt;
  };
  std::string_view host;
  std::string_view rest;   // from the ':' before the port
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return bad("missing ']'");
    host = text.substr(1, close - 1);
    rest = text.substr(close + 1);
    if (host.empty()) return bad("empty host");
    if (host.find(':') == std::string_view::npos) return bad("brackets hold only IPv6 addresses");
    for (char c : host)
      if (!is_ipv6_char(c)) return bad("invalid character in IPv6 address");
    if (rest.empty()) return bad("missing port");
    if (rest.front() != ':') return bad("expected ':' after ']'");
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("missing port");
    host = text.substr(0, colon);
    rest = text.substr(colon);
    if (host.empty()) return bad("empty host");
    if (host.find(':') != std::string_view::npos) return bad("IPv6 address must be in brackets");
    for (char c : host)
      if (!is_host_char(c)) return bad("invalid character in host");
  }
  const std::string_view digits = rest.substr(1);
  if (digits.empty()) return bad("missing port");
  std::uint32_t port = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return bad("port is not a number");
    port = port * 10 + static_cast<std::uint32_t>(c - '0');
    if (port > 65535) return bad("port greater than 65535");
  }
  return endpoint{std::string(host), static_cast<std::uint16_t>(port)};
}

namespace {

// The user's home: $HOME, else (unset or empty, as under some service managers and cron) the
// password database's entry for the real uid; empty when neither says.
std::string user_home() {
  if (const char* v = std::getenv("HOME"); v && *v) return v;
  long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(size > 0 ? static_cast<std::size_t>(size) : 16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwuid_r(::getuid(), &pw, buf.data(), buf.size(), &found) == 0 && found && found->pw_dir &&
      *found->pw_dir)
    return found->pw_dir;
  return {};
}

// mailtap's directory under the XDG state home: $XDG_STATE_HOME/mailtap (the XDG Base Directory
// spec: a relative value is invalid and is ignored), else ~/.local/state/mailtap; none without a home.
std::optional<fs::path> mailtap_state_home() {
  if (const char* v = std::getenv("XDG_STATE_HOME"); v && *v == '/') return fs::path(v) / "mailtap";
  if (const std::string home = user_home(); !home.empty()) return fs::path(home) / ".local" / "state" / "mailtap";
  return std::nullopt;
}

}  // namespace

fs::path default_captures_dir() {
  try {
    if (const char* v = std::getenv("MAILTAP_CAPTURES"); v && *v) return fs::path(v);
    if (auto state = mailtap_state_home()) return *state / "captures";
  } catch (...) {
  }
  return fs::path(".") / "mailtap-captures";
}

fs::path default_state_dir() {
  try {
    if (auto state = mailtap_state_home()) return *state;
  } catch (...) {
  }
  return fs::path(".") / "mailtap-state";
}

std::optional<config> load_config_text(std::string_view toml_text, std::string_view source_name,
                                       const config& base, std::string& error) {
  try {
    return load_impl(toml_text, source_name, base, error);
  } catch (const std::exception& e) {
    error = terminal_line(echo_path(source_name) + ": internal error: " + one_line(e.what()));
  } catch (...) {
    error = terminal_line(echo_path(source_name) + ": internal error");
  }
  return std::nullopt;
}

std::optional<config> load_config_file(const fs::path& file, const config& base,
                                       std::string& error) {
  try {
    auto read = config_reader::read_file(file, max_config_file_bytes);
    if (!read.ok()) {
      error = terminal_line(echo_path(file.native()) + ": cannot read: " + read.problem);
      return std::nullopt;
    }
    return load_impl(read.text, file.string(), base, error);
  } catch (const std::exception& e) {
    error = terminal_line(echo_path(file.native()) + ": internal error: " + one_line(e.what()));
  } catch (...) {
    error = terminal_line(echo_path(file.native()) + ": internal error");
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- the admin token

std::string admin_token_problem(std::string_view token) {
  if (token.size() < admin_token_min_chars || token.size() > admin_token_max_chars)
    return "expected an admin token of " + std::to_string(admin_token_min_chars) + " to " +
           std::to_string(admin_token_max_chars) + " characters, got " + std::to_string(token.size());
  for (unsigned char c : token)
    if (!std::isalnum(c) && c != '-' && c != '.' && c != '_' && c != '~')
      return "the admin token may hold only A-Z a-z 0-9 - . _ ~ (e.g. `openssl rand -hex 32`)";
  return "";
}

std::optional<std::string> read_admin_token_file(const fs::path& file, std::string& error) {
  // A token is at most admin_token_max_chars; a little room for a line end and blanks.
  auto read = config_reader::read_file(file, admin_token_max_chars + 64);
  if (!read.ok()) {
    error = terminal_line(echo_path(file.native()) + ": cannot read the admin token: " + read.problem);
    return std::nullopt;
  }
  std::string token = std::move(read.text);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (auto problem = admin_token_problem(token); !problem.empty()) {
    error = terminal_line(echo_path(file.native()) + ": " + problem);
    return std::nullopt;
  }
  return token;
}

std::optional<std::string> admin_host_name(std::string_view name, std::string& problem) {
  constexpr std::size_t max_name_chars = 253;
  std::string_view bare = name;
  if (bare.size() >= 2 && bare.front() == '[' && bare.back() == ']') bare = bare.substr(1, bare.size() - 2);
  const bool v6 = bare.find(':') != std::string_view::npos;
  bool ok = !bare.empty() && bare.size() <= max_name_chars && (v6 || bare.size() == name.size());
  for (char c : bare) ok = ok && (v6 ? is_ipv6_char(c) : is_host_char(c));
  if (!ok) {
    problem = "'" + terminal_line(echo(name)) + "' is not a host name or an IP address (no port)";
    return std::nullopt;
  }
  std::string out(bare);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return v6 ? "[" + out + "]" : out;
}

// ---------------------------------------------------------------- retention flags

std::optional<std::chrono::seconds> parse_captures_max_age(std::string_view text, std::string& problem) {
  // Plain digits are seconds, as the config file's integer `max_age` is.
  const bool seconds = !text.empty() && text.size() <= 12 && text.find_first_not_of("0123456789") == std::string_view::npos;
  auto us = config_reader::parse_duration(seconds ? std::string(text) + "s" : std::string(text), problem);
  if (!us) {
    problem = terminal_line(problem);
    return std::nullopt;
  }
  if (*us == 0) {
    problem = "expected a duration > 0";
    return std::nullopt;
  }
  return std::chrono::ceil<std::chrono::seconds>(std::chrono::microseconds(*us));
}

std::optional<std::uint64_t> parse_captures_max_bytes(std::string_view text, std::string& problem) {
  auto bytes = config_reader::parse_byte_size(text, problem);
  if (!bytes) problem = terminal_line(problem);
  if (bytes && *bytes == 0) {
    problem = "expected a size > 0";
    return std::nullopt;
  }
  return bytes;
}

// ---------------------------------------------------------------- [tls] upstream verification

std::string_view to_string(upstream_verify v) {
  switch (v) {
    case upstream_verify::none: return "none";
    case upstream_verify::record: return "record";
    case upstream_verify::require: return "require";
  }
  return "?";
}

std::optional<upstream_verify> parse_upstream_verify(std::string_view name) {
  for (auto v : {upstream_verify::none, upstream_verify::record, upstream_verify::require})
    if (to_string(v) == name) return v;
  return std::nullopt;
}

std::string_view to_string(upstream_identity mode) {
  switch (mode) {
    case upstream_identity::none: return "none";
    case upstream_identity::proxy_v1: return "proxy_v1";
    case upstream_identity::proxy_v2: return "proxy_v2";
    case upstream_identity::xclient: return "xclient";
  }
  return "?";
}

std::optional<upstream_identity> parse_upstream_identity(std::string_view name) {
  for (auto mode : {upstream_identity::none, upstream_identity::proxy_v1, upstream_identity::proxy_v2,
                    upstream_identity::xclient})
    if (to_string(mode) == name) return mode;
  return std::nullopt;
}

upstream_verify effective_upstream_verify(const tls_config& t) {
  if (t.verify_upstream) return *t.verify_upstream;
  return t.upstream == protocol::upstream_tls_mode::required ? upstream_verify::require : upstream_verify::record;
}

std::optional<std::string> parse_sha256_fingerprint(std::string_view text, std::string& error) {
  constexpr std::size_t sha256_bytes = 32;
  std::string_view hex = text;
  if (hex.size() >= 7 && protocol::iequals(hex.substr(0, 7), "sha256:")) hex.remove_prefix(7);
  std::string digits;
  for (char c : hex) {
    if (c == ':') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      error = "expected \"sha256:\" and 64 hex digits (colons optional), got a '" + terminal_line(echo(std::string(1, c))) + "'";
      return std::nullopt;
    }
    if (digits.size() == 2 * sha256_bytes) break;
    digits += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  std::size_t count = 0;
  for (char c : hex) count += c != ':';
  if (count != 2 * sha256_bytes) {
    error = "expected a SHA-256 fingerprint (64 hex digits), got " + std::to_string(count) + " hex digit" +
            (count == 1 ? "" : "s");
    return std::nullopt;
  }
  std::string out;
  for (std::size_t i = 0; i < digits.size(); i += 2) {
    if (i != 0) out += ':';
    out += digits.substr(i, 2);
  }
  return out;
}

}  // namespace mailtap
