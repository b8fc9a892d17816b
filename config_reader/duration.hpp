// Duration and byte-size strings, as config files and scenario files write them. Durations:
// a non-negative integer and a unit, "250ms", "5s", "2m", "1h", "7d" (a day is 24 h), at most
// max_duration_us (one year), held as microseconds. Byte sizes: an integer and an optional unit, "512", "64KiB",
// "10MB", "2GiB". Owns nothing. Pure functions, thread-safe.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::config_reader {

// One year: the longest duration anything in mailtap waits for; now + this never overflows a
// steady_clock time point.
inline constexpr std::uint64_t max_duration_us = 365ull * 24 * 3600 * 1'000'000;

// Microseconds, or nullopt with `problem` set.
std::optional<std::uint64_t> parse_duration(std::string_view text, std::string& problem);

// "250ms", "5s", ... : the shortest exact form, for summaries and messages.
std::string format_duration(std::uint64_t us);

// Bytes: digits, then nothing or one of B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB,
// TiB (powers of 1024). Nullopt with `problem` set when malformed or past 2^63 bytes.
std::optional<std::uint64_t> parse_byte_size(std::string_view text, std::string& problem);

}  // namespace mailtap::config_reader
