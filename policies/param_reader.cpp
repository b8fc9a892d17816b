// Value checks and the first-in-file-order error rule (toml::table iterates by key, so a
// later key may be read first; the earliest line wins, like relay/config.cpp).
#include "policies/param_reader.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "policies/duration.hpp"
#include "policies/limits.hpp"
#include "protocol/action.hpp"
#include "protocol/command.hpp"

namespace mailtap::policies {
namespace {

// Echoed values are cut to this many characters so the error stays a short line.
constexpr std::size_t max_echo_chars = 80;

std::string show_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

bool is_word(std::string_view w) {
  if (w.empty() || w.size() > limits::word_chars) return false;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const char c = w[i];
    const bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && !(i > 0 && c == '-')) return false;
  }
  return true;
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

std::string echo(std::string_view text) { return protocol::escape_bytes(text, max_echo_chars); }

void param_reader::fail_at(const toml::node& node, std::string_view key, std::string_view problem) {
  const auto line = node.source().begin.line;
  if (failed_ && line >= line_) return;
  failed_ = true;
  line_ = line;
  error_ = std::string(file_);
  if (line > 0) error_ += ":" + std::to_string(line);
  error_ += ": key '" + echo(key) + "': ";
  error_ += problem;
}

void param_reader::fail_key(std::string_view key, std::string_view problem) {
  if (const toml::node* n = table_.get(key)) fail_at(*n, key, problem);
  else fail_at(table_, key, problem);
}

void param_reader::wrong_type(std::string_view expected) {
  fail("expected " + std::string(expected) + ", got " + std::string(toml_type_name(value_->type())));
}

std::optional<std::int64_t> param_reader::integer(std::int64_t lo, std::int64_t hi) {
  const std::string expected = "an integer from " + std::to_string(lo) + " to " + std::to_string(hi);
  const auto* i = value_->as_integer();
  if (!i) {
    wrong_type(expected);
    return std::nullopt;
  }
  const std::int64_t v = i->get();
  if (v < lo || v > hi) {
    fail("expected " + expected + ", got " + std::to_string(v));
    return std::nullopt;
  }
  return v;
}

std::optional<double> param_reader::number(double lo, double hi) {
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

std::optional<bool> param_reader::boolean() {
  const auto* b = value_->as_boolean();
  if (!b) {
    wrong_type("true or false");
    return std::nullopt;
  }
  return b->get();
}

std::optional<std::string> param_reader::text(std::size_t max_chars) {
  const auto* s = value_->as_string();
  if (!s) {
    wrong_type("a string");
    return std::nullopt;
  }
  const std::string& v = s->get();
  if (v.empty()) {
    fail("expected a non-empty string");
    return std::nullopt;
  }
  if (v.size() > max_chars) {
    fail("longer than " + std::to_string(max_chars) + " characters");
    return std::nullopt;
  }
  for (unsigned char c : v) {
    if (c < 0x20 || c > 0x7e) {
      fail("only printable ASCII on one line is allowed, got '" + echo(v) + "'");
      return std::nullopt;
    }
  }
  return v;
}

std::optional<std::string> param_reader::choice(std::initializer_list<std::string_view> options) {
  std::string expected = "one of ";
  for (auto o : options) {
    if (expected.size() > 7) expected += '|';
    expected += o;
  }
  const auto* s = value_->as_string();
  if (!s) {
    wrong_type(expected);
    return std::nullopt;
  }
  if (std::find(options.begin(), options.end(), std::string_view(s->get())) == options.end()) {
    fail("expected " + expected + ", got '" + echo(s->get()) + "'");
    return std::nullopt;
  }
  return s->get();
}

std::optional<std::uint64_t> param_reader::duration() {
  const auto* s = value_->as_string();
  if (!s) {
    wrong_type("a duration string like \"250ms\", \"5s\", \"2m\" or \"1h\"");
    return std::nullopt;
  }
  std::string problem;
  auto d = parse_duration(s->get(), problem);
  if (!d) fail(problem);
  return d;
}

std::optional<std::vector<std::string>> param_reader::words() {
  static constexpr std::string_view expected = "an array of verbs or keywords";
  const auto* arr = value_->as_array();
  if (!arr) {
    wrong_type(expected);
    return std::nullopt;
  }
  if (arr->size() > limits::words_per_list) {
    fail("more than " + std::to_string(limits::words_per_list) + " entries");
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
    if (!is_word(s->get())) {
      fail_at(item, key_, "'" + echo(s->get()) + "' is not a verb or keyword (letters, digits, '-'; at most " +
                              std::to_string(limits::word_chars) + ")");
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

}  // namespace mailtap::policies
