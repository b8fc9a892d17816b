// Configuration loading: TOML (toml++) over a base config. Validates every key, reports the
// first problem in file order as one line "FILE:LINE: key 'KEY': problem", and never throws
// (toml::parse_error and anything else are caught at the two entry points).
// Pure function of its inputs plus the file system (scenario existence, the config file).
#include "relay/config.hpp"

#include "policies/duration.hpp"
#include "policies/scenario_loader.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <unistd.h>

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string_view>
#include <system_error>
#include <utility>

#include "protocol/action.hpp"

namespace mailtap {

namespace {

namespace fs = std::filesystem;

// A config file is a few hundred bytes; refuse anything absurd rather than slurp it.
constexpr std::size_t max_config_file_bytes = 1 << 20;
// Echoed values and keys are cut to this many characters so the error stays a short line.
constexpr std::size_t max_echo_chars = 200;
constexpr std::size_t max_echo_path_chars = 4096;   // PATH_MAX on Linux
// timeouts.min_data_rate: above 1 GB/s no real sender could keep up; a typo, not a policy.
constexpr std::int64_t min_data_rate_limit = 1'000'000'000;
// relay_name is sent in replies ("220 NAME ESMTP"); a domain name is at most 255 octets
// (RFC 1035 2.3.4), and the reply line must fit 512 octets (RFC 5321 4.5.3.1.5).
constexpr std::size_t max_relay_name_chars = 255;
// Timeouts: at least 1 ms (they are stored in milliseconds) and at most one year, so that
// now + timeout never overflows a steady_clock time point.
constexpr double min_timeout_seconds = 0.001;
constexpr std::int64_t max_timeout_seconds = 365 * 24 * 3600;

// Keys and values echoed in an error: controls escaped (protocol::escape_bytes), so the
// error stays one line, and cut so it stays short. Paths get room for PATH_MAX.
std::string echo(std::string_view text) { return protocol::escape_bytes(text, max_echo_chars); }
std::string echo_path(std::string_view p) { return protocol::escape_bytes(p, max_echo_path_chars); }

// The parse error's description is one sentence from toml++; make sure it stays one line.
std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) out += (c == '\n' || c == '\r') ? ' ' : c;
  return out;
}

std::string_view type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::none: return "nothing";
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
  }
  return "value";
}

// Walks the parsed table and applies each key to the config. Keeps the first error in file
// order (toml::table iterates in key order, not file order).
class loader {
 public:
  loader(std::string shown_name, fs::path base_dir, config& out)
      : shown_name_(std::move(shown_name)), base_dir_(std::move(base_dir)), out_(out) {}

