// Rate limiting for repeated warnings: a relay out of file descriptors fails every accept,
// and one warn line per failure (10 a second) buries everything else. Each kind of warning
// may log `burst` lines per `interval`; the rest are counted, and the next line that gets
// through says how many were held back. Owns only its counters. Thread-safe (one mutex).
#pragma once
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>

namespace mailtap {

// The warnings that repeat when something outside the relay is wrong.
enum class warn_kind : unsigned char {
  upstream_unreachable,
  upstream_tls_failed,
  capture_write_failed,
  max_sessions,
  accept_failed,
  proxy_header_refused,
  connection_loop,
  upstream_failed,   // a session's upstream broke the protocol, timed out or hung up on it
  capture_retention, // the retention limits: a file it cannot read or remove, a directory it cannot keep under max_bytes
};
inline constexpr std::size_t warn_kind_count = 9;

class log_limiter {
 public:
  using clock = std::chrono::steady_clock;
  // Five lines a minute per kind: enough to see a problem start and who it hits, few enough
  // that a failure repeating ten times a second costs five lines, not six hundred.
  static constexpr std::size_t default_burst = 5;
  static constexpr clock::duration default_interval = std::chrono::seconds(60);

  struct verdict {
    bool log = false;              // write this line
    std::uint64_t suppressed = 0;  // lines of this kind held back since the last one written
  };

  explicit log_limiter(std::size_t burst = default_burst, clock::duration interval = default_interval)
      : burst_(burst), interval_(interval) {}

  verdict admit(warn_kind kind, clock::time_point now);
  // Lines held back so far, all kinds (for the shutdown summary).
  std::uint64_t suppressed_total() const;

 private:
  struct window {
    clock::time_point start{};
    std::size_t logged = 0;
    std::uint64_t suppressed = 0;      // since the last line written
    std::uint64_t suppressed_all = 0;  // since start
    bool started = false;
  };
  const std::size_t burst_;
  const clock::duration interval_;
  mutable std::mutex mutex_;
  std::array<window, warn_kind_count> windows_{};
};

// spdlog::warn(message) if `limiter` admits it, with "(N similar warnings suppressed)" when
// some were held back before it.
void warn_limited(log_limiter& limiter, warn_kind kind, std::string_view message);

}  // namespace mailtap
