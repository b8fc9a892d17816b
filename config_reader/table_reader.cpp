// Value checks, their messages, and the first-in-file-order rule.
#include "config_reader/table_reader.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "config_reader/duration.hpp"
#include "protocol/action.hpp"
#include "protocol/command.hpp"
#include "protocol/terminal_text.hpp"

namespace mailtap::config_reader {
namespace {

namespace fs = std::filesystem;

// Echoed values and keys are cut to this many characters so the message stays a short line.
constexpr std::size_t max_echo_chars = 200;
constexpr std::size_t max_echo_path_chars = 4096;   // PATH_MAX on Linux
// Timeouts: at least 1 ms (they are held in milliseconds) and at most one year, so that
// now + timeout never overflows a steady_clock time point.
constexpr double min_timeout_seconds = 0.001;
constexpr std::int64_t max_timeout_seconds = max_duration_us / 1'000'000;

std::string show_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

bool is_word(std::string_view w, std::size_t max_chars) {
  if (w.empty() || w.size() > max_chars) return false;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const char c = w[i];
    const bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && !(i > 0 && c == '-')) return false;
  }
  return true;
}

fs::path resolve(const fs::path& base, const std::string& text) {
  fs::path p(text);
  if (p.is_relative()) p = base / p;
  return p.lexically_normal();
}

}  // namespace

