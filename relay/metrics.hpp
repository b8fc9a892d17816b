// Process-wide counters, updated by sessions and the listener from any thread; read by
// the shutdown summary (and the admin API when it lands). Plain atomics, relaxed order;
// the warning limiter has its own lock.
#pragma once
#include <atomic>
#include <cstdint>

#include "relay/log_limiter.hpp"

namespace mailtap {

struct relay_metrics {
  std::atomic<std::uint64_t> sessions_accepted{0};
  std::atomic<std::uint64_t> sessions_active{0};
  std::atomic<std::uint64_t> sessions_refused_max{0};   // over max_sessions: 421 at connect
  std::atomic<std::uint64_t> accept_errors{0};
  std::atomic<std::uint64_t> sessions_intercepted{0};   // transparent: relayed to their original destination
  std::atomic<std::uint64_t> session_errors{0};         // unexpected exceptions at a session boundary
  std::atomic<std::uint64_t> upstream_unreachable{0};
  std::atomic<std::uint64_t> upstream_tls_failed{0};    // upstream handshakes that failed or timed out
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
  // The warnings about the counters above (unreachable upstream, upstream TLS, max_sessions,
  // accept) share one limiter, a window per kind.
  log_limiter warnings;
};

}  // namespace mailtap
