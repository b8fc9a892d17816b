// The names of the observer vocabulary (observer.hpp): directions and outcomes, and the
// outcome a reply code stands for.
#include "protocol/observer.hpp"

#include <algorithm>

namespace mailtap::protocol {

std::string_view to_string(direction d) { return d == direction::in ? "in" : "out"; }

std::string_view to_string(outcome o) {
  switch (o) {
    case outcome::delivered: return "delivered";
    case outcome::blackholed: return "blackholed";
    case outcome::rejected: return "rejected";
    case outcome::tempfailed: return "tempfailed";
    case outcome::aborted: return "aborted";
    case outcome::unknown: return "unknown";
  }
  return "unknown";
}

std::optional<outcome> parse_outcome(std::string_view name) {
  for (auto o : {outcome::delivered, outcome::blackholed, outcome::rejected, outcome::tempfailed, outcome::aborted,
                 outcome::unknown})
    if (to_string(o) == name) return o;
  return std::nullopt;
}

std::optional<outcome> outcome_of_refused_recipients(const std::vector<int>& codes) {
  if (codes.empty() || std::any_of(codes.begin(), codes.end(), [](int c) { return c / 100 == 2; })) return std::nullopt;
  bool any_temporary = std::any_of(codes.begin(), codes.end(), [](int c) { return c / 100 == 4; });
  return any_temporary ? outcome::tempfailed : outcome::rejected;
}

outcome outcome_of_code(int code) {
  switch (code / 100) {
    case 2: return outcome::delivered;
    case 4: return outcome::tempfailed;
    case 5: return outcome::rejected;
    default: return outcome::unknown;
  }
}

}  // namespace mailtap::protocol
