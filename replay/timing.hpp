// How fast a replay plays a capture's recorded waits (`--timing original|fast|xN`): the
// server's delays before its replies, the client's pauses before its commands. Pure.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::replay {

// A factor applied to every recorded wait: 1 as recorded, 0 none, 1/N N times faster.
struct timing {
  double factor = 1.0;
  std::uint64_t scale(std::uint64_t recorded_us) const {
    return static_cast<std::uint64_t>(static_cast<double>(recorded_us) * factor + 0.5);
  }
};

// "original", "fast", or "xN" (N a positive number, e.g. x2 or x0.5). std::nullopt and a
// one-line `error` otherwise.
std::optional<timing> parse_timing(std::string_view text, std::string& error);

}  // namespace mailtap::replay
