// The guard in front of toml++ against keys nested so deep that parsing them overflows the
// stack: toml++ (3.3) descends once per part of a dotted key or table header (`a.a.a... = 1`,
// `[a.a.a...]`) and caps only arrays and inline tables (TOML_MAX_NESTED_VALUES). A key's parts
// are on one line (TOML 1.0: keys, headers and inline tables do not span lines), so the dots of
// one line, outside strings and comments, bound the nesting it can make.
#pragma once
#include <cstddef>
#include <optional>
#include <string_view>

namespace mailtap::config_reader {

// More dots than this in one line (outside strings and comments) are refused before parsing:
// far beyond any configuration, and a few hundred kilobytes of stack at most.
inline constexpr std::size_t max_dots_per_line = 1000;

// The first line (from 1) with more than max_dots_per_line dots outside strings and comments.
std::optional<std::size_t> line_nested_too_deep(std::string_view text);

}  // namespace mailtap::config_reader