std::string_view toml_type_name(toml::node_type t) {
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

// C0 controls by escape_bytes, then what else could drive or reorder a terminal's line (C1 and
// bidirectional controls, U+2028/U+2029, bytes that are not UTF-8: protocol/terminal_text.hpp).
std::string echo(std::string_view text) { return protocol::terminal_safe(protocol::escape_bytes(text, max_echo_chars)); }
std::string echo_path(std::string_view path) {
  return protocol::terminal_safe(protocol::escape_bytes(path, max_echo_path_chars));
}

std::string one_line(std::string_view text) {
  std::string out(text);
  std::replace_if(out.begin(), out.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return out;
}

// ---- problem_log

void problem_log::at(const toml::node& node, std::string_view key, std::string_view problem) {
  const std::uint32_t line = node.source().begin.line;
  std::string message = file_;
  if (line > 0) message += ":" + std::to_string(line);
  message += ": key '" + echo(key) + "': ";
  message += problem;
  at_line(line, std::move(message));
}

void problem_log::at_line(std::uint32_t line, std::string message) {
  if (failed_ && line >= line_) return;
  failed_ = true;
  line_ = line;
  // Whatever a problem quotes (a fault type's own text, a message from another file) leaves
  // here safe on a terminal; what echo() escaped already passes unchanged.
  first_ = protocol::terminal_safe(message);
}

// ---- problems

void table_reader::fail_at(const toml::node& node, std::string_view key, std::string_view problem) {
  log_.at(node, prefix_ + std::string(key), problem);
}

void table_reader::fail_key(std::string_view key, std::string_view problem) {
  if (const toml::node* n = table_.get(key)) fail_at(*n, key, problem);
  else fail_at(table_, key, problem);
}

void table_reader::wrong_type(std::string_view expected) {
  fail("expected " + std::string(expected) + ", got " + std::string(toml_type_name(value_->type())));
}

// ---- getters

std::optional<std::int64_t> table_reader::integer(std::int64_t lo, std::int64_t hi) {
  return integer(lo, hi, "an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
}

std::optional<std::int64_t> table_reader::integer(std::int64_t lo, std::int64_t hi, std::string_view expected) {
  const auto* i = value_->as_integer();
  if (!i) {
    wrong_type(expected);
    return std::nullopt;
  }
  const std::int64_t v = i->get();
  if (v < lo || v > hi) {
    fail("expected " + std::string(expected) + ", got " + std::to_string(v));
    return std::nullopt;
  }
  return v;
}

std::optional<double> table_reader::number(double lo, double hi) {
  const std::string expected = "a number from " + show_number(lo) + " to " + show_number(hi);
  double v = 0;
  if (const auto* i = value_->as_integer()) v = static_cast<double>(i->get());
  else if (const auto* f = value_->as_floating_point()) v = f->get();
  else {
    wrong_type(expected);
    return std::nullopt;
  }
  if (!(v >= lo && v <= hi)) {   // NaN fails too
    fail("expected " + expected + ", got " + show_number(v));
    return std::nullopt;
  }
  return v;
}

std::optional<bool> table_reader::boolean() {
  const auto* b = value_->as_boolean();
  if (!b) {
    wrong_type("true or false");
    return std::nullopt;
  }
  return b->get();
}

const std::string* table_reader::string(std::string_view expected) {
  const auto* s = value_->as_string();
  if (!s) {
    wrong_type(expected);
    return nullptr;
  }
  return &s->get();
}

std::optional<std::string> table_reader::text(std::size_t max_chars) {
  const std::string* v = string("a string");
  if (!v) return std::nullopt;
  if (v->empty()) {
    fail("expected a non-empty string");
    return std::nullopt;
  }
  if (v->size() > max_chars) {
    fail("longer than " + std::to_string(max_chars) + " characters");
    return std::nullopt;
  }
  for (unsigned char c : *v) {
    if (c < 0x20 || c > 0x7e) {
      fail("only printable ASCII on one line is allowed, got '" + echo(*v) + "'");
      return std::nullopt;
    }
  }
  return *v;
}

std::optional<std::string> table_reader::choice(std::initializer_list<std::string_view> options) {
  return choice(std::span<const std::string_view>(options.begin(), options.size()));
}

std::optional<std::string> table_reader::choice(std::span<const std::string_view> options) {
  std::string expected = "one of ";
  for (auto o : options) {
    if (expected.size() > 7) expected += '|';
    expected += o;
  }
  const std::string* s = string(expected);
  if (!s) return std::nullopt;
  if (std::find(options.begin(), options.end(), std::string_view(*s)) == options.end()) {
    fail("expected " + expected + ", got '" + echo(*s) + "'");
    return std::nullopt;
  }
  return *s;
}

std::optional<std::uint64_t> table_reader::duration() {
  const std::string* s = string("a duration string like \"250ms\", \"5s\", \"2m\", \"1h\" or \"7d\"");
  if (!s) return std::nullopt;
  std::string problem;
  auto d = parse_duration(*s, problem);
  if (!d) fail(problem);
  return d;
}

std::optional<std::chrono::milliseconds> table_reader::timeout() {
  static constexpr std::string_view expected = "a number of seconds > 0 or a duration string like \"5m\"";
  if (const auto* str = value_->as_string()) {
    const std::string& text = str->get();
    std::string problem;
    const auto us = parse_duration(text, problem);
    if (!us && problem.starts_with("expected")) {
      fail("expected a number of seconds or a duration like \"250ms\", \"5s\", \"5m\", \"1h\" or \"7d\", got '" + echo(text) +
           "'");
      return std::nullopt;
    }
    if (!us) {
      fail(problem + ", got '" + echo(text) + "'");
      return std::nullopt;
    }
    if (*us < 1000) {
      fail("expected at least 1ms, got '" + echo(text) + "'");
      return std::nullopt;
    }
    return std::chrono::milliseconds(*us / 1000);   // whole milliseconds: the parser has no finer unit
  }
  double seconds = 0;
  if (const auto* i = value_->as_integer()) seconds = static_cast<double>(i->get());
  else if (const auto* f = value_->as_floating_point()) seconds = f->get();
  else {
    wrong_type(expected);
    return std::nullopt;
  }
  const std::string shown = value_->is_integer() ? std::to_string(value_->as_integer()->get()) : show_number(seconds);
  if (!(seconds > 0)) {
    fail("expected " + std::string(expected) + ", got " + shown);
    return std::nullopt;
  }
  if (seconds < min_timeout_seconds) {
    fail("expected at least 0.001 seconds (1 ms), got " + shown);
    return std::nullopt;
  }
  if (!(seconds <= static_cast<double>(max_timeout_seconds))) {
    fail("expected at most " + std::to_string(max_timeout_seconds) + " seconds (one year), got " + shown);
    return std::nullopt;
  }
  return std::chrono::milliseconds(std::llround(seconds * 1000.0));
}

std::optional<std::uint64_t> table_reader::byte_size(std::uint64_t lo, std::uint64_t hi) {
  const std::string expected = "a size in bytes from " + std::to_string(lo) + " to " + std::to_string(hi) +
                               " (an integer, or a string like \"512KiB\", \"10MB\", \"2GiB\")";
  std::uint64_t v = 0;
  std::string shown;
  if (const auto* i = value_->as_integer()) {
    if (i->get() < 0) {
      fail("expected " + expected + ", got " + std::to_string(i->get()));
      return std::nullopt;
    }
    v = static_cast<std::uint64_t>(i->get());
    shown = std::to_string(v);
  } else if (const auto* s = value_->as_string()) {
    std::string problem;
    auto parsed = parse_byte_size(s->get(), problem);
    if (!parsed) {
      fail(problem);
      return std::nullopt;
    }
    v = *parsed;
    shown = "'" + echo(s->get()) + "'";
  } else {
    wrong_type(expected);
    return std::nullopt;
  }
  if (v < lo || v > hi) {
    fail("expected " + expected + ", got " + shown);
    return std::nullopt;
  }
  return v;
}

std::optional<std::vector<std::string>> table_reader::words(std::size_t max_entries, std::size_t max_chars) {
  static constexpr std::string_view expected = "an array of verbs or keywords";
  const auto* arr = value_->as_array();
  if (!arr) {
    wrong_type(expected);
    return std::nullopt;
  }
  if (arr->size() > max_entries) {
    fail("more than " + std::to_string(max_entries) + " entries");
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (const toml::node& item : *arr) {
    const auto* s = item.as_string();
    if (!s) {
      fail_at(item, key_, "expected " + std::string(expected) + ", got an element of type " +
                              std::string(toml_type_name(item.type())));
      return std::nullopt;
    }
    if (!is_word(s->get(), max_chars)) {
      fail_at(item, key_, "'" + echo(s->get()) + "' is not a verb or keyword (letters, digits, '-'; at most " +
                              std::to_string(max_chars) + ")");
      return std::nullopt;
    }
    std::string w = protocol::to_upper(s->get());
    if (std::find(out.begin(), out.end(), w) != out.end()) {
      fail_at(item, key_, "'" + echo(s->get()) + "' is listed twice");
      return std::nullopt;
    }
    out.push_back(std::move(w));
  }
  return out;
}

std::optional<fs::path> table_reader::directory(const fs::path& base) {
  const std::string* s = string("a string (a directory path)");
  if (!s) return std::nullopt;
  if (s->empty()) {
    fail("expected a directory path, got an empty string");
    return std::nullopt;
  }
  if (s->find('\0') != std::string::npos) {
    fail("path contains a NUL character");
    return std::nullopt;
  }
  return resolve(base, *s);
}

std::optional<fs::path> table_reader::file(const fs::path& base, bool must_exist) {
  const std::string* s = string("a string (a file path)");
  if (!s) return std::nullopt;
  if (s->empty() || s->find('\0') != std::string::npos) {
    fail("expected a file path, got '" + echo(*s) + "'");
    return std::nullopt;
  }
  fs::path p = resolve(base, *s);
  std::error_code ec;
  if (must_exist) {
    const auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) {
      fail("file not found: " + echo_path(p.native()));
      return std::nullopt;
    }
    if (!fs::is_regular_file(st)) {
      fail("not a regular file: " + echo_path(p.native()));
      return std::nullopt;
    }
  }
  return p;
}

std::optional<table_reader> table_reader::section() {
  const auto* t = value_->as_table();
  if (!t) {
    wrong_type("a table");
    return std::nullopt;
  }
  return table_reader(log_, *t, full_key() + ".");
}

}  // namespace mailtap::config_reader
