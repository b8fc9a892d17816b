// Duration strings: digits then one of ms, s, m, h; no fractions, no spaces, no sign.
#include "policies/duration.hpp"

#include "policies/limits.hpp"
#include "protocol/action.hpp"

namespace mailtap::policies {

std::optional<std::uint64_t> parse_duration(std::string_view text, std::string& problem) {
  static constexpr std::string_view expected = "expected a duration like \"250ms\", \"5s\", \"2m\" or \"1h\"";
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
  if (i == 0 || scale == 0) {
    // Escaped: errors are one line (scenario_loader.hpp), whatever the string held.
    problem = std::string(expected) + ", got '" + protocol::escape_bytes(text, 40) + "'";
    return std::nullopt;
  }
  if (value > limits::duration_us / scale) {
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

}  // namespace mailtap::policies
