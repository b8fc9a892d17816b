// The I/O thread's wait (relay/io_loop.hpp): it polls only while one session is open and its
// last handler ran less than busy_poll ago (a thread's CPU time says whether it polled or
// slept), and, polling or not, runs every handler wherever it was posted from, takes timers,
// and returns when stopped or out of work. What the polling saves is measured by
// scripts/bench, not here.
#include <gtest/gtest.h>

#include <pthread.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "relay/io_loop.hpp"

namespace mailtap {
namespace {

using namespace std::chrono_literals;

// Runs the loop on a thread of its own; the future is ready when run_io_context returned.
std::future<void> start(boost::asio::io_context& context, const std::atomic<std::uint64_t>& sessions,
                        std::chrono::microseconds busy_poll) {
  return std::async(std::launch::async, [&context, &sessions, busy_poll] { run_io_context(context, sessions, busy_poll); });
}

class IoLoop : public ::testing::TestWithParam<std::uint64_t> {};   // sessions open: 0, 1 (polls), 2

TEST_P(IoLoop, RunsHandlersPostedFromAnotherThreadAndStopsWhenAsked) {
  boost::asio::io_context context(1);
  auto guard = boost::asio::make_work_guard(context);
  std::atomic<std::uint64_t> sessions{GetParam()};
  auto loop = start(context, sessions, 100'000us);   // a window longer than the test
  std::atomic<int> ran{0};
  for (int i = 0; i < 100; ++i) {
    std::promise<void> done;
    boost::asio::post(context, [&] { ++ran; done.set_value(); });
    ASSERT_EQ(done.get_future().wait_for(5s), std::future_status::ready) << "handler " << i;
  }
  EXPECT_EQ(ran.load(), 100);
  context.stop();
  EXPECT_EQ(loop.wait_for(5s), std::future_status::ready) << "the loop did not return when stopped";
}

TEST_P(IoLoop, TakesTimersAndReturnsWhenOutOfWork) {
  boost::asio::io_context context(1);
  std::atomic<std::uint64_t> sessions{GetParam()};
  boost::asio::steady_timer timer(context, 20ms);
  bool fired = false;
  timer.async_wait([&](boost::system::error_code ec) { fired = !ec; });
  auto loop = start(context, sessions, 100'000us);
  ASSERT_EQ(loop.wait_for(5s), std::future_status::ready) << "the loop did not return once out of work";
  EXPECT_TRUE(fired);
}

TEST_P(IoLoop, RunsHandlersWhateverTheSessionCountBecomes) {
  boost::asio::io_context context(1);
  auto guard = boost::asio::make_work_guard(context);
  std::atomic<std::uint64_t> sessions{GetParam()};
  auto loop = start(context, sessions, 100'000us);
  for (std::uint64_t n : {1, 0, 3, 1}) {
    sessions = n;
    std::promise<void> done;
    boost::asio::post(context, [&] { done.set_value(); });
    ASSERT_EQ(done.get_future().wait_for(5s), std::future_status::ready) << "sessions " << n;
  }
  guard.reset();   // out of work: returns whether it was polling or asleep
  EXPECT_EQ(loop.wait_for(5s), std::future_status::ready);
}

INSTANTIATE_TEST_SUITE_P(SessionsOpen, IoLoop, ::testing::Values(0u, 1u, 2u));

TEST(IoLoopRule, PollsOnlyForALoneSessionWithinTheWindow) {
  EXPECT_TRUE(keeps_polling(1, 0us, 200us));
  EXPECT_TRUE(keeps_polling(1, 199us, 200us));
  EXPECT_FALSE(keeps_polling(1, 200us, 200us));   // the window is over: sleep
  EXPECT_FALSE(keeps_polling(0, 0us, 200us));     // no session: nothing to be quick for
  EXPECT_FALSE(keeps_polling(2, 0us, 200us));     // several: the cores have the peers' work
  EXPECT_FALSE(keeps_polling(100, 0us, 200us));
  EXPECT_FALSE(keeps_polling(1, 0us, 0us));
}

// CPU time of a thread, from its own clock.
std::chrono::nanoseconds cpu_time_of(pthread_t thread) {
  clockid_t clock;
  if (pthread_getcpuclockid(thread, &clock) != 0) return {};
  timespec t{};
  clock_gettime(clock, &t);
  return std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec);
}

// How much CPU the loop's thread spends in the 200 ms after it ran one handler, with
// `sessions` open and a window of `busy_poll`.
std::chrono::nanoseconds cpu_after_a_handler(std::uint64_t sessions, std::chrono::microseconds busy_poll) {
  boost::asio::io_context context(1);
  auto guard = boost::asio::make_work_guard(context);
  std::atomic<std::uint64_t> open{sessions};
  std::thread loop([&] { run_io_context(context, open, busy_poll); });
  std::promise<void> ran;
  boost::asio::post(context, [&] { ran.set_value(); });
  ran.get_future().wait();
  const auto before = cpu_time_of(loop.native_handle());
  std::this_thread::sleep_for(200ms);
  const auto spent = cpu_time_of(loop.native_handle()) - before;
  context.stop();
  loop.join();
  return spent;
}

TEST(IoLoopCpu, ALoneSessionsThreadPollsThroughItsWindow) {
  // Polling for the whole 200 ms takes a good part of a core even on a busy machine; sleeping
  // takes next to nothing.
  EXPECT_GT(cpu_after_a_handler(1, 10s), 40ms);
}

TEST(IoLoopCpu, AThreadSleepsWithSeveralSessionsNoneOrOnceTheWindowIsOver) {
  EXPECT_LT(cpu_after_a_handler(2, 10s), 20ms);
  EXPECT_LT(cpu_after_a_handler(0, 10s), 20ms);
  EXPECT_LT(cpu_after_a_handler(1, 1ms), 20ms);   // polls 1 ms, then sleeps
  EXPECT_LT(cpu_after_a_handler(1, 0us), 20ms);   // busy_poll 0: io_context::run()
}

TEST(IoLoopOff, ZeroRunsEveryHandlerAndReturnsOutOfWork) {
  boost::asio::io_context context(1);
  std::atomic<std::uint64_t> sessions{1};
  int ran = 0;
  boost::asio::post(context, [&] { ++ran; });
  run_io_context(context, sessions, 0us);
  EXPECT_EQ(ran, 1);
}

}  // namespace
}  // namespace mailtap
