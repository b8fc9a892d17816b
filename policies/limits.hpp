// Named bounds for everything policies/ accepts from a scenario file or keeps in memory,
// each with the reason for its value. Shared by the loader, the types and the engine.
// Pure constants; thread-safe.
#pragma once
#include <cstddef>
#include <cstdint>

#include "config_reader/duration.hpp"

namespace mailtap::policies::limits {

// A scenario is a few kilobytes of TOML; the same cap as the main config (relay/config.cpp).
inline constexpr std::size_t scenario_file_bytes = 1 << 20;
// [[fault]] tables in one file, and rules loaded in one engine: far past any real test plan,
// and small enough that a linear scan per decision stays cheap.
inline constexpr std::size_t rules_per_file = 1000;
inline constexpr std::size_t rules_loaded = 10'000;
// Series of mailtap_faults_injected_total (one per rule name and type) kept since start, so
// that a counter does not go back to 0 when its rule is reset, removed or reloaded: twice the
// rules that can be loaded; past it, the series of rules no longer loaded are dropped.
inline constexpr std::size_t injected_series_kept = 2 * rules_loaded;
// A rule name is shown in captures and counter labels: keep it one short token.
inline constexpr std::size_t rule_name_chars = 100;
// Glob patterns match command parts bounded by protocol::limits::command_line_hard_cap.
inline constexpr std::size_t glob_chars = 512;
// A domain name is at most 255 octets (RFC 1035 2.3.4).
inline constexpr std::size_t domain_chars = 255;
// CIDR blocks in one `client` list.
inline constexpr std::size_t cidrs_per_rule = 256;
// Verbs or EHLO keywords in one list (`allow`, `strip`, `mask`); ASA's map has 15 verbs.
inline constexpr std::size_t words_per_list = 64;
// An ESMTP keyword or verb (RFC 5321 4.1.1.1: ehlo-keyword); none in use exceeds 20.
inline constexpr std::size_t word_chars = 32;
// Reply text must fit one reply line of 512 octets (RFC 5321 4.5.3.1.5) with code and enhanced code.
inline constexpr std::size_t reply_text_chars = 480;
// Durations: at most one year, as the reading layer parses them (config_reader/duration.hpp).
inline constexpr std::uint64_t duration_us = config_reader::max_duration_us;
// Length thresholds (line_longer_than, ...): past protocol::limits::command_line_hard_cap
// nothing can match, but allow headroom for future limits.
inline constexpr std::int64_t length_threshold = 1 << 20;
// recipients_more_than: protocol::limits::recipients_cap is 1000.
inline constexpr std::int64_t recipients_threshold = 100'000;
// throttle: 10 GB/s is beyond any link the relay will see.
inline constexpr std::int64_t bytes_per_second = 10'000'000'000;
// slice: a segment larger than a socket write buffer would not slice anything.
inline constexpr std::int64_t segment_bytes = 64 * 1024;
// quota limit, fail_then_pass failures, max_count, nth_*: counts, bounded to stay readable.
inline constexpr std::int64_t count_value = 1'000'000'000;
// Per-rule state (greylist triples, quota windows, fail_then_pass keys): entries kept per
// rule, oldest evicted first. postgrey keeps weeks of triples; 100 000 covers a long test run.
inline constexpr std::size_t state_entries = 100'000;
// State keys longer than this are stored as a 64-bit FNV-1a digest (an envelope with 1000
// recipients would otherwise make one key hundreds of kilobytes).
inline constexpr std::size_t state_key_bytes = 256;

}  // namespace mailtap::policies::limits
