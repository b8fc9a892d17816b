// Duration strings: digits then one of ms, s, m, h, d; byte sizes: digits then an optional
// SI or IEC unit. No fractions, no spaces, no sign.
#include "config_reader/duration.hpp"

#include <limits>

#include "protocol/action.hpp"
#include "protocol/terminal_text.hpp"

namespace mailtap::config_reader {

std::optional<std::uint64_t> parse_duration(std::string_view text, std::string& problem) {
  static constexpr std::string_view expected = "expected a duration like \"250ms\", \"5s\", \"2m\", \"1h\" or \"7d\"";
  std::size_t i = 0;
  std::uint64_t value = 0;
  // 19 digits fit in 64 bits; the one-year cap is checked after scaling.
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    if (i >= 12) {
      problem = "duration is longer than one year";
      return std::nullopt;
    }
    value = value * 10 + static_cast<std::uint64_t>(text[i] - '0');
    ++i;
  }
  const std::string_view unit = text.substr(i);
  std::uint64_t scale = 0;
  if (unit == "ms") scale = 1'000;
  else if (unit == "s") scale = 1'000'000;
  else if (unit == "m") scale = 60'000'000;
  else if (unit == "h") scale = 3'600'000'000;
  else if (unit == "d") scale = 86'400'000'000;   // retention ages: "7d"
  if (i == 0 || scale == 0) {
    // Escaped: errors are one line, whatever the string held.
    problem = std::string(expected) + ", got '" + protocol::terminal_safe(protocol::escape_bytes(text, 40)) + "'";
    return std::nullopt;
  }
  if (value > max_duration_us / scale) {
    problem = "duration is longer than one year";
    return std::nullopt;
  }
  return value * scale;
}

std::string format_duration(std::uint64_t us) {
  if (us % 3'600'000'000 == 0 && us != 0) return std::to_string(us / 3'600'000'000) + "h";
  if (us % 60'000'000 == 0 && us != 0) return std::to_string(us / 60'000'000) + "m";
  if (us % 1'000'000 == 0) return std::to_string(us / 1'000'000) + "s";
  if (us % 1'000 == 0) return std::to_string(us / 1'000) + "ms";
  return std::to_string(us) + "us";
}

std::optional<std::uint64_t> parse_byte_size(std::string_view text, std::string& problem) {
  static constexpr std::string_view expected =
      "expected a size like \"1048576\", \"512KiB\", \"10MB\" or \"2GiB\"";
  constexpr std::uint64_t max_bytes = std::uint64_t{1} << 63;
  std::size_t i = 0;
  std::uint64_t value = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    const auto digit = static_cast<std::uint64_t>(text[i] - '0');
    if (value > (max_bytes - digit) / 10) {
      problem = "size is larger than 2^63 bytes";
      return std::nullopt;
    }
    value = value * 10 + digit;
    ++i;
  }
  struct unit_scale {
    std::string_view unit;
    std::uint64_t scale;
  };
  static constexpr unit_scale units[] = {
      {"", 1},          {"B", 1},
      {"KB", 1000},     {"MB", 1000'000},        {"GB", 1000'000'000},        {"TB", 1000'000'000'000},
      {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30},          {"TiB", 1ull << 40},
  };
  const std::string_view unit = text.substr(i);
  std::uint64_t scale = 0;
  for (const auto& u : units)
    if (u.unit == unit) scale = u.scale;
  if (i == 0 || scale == 0) {
    problem = std::string(expected) + ", got '" + protocol::terminal_safe(protocol::escape_bytes(text, 40)) + "'";
    return std::nullopt;
  }
  if (value > max_bytes / scale) {
    problem = "size is larger than 2^63 bytes";
    return std::nullopt;
  }
  return value * scale;
}

}  // namespace mailtap::config_reader
