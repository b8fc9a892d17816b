// Typed reads out of one [[fault]] table, shared by the scenario loader (common keys) and
// each fault type's read/finish functions (its own keys). Keeps the first problem in file
// order as one line "FILE:LINE: key 'K': problem". Never throws. One reader per table,
// single-threaded.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

namespace mailtap::policies {

class param_reader {
 public:
  param_reader(std::string_view file, const toml::table& table) : file_(file), table_(table) {}

  // The key about to be read and its value (the loader sets it before each read call).
  void focus(std::string_view key, const toml::node& value) {
    key_ = key;
    value_ = &value;
  }
  std::string_view key() const { return key_; }
  const toml::node& value() const { return *value_; }
  const toml::table& table() const { return table_; }

  // Each returns nullopt after recording a problem for the focused key.
  std::optional<std::int64_t> integer(std::int64_t lo, std::int64_t hi);
  std::optional<double> number(double lo, double hi);   // integer or float
  std::optional<bool> boolean();
  // One line of printable ASCII, non-empty, at most max_chars.
  std::optional<std::string> text(std::size_t max_chars);
  // A string that must be one of `options`.
  std::optional<std::string> choice(std::initializer_list<std::string_view> options);
  std::optional<std::uint64_t> duration();
  // An array of verbs or EHLO keywords ([A-Za-z0-9][A-Za-z0-9-]*), upper-cased, no duplicates.
  std::optional<std::vector<std::string>> words();

  bool has(std::string_view key) const { return table_.contains(key); }
  // A problem with the focused key, with `key` (at its value's line, or the table's when
  // absent), or with the table as a whole.
  void fail(std::string_view problem) { fail_at(*value_, key_, problem); }
  void fail_key(std::string_view key, std::string_view problem);
  void fail_at(const toml::node& node, std::string_view key, std::string_view problem);
  void wrong_type(std::string_view expected);

  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }

 private:
  std::string_view file_;
  const toml::table& table_;
  std::string_view key_;
  const toml::node* value_ = nullptr;
  bool failed_ = false;
  std::uint32_t line_ = 0;
  std::string error_;
};

// "string", "integer", ... for "expected X, got Y".
std::string_view toml_type_name(toml::node_type t);
// A value echoed in an error: controls escaped, cut short.
std::string echo(std::string_view text);

}  // namespace mailtap::policies
