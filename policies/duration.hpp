// Scenario durations: a non-negative integer and a unit, "250ms", "5s", "2m", "1h", at
// most limits::duration_us (one year), held as microseconds everywhere in policies/.
// Owns nothing. Pure functions, thread-safe.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::policies {

// Microseconds, or nullopt with `problem` set.
std::optional<std::uint64_t> parse_duration(std::string_view text, std::string& problem);

// "250ms", "5s", ... : the shortest exact form, for summaries and messages.
std::string format_duration(std::uint64_t us);

}  // namespace mailtap::policies
