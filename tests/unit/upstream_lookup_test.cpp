// relay/upstream_lookup: deadlines, cancellation, shared and parallel lookups, and answers
// dropped once nobody waits, with a resolver the test holds and releases.
#include "relay/upstream_lookup.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>

namespace mailtap {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

// A resolver that answers 192.0.2.1 for a name once the test opens it, and counts who is inside.
struct gated_resolver {
  std::mutex m;
  std::condition_variable cv;
  std::set<std::string> open;
  std::set<std::string> inside;
  int calls = 0;

  lookup_result resolve(const std::string& host, std::uint16_t port) {
    std::unique_lock lock(m);
    ++calls;
    inside.insert(host);
    cv.notify_all();
    const bool opened = cv.wait_for(lock, 10s, [&] { return open.count(host) != 0; });
    inside.erase(host);
    cv.notify_all();
    if (!opened) return {{}, "never opened", false};
    return {{asio::ip::tcp::endpoint(asio::ip::make_address("192.0.2.1"), port)}, "", false};
  }
  void let(const std::string& host) {
    std::lock_guard lock(m);
    open.insert(host);
    cv.notify_all();
  }
  bool wait_inside(const std::string& host) {
    std::unique_lock lock(m);
    return cv.wait_for(lock, 10s, [&] { return inside.count(host) != 0; });
  }
  bool wait_left(const std::string& host) {
    std::unique_lock lock(m);
    return cv.wait_for(lock, 10s, [&] { return inside.count(host) == 0; });
  }
};

name_lookups::resolve_fn through(gated_resolver& r) {
  return [&r](const std::string& host, std::uint16_t port) { return r.resolve(host, port); };
}

// Runs the lookup on its own io_context until it ends; the result.
lookup_result run_lookup(name_lookups& lookups, const std::string& host, clock::duration within) {
  asio::io_context io;
  std::optional<lookup_result> out;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    out = co_await lookups.lookup(io.get_executor(), host, 25, clock::now() + within);
  }, asio::detached);
  io.run();
  return out.value();
}

TEST(UpstreamLookup, AnswersWithTheAddressesFound) {
  gated_resolver r;
  name_lookups lookups(2, through(r));
  r.let("mx.test");
  auto got = run_lookup(lookups, "mx.test", 10s);
  EXPECT_TRUE(got.error.empty()) << got.error;
  ASSERT_EQ(got.addresses.size(), 1u);
  EXPECT_EQ(got.addresses[0].address().to_string(), "192.0.2.1");
  EXPECT_EQ(got.addresses[0].port(), 25);
}

TEST(UpstreamLookup, ANameThatDoesNotAnswerTimesOutAtTheDeadline) {
  gated_resolver r;
  name_lookups lookups(2, through(r));
  const auto started = clock::now();
  auto got = run_lookup(lookups, "silent.test", 200ms);
  const auto took = clock::now() - started;
  EXPECT_TRUE(got.timed_out);
  EXPECT_TRUE(got.addresses.empty());
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 5s);   // the resolver holds it for 10 s
  r.let("silent.test");   // the answer that comes now is dropped
  EXPECT_TRUE(r.wait_left("silent.test"));
}

TEST(UpstreamLookup, SessionsAskingForOneNameAtOnceShareOneLookup) {
  gated_resolver r;
  name_lookups lookups(4, through(r));
  asio::io_context io;
  std::vector<lookup_result> got;
  for (int i = 0; i < 3; ++i)
    asio::co_spawn(io, [&]() -> asio::awaitable<void> {
      got.push_back(co_await lookups.lookup(io.get_executor(), "mx.test", 25, clock::now() + 10s));
    }, asio::detached);
  io.poll();   // all three wait
  ASSERT_TRUE(r.wait_inside("mx.test"));
  r.let("mx.test");
  io.run();
  ASSERT_EQ(got.size(), 3u);
  for (const auto& g : got) EXPECT_EQ(g.addresses.size(), 1u);
  EXPECT_EQ(lookups.started(), 1u);
  EXPECT_EQ(r.calls, 1);
}

TEST(UpstreamLookup, DifferentNamesAreLookedUpAtTheSameTime) {
  // With one lookup at a time (Asio's resolver thread), a.test would hold b.test back, and
  // neither would be opened: the test opens a.test only once b.test is being looked up too.
  gated_resolver r;
  name_lookups lookups(2, through(r));
  asio::io_context io;
  std::vector<lookup_result> got;
  for (const char* name : {"a.test", "b.test"})
    asio::co_spawn(io, [&, name]() -> asio::awaitable<void> {
      got.push_back(co_await lookups.lookup(io.get_executor(), name, 25, clock::now() + 20s));
    }, asio::detached);
  io.poll();
  ASSERT_TRUE(r.wait_inside("a.test"));
  ASSERT_TRUE(r.wait_inside("b.test"));
  r.let("a.test");
  r.let("b.test");
  io.run();
  ASSERT_EQ(got.size(), 2u);
  for (const auto& g : got) EXPECT_TRUE(g.error.empty()) << g.error;
}

TEST(UpstreamLookup, CancellingTheWaitEndsItAtOnce) {
  using namespace asio::experimental::awaitable_operators;
  gated_resolver r;
  auto lookups = std::make_unique<name_lookups>(2, through(r));
  asio::io_context io;
  std::optional<std::size_t> which;
  const auto started = clock::now();
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    asio::steady_timer session_ended(io, 50ms);
    auto first = co_await (lookups->lookup(io.get_executor(), "silent.test", 25, clock::now() + 20s) ||
                           session_ended.async_wait(asio::use_awaitable));
    which = first.index();
  }, asio::detached);
  io.run();
  EXPECT_EQ(which, 1u);
  EXPECT_LT(clock::now() - started, 5s);
  // The relay stops with the lookup still running: its late answer goes nowhere.
  ASSERT_TRUE(r.wait_inside("silent.test"));
  lookups.reset();
  r.let("silent.test");
  EXPECT_TRUE(r.wait_left("silent.test"));
}

TEST(UpstreamLookup, AQueuedNameNobodyWaitsForAnyMoreIsNotLookedUp) {
  gated_resolver r;
  name_lookups lookups(1, through(r));   // one worker: b.test queues behind a.test
  asio::io_context io;
  std::vector<lookup_result> got;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    got.push_back(co_await lookups.lookup(io.get_executor(), "a.test", 25, clock::now() + 20s));
  }, asio::detached);
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    got.push_back(co_await lookups.lookup(io.get_executor(), "b.test", 25, clock::now() + 100ms));
  }, asio::detached);
  io.poll();
  ASSERT_TRUE(r.wait_inside("a.test"));
  // b.test's deadline passes while it is queued.
  while (got.empty() && io.run_one_for(5s) > 0) {
  }
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].timed_out);
  r.let("a.test");
  io.run();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(got[1].error.empty()) << got[1].error;
  EXPECT_TRUE(r.wait_left("a.test"));
  EXPECT_EQ(lookups.started(), 1u);
  EXPECT_EQ(r.calls, 1);
}

}  // namespace
}  // namespace mailtap