  void apply(const toml::table& root) {
    for (auto&& [key, node] : root) {
      const std::string_view k = key.str();
      if (k == "listen") {
        if (auto e = endpoint_value(k, node, false)) out_.listen = *e;
      } else if (k == "upstream") {
        upstream(node);
      } else if (k == "admin") {
        if (auto e = endpoint_value(k, node, false)) out_.admin = *e;
      } else if (k == "captures") {
        if (auto p = path_value(k, node)) out_.captures_dir = *p;
      } else if (k == "scenarios") {
        scenarios(node);
      } else if (k == "fault") {
        faults(root);
      } else if (k == "seed") {
        if (auto v = integer_value(k, node, 0, std::numeric_limits<std::int64_t>::max(),
                                   "a non-negative integer"))
          out_.seed = static_cast<std::uint64_t>(*v);
      } else if (k == "max_sessions") {
        if (auto v = integer_value(k, node, 1, max_sessions_limit,
                                   "an integer from 1 to " + std::to_string(max_sessions_limit)))
          out_.max_sessions = static_cast<std::size_t>(*v);
      } else if (k == "threads") {
        if (auto v = integer_value(k, node, 0, max_threads_limit,
                                   "an integer from 0 (one per core) to " + std::to_string(max_threads_limit)))
          out_.threads = static_cast<std::size_t>(*v);
      } else if (k == "relay_name") {
        relay_name(node);
      } else if (k == "log_level") {
        log_level(node);
      } else if (k == "record_auth_username") {
        if (auto b = bool_value(k, node)) out_.record_auth_username = *b;
      } else if (k == "transparent") {
        if (auto b = bool_value(k, node)) out_.transparent = *b;
      } else if (k == "data") {
        data(node);
      } else if (k == "timeouts") {
        timeouts(node);
      } else if (k == "tls") {
        tls(node);
      } else if (k == "sink") {
        sink(node);
      } else {
        fail(node, std::string(k), "unknown key");
      }
    }
  }

  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }

 private:
  void fail(const toml::node& node, std::string_view key, std::string_view problem) {
    const auto line = node.source().begin.line;
    if (failed_ && line >= line_) return;
    failed_ = true;
    line_ = line;
    error_ = shown_name_;
    if (line > 0) error_ += ":" + std::to_string(line);
    error_ += ": key '" + echo(key) + "': ";
    error_ += problem;
  }

  // An error already formatted by policies/ (it names its own file and line).
  void fail_with(std::string message) {
    if (failed_) return;
    failed_ = true;
    error_ = std::move(message);
  }

  void faults(const toml::table& root) {
    auto loaded = policies::rules_from_toml(root, shown_name_);
    if (!loaded.ok()) return fail_with(loaded.error);
    for (auto& r : loaded.rules) out_.faults.push_back(std::move(r));
  }

  void wrong_type(const toml::node& node, std::string_view key, std::string_view expected) {
    fail(node, key, "expected " + std::string(expected) + ", got " + std::string(type_name(node.type())));
  }

  const std::string* string_value(std::string_view key, const toml::node& node,
                                  std::string_view expected) {
    const auto* s = node.as_string();
    if (!s) {
      wrong_type(node, key, expected);
      return nullptr;
    }
    return &s->get();
  }

  std::optional<std::int64_t> integer_value(std::string_view key, const toml::node& node,
                                            std::int64_t lo, std::int64_t hi,
                                            const std::string& expected) {
    const auto* i = node.as_integer();
    if (!i) {
      wrong_type(node, key, expected);
      return std::nullopt;
    }
    const std::int64_t v = i->get();
    if (v < lo || v > hi) {
      fail(node, key, "expected " + expected + ", got " + std::to_string(v));
      return std::nullopt;
    }
    return v;
  }

  std::optional<endpoint> endpoint_value(std::string_view key, const toml::node& node,
                                         bool for_upstream) {
    static constexpr std::string_view expected_listen = "a string HOST:PORT or [V6]:PORT";
    static constexpr std::string_view expected_upstream = "a string HOST:PORT, [V6]:PORT or \"builtin\"";
    const auto* s = string_value(key, node, for_upstream ? expected_upstream : expected_listen);
    if (!s) return std::nullopt;
    std::string problem;
    auto e = parse_endpoint(*s, problem);
    if (!e) {
      fail(node, key, problem);
      return std::nullopt;
    }
    if (for_upstream && e->port == 0) {
      fail(node, key, "port 0 cannot be connected to in '" + echo(*s) + "'");
      return std::nullopt;
    }
    return e;
  }

  void upstream(const toml::node& node) {
    if (const auto* s = node.as_string(); s && s->get() == "builtin") {
      out_.upstream.reset();
      return;
    }
    if (auto e = endpoint_value("upstream", node, true)) out_.upstream = *e;
  }

  fs::path resolve(const std::string& text) const {
    fs::path p(text);
    if (p.is_relative()) p = base_dir_ / p;
    return p.lexically_normal();
  }

  std::optional<fs::path> path_value(std::string_view key, const toml::node& node) {
    const auto* s = string_value(key, node, "a string (a directory path)");
    if (!s) return std::nullopt;
    if (s->empty()) {
      fail(node, key, "expected a directory path, got an empty string");
      return std::nullopt;
    }
    if (s->find('\0') != std::string::npos) {
      fail(node, key, "path contains a NUL character");
      return std::nullopt;
    }
    return resolve(*s);
  }

  void scenarios(const toml::node& node) {
    const auto* arr = node.as_array();
    if (!arr) {
      wrong_type(node, "scenarios", "an array of file paths");
      return;
    }
    std::vector<fs::path> list;
    bool ok = true;
    for (std::size_t i = 0; i < arr->size(); ++i) {
      const toml::node& item = *arr->get(i);
      const std::string key = "scenarios[" + std::to_string(i) + "]";
      const auto* s = string_value(key, item, "a string (a scenario file path)");
      if (!s) {
        ok = false;
        continue;
      }
      if (s->empty() || s->find('\0') != std::string::npos) {
        fail(item, key, "expected a scenario file path, got '" + echo(*s) + "'");
        ok = false;
        continue;
      }
      fs::path p = resolve(*s);
      std::error_code ec;
      const auto st = fs::status(p, ec);
      if (ec || !fs::exists(st)) {
        fail(item, key, "scenario file not found: " + echo_path(p.native()));
        ok = false;
        continue;
      }
      if (fs::is_directory(st)) {
        fail(item, key, "scenario path is a directory, not a file: " + echo_path(p.native()));
        ok = false;
        continue;
      }
      auto loaded = policies::load_scenario(p.native());
      if (!loaded.ok()) {
        fail_with(loaded.error);
        ok = false;
        continue;
      }
      for (auto& r : loaded.rules) out_.faults.push_back(std::move(r));
      list.push_back(std::move(p));
    }
    if (ok) out_.scenarios = std::move(list);
  }

  void relay_name(const toml::node& node) {
    static constexpr std::string_view expected =
        "a non-empty name of printable ASCII without spaces, at most 255 characters";
    const auto* s = string_value("relay_name", node, expected);
    if (!s) return;
    bool ok = !s->empty() && s->size() <= max_relay_name_chars;
    for (unsigned char c : *s) ok = ok && c > 0x20 && c < 0x7f;
    if (!ok) {
      fail(node, "relay_name", "expected " + std::string(expected) + ", got '" + echo(*s) + "'");
      return;
    }
    out_.relay_name = *s;
  }

  void log_level(const toml::node& node) {
    const auto* s = string_value("log_level", node, log_levels_expected);
    if (!s) return;
    if (is_log_level(*s)) {
      out_.log_level = *s;
      return;
    }
    fail(node, "log_level", "expected " + std::string(log_levels_expected) + ", got '" + echo(*s) + "'");
  }

  void data(const toml::node& node) {
    const auto* t = node.as_table();
    if (!t) {
      wrong_type(node, "data", "a table");
      return;
    }
    for (auto&& [key, item] : *t) {
      const std::string full = "data." + std::string(key.str());
      if (key.str() == "bare_line_endings") {
        static constexpr std::string_view expected = "one of strict|normalize|raw";
        const auto* s = string_value(full, item, expected);
        if (!s) continue;
        if (auto m = protocol::parse_bare_eol_mode(*s)) {
          out_.bare_eol = *m;
        } else {
          fail(item, full, "expected " + std::string(expected) + ", got '" + echo(*s) + "'");
        }
      } else {
        fail(item, full, "unknown key");
      }
    }
  }

  // A duration string as scenario files take it (policies/duration.hpp: "250ms", "5s", "5m",
  // "1h"), held to the same 1 ms .. one year range as a number of seconds (the parser
  // refuses more than a year).
  std::optional<std::chrono::milliseconds> duration_string_value(std::string_view key, const toml::node& node,
                                                                 const std::string& text) {
    std::string problem;
    const auto us = policies::parse_duration(text, problem);
    if (!us && problem.starts_with("expected")) {
      fail(node, key, "expected a number of seconds or a duration like \"250ms\", \"5s\", \"5m\" or \"1h\", got '" +
                          echo(text) + "'");
      return std::nullopt;
    }
    if (!us) {
      fail(node, key, problem + ", got '" + echo(text) + "'");
      return std::nullopt;
    }
    if (*us < 1000) {
      fail(node, key, "expected at least 1ms, got '" + echo(text) + "'");
      return std::nullopt;
    }
    return std::chrono::milliseconds(*us / 1000);   // whole milliseconds: the parser has no finer unit
  }

  std::optional<std::chrono::milliseconds> seconds_value(std::string_view key, const toml::node& node) {
    static constexpr std::string_view expected = "a number of seconds > 0 or a duration string like \"5m\"";
    double seconds = 0;
    std::string shown;
    if (const auto* str = node.as_string()) return duration_string_value(key, node, str->get());
    if (const auto* i = node.as_integer()) {
      seconds = static_cast<double>(i->get());
      shown = std::to_string(i->get());
    } else if (const auto* f = node.as_floating_point()) {
      seconds = f->get();
      if (std::isnan(seconds)) {
        shown = "nan";
      } else if (std::isinf(seconds)) {
        shown = seconds > 0 ? "inf" : "-inf";
      } else {
        char buf[64];
        const auto r = std::to_chars(buf, buf + sizeof buf, seconds);
        shown.assign(buf, r.ptr);
      }
    } else {
      wrong_type(node, key, expected);
      return std::nullopt;
    }
    if (!(seconds > 0)) {
      fail(node, key, "expected " + std::string(expected) + ", got " + shown);
      return std::nullopt;
    }
    if (seconds < min_timeout_seconds) {
      fail(node, key, "expected at least 0.001 seconds (1 ms), got " + shown);
      return std::nullopt;
    }
    if (!(seconds <= static_cast<double>(max_timeout_seconds))) {
      fail(node, key, "expected at most " + std::to_string(max_timeout_seconds) +
                          " seconds (one year), got " + shown);
      return std::nullopt;
    }
    return std::chrono::milliseconds(std::llround(seconds * 1000.0));
  }

  void timeouts(const toml::node& node) {
    const auto* t = node.as_table();
    if (!t) {
      wrong_type(node, "timeouts", "a table");
      return;
    }
    for (auto&& [key, item] : *t) {
      const std::string_view k = key.str();
      const std::string full = "timeouts." + std::string(k);
      std::chrono::milliseconds* target = nullptr;
      if (k == "min_data_rate") {   // bytes per second, not a duration (0 turns it off)
        if (auto v = integer_value(full, item, 0, min_data_rate_limit,
                                   "an integer number of bytes per second from 0 to " +
                                       std::to_string(min_data_rate_limit)))
          out_.timeouts.min_data_rate = static_cast<std::uint64_t>(*v);
        continue;
      }
      if (k == "client_idle") target = &out_.timeouts.client_idle;
      else if (k == "client_command") target = &out_.timeouts.client_command;
      else if (k == "upstream_connect") target = &out_.upstream_connect_timeout;
      else if (k == "upstream_greeting") target = &out_.timeouts.upstream_greeting;
      else if (k == "upstream_reply") target = &out_.timeouts.upstream_reply;
      else if (k == "upstream_data_init") target = &out_.timeouts.upstream_data_init;
      else if (k == "upstream_data_end") target = &out_.timeouts.upstream_data_end;
      else if (k == "drain") target = &out_.drain_timeout;
      if (!target) {
        fail(item, full, "unknown key");
        continue;
      }
      if (auto v = seconds_value(full, item)) *target = *v;
    }
  }

  std::optional<bool> bool_value(std::string_view key, const toml::node& node) {
    const auto* b = node.as_boolean();
    if (!b) {
      wrong_type(node, key, "true or false");
      return std::nullopt;
    }
    return b->get();
  }

  std::optional<fs::path> file_value(std::string_view key, const toml::node& node, bool must_exist) {
    const auto* s = string_value(key, node, "a string (a file path)");
    if (!s) return std::nullopt;
    if (s->empty() || s->find('\0') != std::string::npos) {
      fail(node, key, "expected a file path, got '" + echo(*s) + "'");
      return std::nullopt;
    }
    fs::path p = resolve(*s);
    std::error_code ec;
    if (must_exist && !fs::is_regular_file(p, ec)) {
      fail(node, key, "file not found: " + echo_path(p.native()));
      return std::nullopt;
    }
    return p;
  }

  void tls(const toml::node& node) {
    const auto* t = node.as_table();
    if (!t) {
      wrong_type(node, "tls", "a table");
      return;
    }
    auto& out = out_.tls;
    bool insecure_seen = false, insecure = false;
    const toml::node* insecure_node = nullptr;
    const toml::node* verify_node = nullptr;
    for (auto&& [key, item] : *t) {
      const std::string_view k = key.str();
      const std::string full = "tls." + std::string(k);
      if (k == "cert") {
        if (auto p = file_value(full, item, true)) out.cert_file = *p;
      } else if (k == "key") {
        if (auto p = file_value(full, item, true)) out.key_file = *p;
      } else if (k == "ca_file") {
        if (auto p = file_value(full, item, true)) out.ca_file = *p;
      } else if (k == "state_dir") {
        if (auto p = path_value(full, item)) out.state_dir = *p;
      } else if (k == "listen") {
        if (auto e = endpoint_value(full, item, false)) out.listen = *e;
      } else if (k == "starttls") {
        if (auto b = bool_value(full, item)) out.offer_starttls = *b;
      } else if (k == "upstream") {
        static constexpr std::string_view expected = "one of mirror|required|opportunistic|never";
        const auto* s = string_value(full, item, expected);
        if (!s) continue;
        if (auto m = protocol::parse_upstream_tls_mode(*s)) out.upstream = *m;
        else fail(item, full, "expected " + std::string(expected) + ", got '" + echo(*s) + "'");
      } else if (k == "upstream_implicit") {
        if (auto b = bool_value(full, item)) out.upstream_implicit = *b;
      } else if (k == "insecure_upstream") {   // the old spelling of verify_upstream = "none"
        if (auto b = bool_value(full, item)) {
          insecure_seen = true;
          insecure = *b;
          if (*b) insecure_node = &item;
        }
      } else if (k == "verify_upstream") {
        static constexpr std::string_view expected = "one of none|record|require";
        const auto* s = string_value(full, item, expected);
        if (!s) continue;
        if (auto v = parse_upstream_verify(*s)) {
          out.verify_upstream = *v;
          verify_node = &item;
        } else {
          fail(item, full, "expected " + std::string(expected) + ", got '" + echo(*s) + "'");
        }
      } else if (k == "upstream_fingerprint") {
        const auto* s = string_value(full, item, "\"sha256:HEX\"");
        if (!s) continue;
        std::string why;
        if (auto fp = parse_sha256_fingerprint(*s, why)) out.upstream_fingerprint = *fp;
        else fail(item, full, why);
      } else if (k == "handshake_timeout") {
        if (auto v = seconds_value(full, item)) out.handshake_timeout = *v;
      } else {
        fail(item, full, "unknown key");
      }
    }
    if ((out.cert_file.empty()) != (out.key_file.empty()))
      fail(node, "tls", "cert and key go together: set both or neither");
    if (insecure_seen && verify_node && insecure != (*out.verify_upstream == upstream_verify::none))
      fail(*verify_node, "tls.verify_upstream",
           "contradicts insecure_upstream = " + std::string(insecure ? "true" : "false") +
               " (insecure_upstream = true is the old spelling of verify_upstream = \"none\")");
    else if (insecure && !verify_node)
      out.verify_upstream = upstream_verify::none;
    if (!out.upstream_fingerprint.empty() && out.verify_upstream == upstream_verify::none)
      fail(verify_node ? *verify_node : insecure_node ? *insecure_node : node, "tls.upstream_fingerprint",
           "a pinned fingerprint is a verification: it cannot go with verify_upstream = \"none\"");
  }

  void sink(const toml::node& node) {
    const auto* t = node.as_table();
    if (!t) {
      wrong_type(node, "sink", "a table");
      return;
    }
    for (auto&& [key, item] : *t) {
      const std::string_view k = key.str();
      const std::string full = "sink." + std::string(k);
      std::string* target = k == "auth_user" ? &out_.sink.auth_user : k == "auth_password" ? &out_.sink.auth_password : nullptr;
      if (!target) {
        fail(item, full, "unknown key");
        continue;
      }
      if (const auto* s = string_value(full, item, "a string")) *target = *s;
    }
  }

  std::string shown_name_;   // the file name as given, escaped
  fs::path base_dir_;
  config& out_;
  bool failed_ = false;
  std::uint32_t line_ = 0;
  std::string error_;
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

