// A TOML document from a file or from text: the file read with a size cap, the text parsed by
// toml++, a syntax error made one line "FILE:LINE: description". Never throws. Thread-safe.
#pragma once
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <toml++/toml.h>

namespace mailtap::config_reader {

struct file_text {
  std::string text;
  std::string problem;    // empty when read; else the reason (strerror, or "file larger than N bytes")
  bool opened = false;    // false: the file could not be opened at all
  bool ok() const { return problem.empty(); }
};

// At most max_bytes (one more is read to tell a file that is too large).
file_text read_file(const std::filesystem::path& file, std::size_t max_bytes);

// The parsed document, or nullopt with `error` set to "FILE:LINE: description" (FILE is
// `source_name`, escaped). `source_name` is also what toml++ records as each node's path.
std::optional<toml::table> parse(std::string_view text, std::string_view source_name, std::string& error);

}  // namespace mailtap::config_reader
