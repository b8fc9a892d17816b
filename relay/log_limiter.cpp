// Fixed windows per kind: the first `burst` lines of a window pass, a new window starts with
// the first line after `interval` has passed.
#include "relay/log_limiter.hpp"

#include <spdlog/spdlog.h>

namespace mailtap {

log_limiter::verdict log_limiter::admit(warn_kind kind, clock::time_point now) {
  std::lock_guard lock(mutex_);
  window& w = windows_[static_cast<std::size_t>(kind)];
  // A time before the window's start is another thread's earlier reading: it counts in this window.
  if (!w.started || (now > w.start && now - w.start >= interval_)) {
    w.started = true;
    w.start = now;
    w.logged = 0;
  }
  if (w.logged >= burst_) {
    ++w.suppressed;
    ++w.suppressed_all;
    return {false, w.suppressed};
  }
  ++w.logged;
  verdict v{true, w.suppressed};
  w.suppressed = 0;
  return v;
}

std::uint64_t log_limiter::suppressed_total() const {
  std::lock_guard lock(mutex_);
  std::uint64_t total = 0;
  for (const auto& w : windows_) total += w.suppressed_all;
  return total;
}

void warn_limited(log_limiter& limiter, warn_kind kind, std::string_view message) {
  const auto v = limiter.admit(kind, log_limiter::clock::now());
  if (!v.log) return;
  if (v.suppressed == 0) spdlog::warn("{}", message);
  else spdlog::warn("{} ({} similar warning(s) suppressed)", message, v.suppressed);
}

}  // namespace mailtap
