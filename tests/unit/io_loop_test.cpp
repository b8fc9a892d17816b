// The I/O thread's wait (relay/io_loop.hpp): with a lone session open it polls, and still runs
// every handler, wherever it was posted from, takes timers, and returns when stopped or out of
// work, polling or not. Not timed: what the polling saves is measured by scripts/bench.
#include <gtest/gtest.h>

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

TEST_P(IoLoop, ASessionsCountChangingWhileItPollsIsTaken) {
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

TEST(IoLoopOff, ZeroIsAPlainRun) {
  boost::asio::io_context context(1);
  std::atomic<std::uint64_t> sessions{1};
  int ran = 0;
  boost::asio::post(context, [&] { ++ran; });
  run_io_context(context, sessions, 0us);
  EXPECT_EQ(ran, 1);
}

}  // namespace
}  // namespace mailtap
