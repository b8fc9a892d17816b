// The idle memory release: one release per idle spell however many sessions end, none while
// a session is open when the settle time is up, and another after the next idle spell.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "relay/idle_memory.hpp"

namespace mailtap {
namespace {

using namespace std::chrono_literals;

TEST(IdleMemory, ReleasesOnceWhenStillIdleAfterTheSettleTime) {
  boost::asio::io_context context;
  std::atomic<bool> idle{true};
  idle_memory memory(context, [&] { return idle.load(); }, 20ms);
  for (int i = 0; i < 50; ++i) memory.on_idle();   // many sessions ending at once
  context.run_for(200ms);
  EXPECT_EQ(memory.releases(), 1u);
  context.restart();
  memory.on_idle();   // the next idle spell
  context.run_for(200ms);
  EXPECT_EQ(memory.releases(), 2u);
}

TEST(IdleMemory, NoReleaseWhenASessionStartedMeanwhile) {
  boost::asio::io_context context;
  std::atomic<bool> idle{true};
  idle_memory memory(context, [&] { return idle.load(); }, 20ms);
  memory.on_idle();
  idle = false;   // a session opened before the settle time was up
  context.run_for(200ms);
  EXPECT_EQ(memory.releases(), 0u);
  // It ended: that arms the release again.
  idle = true;
  context.restart();
  memory.on_idle();
  context.run_for(200ms);
  EXPECT_EQ(memory.releases(), 1u);
}

TEST(IdleMemory, ArmedFromAnotherThread) {
  boost::asio::io_context context;
  auto guard = boost::asio::make_work_guard(context);
  idle_memory memory(context, [] { return true; }, 10ms);
  std::thread runner([&] { context.run_for(500ms); });
  std::thread ender([&] { for (int i = 0; i < 100; ++i) memory.on_idle(); });
  ender.join();
  const auto deadline = std::chrono::steady_clock::now() + 400ms;
  while (memory.releases() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  guard.reset();
  runner.join();
  EXPECT_GE(memory.releases(), 1u);   // one, or two if the ender was preempted past the settle time
}

}  // namespace
}  // namespace mailtap
