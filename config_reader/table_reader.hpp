// Typed reads out of one TOML table, for everything mailtap reads from TOML: the config file
// (relay/config.cpp) and [[fault]] rules (policies/scenario_loader.cpp and the fault types'
// own keys). A reader visits a table's keys (each(), which reports an unknown key), reads the
// focused value with a typed getter, and reports every problem to one problem_log per
// document, which keeps the first in file order as one line "FILE:LINE: key 'K': problem".
// Never throws (toml++ is built with exceptions only for parse errors, caught by document.hpp).
// Single-threaded: one log and its readers belong to one load.
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

namespace mailtap::config_reader {

// The first problem of one document in file order. toml::table iterates by key, not by line,
// so a later line may be reported first; the earliest line wins (ties: the first reported).
class problem_log {
 public:
  explicit problem_log(std::string shown_file) : file_(std::move(shown_file)) {}
  const std::string& file() const { return file_; }   // escaped, as it appears in messages

  // "FILE:LINE: key 'KEY': problem" at the node's line.
  void at(const toml::node& node, std::string_view key, std::string_view problem);
  // A message formatted elsewhere (another file's problem, found through this one), ranked at `line`.
  void at_line(std::uint32_t line, std::string message);

  bool failed() const { return failed_; }
  const std::string& first() const { return first_; }

 private:
  std::string file_;
  bool failed_ = false;
  std::uint32_t line_ = 0;
  std::string first_;
};

class table_reader {
 public:
  // `prefix` is put before every key in messages ("tls." for the [tls] table).
  table_reader(problem_log& log, const toml::table& table, std::string prefix = {})
      : log_(log), table_(table), prefix_(std::move(prefix)) {}

  // Visits every key (in key order): focuses it and calls visit(key), which reads it and
  // returns false when it does not know the key; that is reported as "unknown key".
  template <typename Visit>
  void each(Visit&& visit) {
    for (auto&& [key, node] : table_) {
      focus(key.str(), node);
      if (!visit(key_)) fail("unknown key");
    }
  }

  // The key about to be read and its value.
  void focus(std::string_view key, const toml::node& value) {
    key_ = key;
    value_ = &value;
  }
  std::string_view key() const { return key_; }
  std::string full_key() const { return prefix_ + std::string(key_); }
  const toml::node& value() const { return *value_; }
  const toml::table& table() const { return table_; }
  bool has(std::string_view key) const { return table_.contains(key); }

  // ---- typed getters: each reads the focused value, and returns nullopt (or null) after
  // reporting a problem with it.
  std::optional<std::int64_t> integer(std::int64_t lo, std::int64_t hi);   // "an integer from LO to HI"
  std::optional<std::int64_t> integer(std::int64_t lo, std::int64_t hi, std::string_view expected);
  std::optional<double> number(double lo, double hi);   // integer or float
  std::optional<bool> boolean();
  // Any string; `expected` names what was wanted when the value is of another type.
  const std::string* string(std::string_view expected);
  // One line of printable ASCII, non-empty, at most max_chars.
  std::optional<std::string> text(std::size_t max_chars);
  // A string that must be one of `options` (an enum's names).
  std::optional<std::string> choice(std::initializer_list<std::string_view> options);
  std::optional<std::string> choice(std::span<const std::string_view> options);
  // A duration string ("250ms", "5s", "2m", "1h"; duration.hpp), in microseconds.
  std::optional<std::uint64_t> duration();
  // A timeout: a number of seconds (integer or float) or a duration string, 1 ms to one year.
  std::optional<std::chrono::milliseconds> timeout();
  // A byte count: an integer, or a string with a unit ("64KiB", "10MB"; duration.hpp), lo..hi.
  std::optional<std::uint64_t> byte_size(std::uint64_t lo, std::uint64_t hi);
  // An array of verbs or keywords ([A-Za-z0-9][A-Za-z0-9-]*), upper-cased, no duplicates.
  std::optional<std::vector<std::string>> words(std::size_t max_entries, std::size_t max_chars);
  // A path, relative ones resolved against `base` (the file's directory). A directory need
  // not exist; a file must when `must_exist`.
  std::optional<std::filesystem::path> directory(const std::filesystem::path& base);
  std::optional<std::filesystem::path> file(const std::filesystem::path& base, bool must_exist);
  // A sub-table, as a reader whose keys are prefixed with this key ("tls.cert").
  std::optional<table_reader> section();

  // ---- problems
  // With the focused key, with `key` (at its value's line, or the table's when absent), or
  // with `key` at `node` (an array element).
  void fail(std::string_view problem) { fail_at(*value_, key_, problem); }
  void fail_key(std::string_view key, std::string_view problem);
  void fail_at(const toml::node& node, std::string_view key, std::string_view problem);
  void wrong_type(std::string_view expected);
  bool failed() const { return log_.failed(); }
  problem_log& log() const { return log_; }

 private:
  problem_log& log_;
  const toml::table& table_;
  std::string prefix_;
  std::string_view key_;
  const toml::node* value_ = nullptr;
};

// "string", "integer", ... for "expected X, got Y".
std::string_view toml_type_name(toml::node_type t);
// A value or key echoed in a message: controls escaped (one line), the bidirectional ones
// too, safe on a terminal (protocol/terminal_text.hpp), cut short.
std::string echo(std::string_view text);
// A file name in a message: escaped as echo(), room for PATH_MAX.
std::string echo_path(std::string_view path);
// A description from toml++ or an exception, made one line.
std::string one_line(std::string_view text);

}  // namespace mailtap::config_reader
