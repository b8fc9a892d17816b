// Counting a TOML document's dots per line outside strings and comments (key_depth.hpp).
#include "config_reader/key_depth.hpp"

namespace mailtap::config_reader {

std::optional<std::size_t> line_nested_too_deep(std::string_view text) {
  enum class in { code, comment, basic, literal, ml_basic, ml_literal };
  in state = in::code;
  std::size_t line = 1;
  std::size_t dots = 0;
  auto starts = [&](std::size_t i, std::string_view s) { return text.substr(i, s.size()) == s; };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
      dots = 0;
      if (state == in::comment || state == in::basic || state == in::literal) state = in::code;
      continue;
    }
    switch (state) {
      case in::code:
        if (c == '#') state = in::comment;
        else if (starts(i, "\"\"\"")) state = in::ml_basic, i += 2;
        else if (starts(i, "'''")) state = in::ml_literal, i += 2;
        else if (c == '"') state = in::basic;
        else if (c == '\'') state = in::literal;
        else if (c == '.' && ++dots > max_dots_per_line) return line;
        break;
      case in::comment:
        break;
      case in::basic:
      case in::ml_basic:
        if (c == '\\') {
          if (i + 1 < text.size() && text[i + 1] == '\n') continue;   // a line-ending backslash: the newline counts
          ++i;
        } else if (state == in::basic && c == '"') {
          state = in::code;
        } else if (state == in::ml_basic && starts(i, "\"\"\"")) {
          state = in::code;
          i += 2;
        }
        break;
      case in::literal:
        if (c == '\'') state = in::code;
        break;
      case in::ml_literal:
        if (starts(i, "'''")) state = in::code, i += 2;
        break;
    }
  }
  return std::nullopt;
}

}  // namespace mailtap::config_reader