std::optional<config> load_impl(std::string_view toml_text, std::string_view source_name,
                                const config& base, std::string& error) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    error = echo_path(source_name) + ":" + std::to_string(e.source().begin.line) + ": " +
            one_line(e.description());
    return std::nullopt;
  }
  config out = base;
  loader l(echo_path(source_name), base_directory(fs::path(source_name)), out);
  l.apply(root);
  if (l.failed()) {
    error = l.error();
    return std::nullopt;
  }
  if (auto duplicate = policies::duplicate_rule_name(out.faults)) {
    error = *duplicate;
    return std::nullopt;
  }
  error.clear();
  return out;
}

// Reads at most max_config_file_bytes + 1 bytes; errno-based reason on failure.
bool read_file(const fs::path& file, std::string& text, std::string& reason) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    reason = std::generic_category().message(errno);
    return false;
  }
  text.clear();
  char buf[8192];
  bool ok = true;
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      reason = std::generic_category().message(errno);
      ok = false;
      break;
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > max_config_file_bytes) {
      reason = "file larger than " + std::to_string(max_config_file_bytes) + " bytes";
      ok = false;
      break;
    }
  }
  ::close(fd);
  return ok;
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
  const std::string shown = "'" + echo(text) + "'";
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

fs::path default_captures_dir() {
  try {
    if (const char* v = std::getenv("MAILTAP_CAPTURES"); v && *v) return fs::path(v);
    // XDG Base Directory spec: a relative $XDG_STATE_HOME is invalid and is ignored.
    if (const char* v = std::getenv("XDG_STATE_HOME"); v && *v == '/')
      return fs::path(v) / "mailtap" / "captures";
    std::string home;
    if (const char* v = std::getenv("HOME"); v && *v) {
      home = v;
    } else {
      long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
      std::vector<char> buf(size > 0 ? static_cast<std::size_t>(size) : 16384);
      passwd pw{};
      passwd* found = nullptr;
      if (::getpwuid_r(::getuid(), &pw, buf.data(), buf.size(), &found) == 0 && found &&
          found->pw_dir && *found->pw_dir)
        home = found->pw_dir;
    }
    if (!home.empty()) return fs::path(home) / ".local" / "state" / "mailtap" / "captures";
    return fs::path(".") / "mailtap-captures";
  } catch (...) {
    return fs::path(".") / "mailtap-captures";
  }
}

