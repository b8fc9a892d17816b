// Reading `--timing`.
#include "replay/timing.hpp"

#include <charconv>
#include <cmath>

namespace mailtap::replay {

namespace {
// A speed-up beyond this is "fast" in all but name; a slow-down beyond its inverse would make
// a recorded second last over a day.
constexpr double max_speed = 1e6;
}  // namespace

std::optional<timing> parse_timing(std::string_view text, std::string& error) {
  if (text == "original") return timing{1.0};
  if (text == "fast") return timing{0.0};
  if (text.size() > 1 && text.front() == 'x') {
    double speed = 0;
    const char* first = text.data() + 1;
    const char* last = text.data() + text.size();
    auto [end, ec] = std::from_chars(first, last, speed);
    if (ec == std::errc() && end == last && std::isfinite(speed) && speed >= 1.0 / max_speed && speed <= max_speed)
      return timing{1.0 / speed};
  }
  error = "'" + std::string(text) + "': expected original, fast or xN (N times as fast, e.g. x2 or x0.5)";
  return std::nullopt;
}

}  // namespace mailtap::replay
