// relay/log_limiter: a burst per kind per interval, the rest counted and reported with the
// next line that gets through; kinds independent. The clock is injected: nothing sleeps.
#include "relay/log_limiter.hpp"

#include <gtest/gtest.h>

namespace {

using mailtap::log_limiter;
using mailtap::warn_kind;
using namespace std::chrono_literals;

const log_limiter::clock::time_point t0 = log_limiter::clock::time_point{} + 1000h;

TEST(LogLimiter, ABurstPassesThenRepeatsAreHeldBack) {
  log_limiter limiter(3, 60s);
  for (int i = 0; i < 3; ++i) {
    auto v = limiter.admit(warn_kind::accept_failed, t0 + i * 100ms);
    EXPECT_TRUE(v.log) << i;
    EXPECT_EQ(v.suppressed, 0u);
  }
  for (int i = 3; i < 600; ++i) EXPECT_FALSE(limiter.admit(warn_kind::accept_failed, t0 + i * 100ms).log) << i;
  EXPECT_EQ(limiter.suppressed_total(), 597u);
}

TEST(LogLimiter, TheNextLineAfterTheIntervalSaysHowManyWereHeldBack) {
  log_limiter limiter(1, 10s);
  EXPECT_TRUE(limiter.admit(warn_kind::accept_failed, t0).log);
  for (int i = 1; i <= 99; ++i) EXPECT_FALSE(limiter.admit(warn_kind::accept_failed, t0 + i * 100ms).log);
  auto v = limiter.admit(warn_kind::accept_failed, t0 + 10s);
  EXPECT_TRUE(v.log);
  EXPECT_EQ(v.suppressed, 99u);
  // Counted once: the next window starts from zero held back.
  EXPECT_FALSE(limiter.admit(warn_kind::accept_failed, t0 + 11s).log);
  EXPECT_EQ(limiter.admit(warn_kind::accept_failed, t0 + 20s).suppressed, 1u);
  EXPECT_EQ(limiter.suppressed_total(), 100u);
}

TEST(LogLimiter, KindsHaveTheirOwnWindows) {
  log_limiter limiter(1, 60s);
  EXPECT_TRUE(limiter.admit(warn_kind::accept_failed, t0).log);
  EXPECT_FALSE(limiter.admit(warn_kind::accept_failed, t0 + 1s).log);
  EXPECT_TRUE(limiter.admit(warn_kind::upstream_unreachable, t0 + 1s).log);
  EXPECT_TRUE(limiter.admit(warn_kind::upstream_tls_failed, t0 + 1s).log);
  EXPECT_TRUE(limiter.admit(warn_kind::capture_write_failed, t0 + 1s).log);
  EXPECT_TRUE(limiter.admit(warn_kind::max_sessions, t0 + 1s).log);
  EXPECT_FALSE(limiter.admit(warn_kind::max_sessions, t0 + 2s).log);
}

TEST(LogLimiter, AReadingFromBeforeTheWindowCountsInIt) {
  // Threads read the clock before they take the lock, so readings can arrive out of order.
  log_limiter limiter(1, 60s);
  EXPECT_TRUE(limiter.admit(warn_kind::accept_failed, t0).log);
  EXPECT_FALSE(limiter.admit(warn_kind::accept_failed, t0 - 1ms).log);
}

TEST(LogLimiter, DefaultsAreFiveAMinute) {
  log_limiter limiter;
  int logged = 0;
  for (int i = 0; i < 600; ++i) logged += limiter.admit(warn_kind::accept_failed, t0 + i * 100ms).log ? 1 : 0;
  EXPECT_EQ(logged, 5);   // ten a second for a minute
}

}  // namespace
