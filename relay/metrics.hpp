// Process-wide counters, updated by sessions and the listener from any thread; read by
// the shutdown summary and the admin API's /metrics (admin/metrics_page.hpp). Plain
// atomics, relaxed order; the warning limiter has its own lock. Sessions add their stage
// timings and reply counts once, when they end (relay/session_tally.hpp), so the hot path
// touches no shared cache line per command.
#pragma once
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "protocol/phase.hpp"
#include "relay/log_limiter.hpp"

namespace mailtap {

// Every protocol::phase (tls is the last enumerator), as an array index.
inline constexpr std::size_t phase_count = static_cast<std::size_t>(protocol::phase::tls) + 1;

// Upper bounds of the stage latency buckets, in microseconds: 0.5 ms to 5 minutes, so a
// loopback command (well under a millisecond) and RFC 5321's 5-minute reply timeouts
// (4.5.3.2) both land in a bucket of their own. The +Inf bucket follows the last.
inline constexpr std::array<std::uint64_t, 16> stage_bucket_bounds_us = {
    500, 1'000, 2'500, 5'000, 10'000, 25'000, 50'000, 100'000, 250'000, 500'000,
    1'000'000, 2'500'000, 5'000'000, 10'000'000, 60'000'000, 300'000'000};

// One latency histogram: per-bucket counts (not cumulative; the exposition sums them), the
// sum in microseconds and the count.
struct latency_histogram {
  std::array<std::atomic<std::uint64_t>, stage_bucket_bounds_us.size() + 1> buckets{};
  std::atomic<std::uint64_t> sum_us{0};
  std::atomic<std::uint64_t> count{0};
  void observe(std::uint64_t us) {
    std::size_t i = 0;
    while (i < stage_bucket_bounds_us.size() && us > stage_bucket_bounds_us[i]) ++i;
    buckets[i].fetch_add(1, std::memory_order_relaxed);
    sum_us.fetch_add(us, std::memory_order_relaxed);
    count.fetch_add(1, std::memory_order_relaxed);
  }
};

// A stage's duration, and the two parts of it the relay is asked about: the wait for the
// upstream, and the time the relay itself added (the duration less the upstream wait and
// the sender busy within it; README "Captures", `show --json` stages).
enum class stage_part : unsigned char { total, upstream, relay };
inline constexpr std::size_t stage_part_count = 3;

// Replies the client received, by stage and by class (index 0: a reply whose first byte is
// not a digit 1-5; 1..5: 1xx..5xx).
inline constexpr std::size_t reply_class_count = 6;

struct relay_metrics {
  std::atomic<std::uint64_t> sessions_accepted{0};
  std::atomic<std::uint64_t> sessions_active{0};
  std::atomic<std::uint64_t> sessions_refused_max{0};   // over max_sessions: 421 at connect
  std::atomic<std::uint64_t> sessions_refused_loop{0};  // mailtap's own upstream connection come back: 421 at connect
  std::atomic<std::uint64_t> accept_errors{0};
  std::atomic<std::uint64_t> sessions_intercepted{0};   // transparent: relayed to their original destination
  std::atomic<std::uint64_t> session_errors{0};         // unexpected exceptions at a session boundary
  std::atomic<std::uint64_t> upstream_unreachable{0};
  // Upstream handshakes that failed or timed out, and required TLS the upstream did not offer
  // or refused (session_tally::on_end).
  std::atomic<std::uint64_t> upstream_tls_failed{0};
  // Sessions the upstream ended badly once connected: a protocol error, a timeout, a 421
  // greeting, a hang-up without 421 (session_tally::on_end).
  std::atomic<std::uint64_t> upstream_failed{0};
  std::atomic<std::uint64_t> transactions{0};
  std::atomic<std::uint64_t> messages_delivered{0};
  std::atomic<std::uint64_t> refused_commands{0};
  std::atomic<std::uint64_t> ambiguous_end_of_data{0};
  std::atomic<std::uint64_t> normalized_line_endings{0};
  std::atomic<std::uint64_t> long_data_lines{0};
  std::atomic<std::uint64_t> faults_injected{0};        // per rule and type: policies::engine::counters()
  std::atomic<std::uint64_t> blackholed{0};             // messages a blackhole answered with 250
  std::atomic<std::uint64_t> client_timeouts{0};        // idle, slow command line, data below min_data_rate
  std::atomic<std::uint64_t> upstream_replied_in_data{0};   // a reply before the dot refused the message
  std::atomic<std::uint64_t> unacknowledged_end_of_data{0}; // the upstream answered the dot after the client left
  std::atomic<std::uint64_t> proxy_header_refused{0};   // listen_proxy_protocol: no valid PROXY header, 421
  // listen_proxy_protocol: connections still sending their PROXY header; with sessions_active
  // they count toward max_sessions, so silent connections cannot pile up for proxy_header_timeout.
  std::atomic<std::uint64_t> proxy_headers_pending{0};
  std::atomic<std::uint64_t> reloads_ok{0};             // SIGHUP reloads whose rules are in force (relay/reload.cpp)
  std::atomic<std::uint64_t> reloads_failed{0};         // SIGHUP reloads refused: a bad file, the old rules stay
  std::atomic<std::uint64_t> reload_removed_api_rules{0};   // rules armed over the admin API that a reload replaced
  std::atomic<std::uint64_t> client_tls_failed{0};     // client handshakes that failed or timed out
  std::atomic<std::uint64_t> upstream_cert_refused{0}; // upstream handshakes done, certificate not accepted
  std::array<std::atomic<std::uint64_t>, 2> tls_handshakes{};   // completed, by protocol::leg (client, upstream)
  std::array<std::array<latency_histogram, stage_part_count>, phase_count> stage_latency{};
  std::array<std::array<std::atomic<std::uint64_t>, reply_class_count>, phase_count> replies{};
  // The warnings about the counters above (unreachable upstream, upstream TLS, max_sessions,
  // accept) share one limiter, a window per kind.
  log_limiter warnings;
};

}  // namespace mailtap