fs::path default_state_dir() {
  if (const char* v = std::getenv("XDG_STATE_HOME"); v && *v == '/') return fs::path(v) / "mailtap";
  if (const char* v = std::getenv("HOME"); v && *v) return fs::path(v) / ".local" / "state" / "mailtap";
  return fs::path(".") / "mailtap-state";
}

std::optional<config> load_config_text(std::string_view toml_text, std::string_view source_name,
                                       const config& base, std::string& error) {
  try {
    return load_impl(toml_text, source_name, base, error);
  } catch (const std::exception& e) {
    error = echo_path(source_name) + ": internal error: " + one_line(e.what());
  } catch (...) {
    error = echo_path(source_name) + ": internal error";
  }
  return std::nullopt;
}

std::optional<config> load_config_file(const fs::path& file, const config& base,
                                       std::string& error) {
  try {
    std::string text;
    std::string reason;
    if (!read_file(file, text, reason)) {
      error = echo_path(file.native()) + ": cannot read: " + reason;
      return std::nullopt;
    }
    return load_impl(text, file.string(), base, error);
  } catch (const std::exception& e) {
    error = echo_path(file.native()) + ": internal error: " + one_line(e.what());
  } catch (...) {
    error = echo_path(file.native()) + ": internal error";
  }
  return std::nullopt;
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
      error = "expected \"sha256:\" and 64 hex digits (colons optional), got a '" + echo(std::string(1, c)) + "'";
      return std::nullopt;
    }
    if (digits.size() == 2 * sha256_bytes) break;
    digits += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  std::size_t count = 0;
  for (char c : hex) count += c != ':';
  if (count != 2 * sha256_bytes) {
    error = "expected a SHA-256 fingerprint (64 hex digits), got " + std::to_string(count);
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
