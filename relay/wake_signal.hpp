// A named wake-up for coroutines on one strand: notify() wakes every waiter, which re-checks
// the condition it waits for (a condition variable without a mutex: one thread, so no
// wake-up is lost as long as the condition is checked before waiting). It never fires by
// itself: every wait in relay/ is on one of these, a timer with a deadline, or I/O.
#pragma once
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace mailtap {

class wake_signal {
 public:
  using clock = std::chrono::steady_clock;
  explicit wake_signal(const boost::asio::any_io_executor& ex) : timer_(ex, clock::time_point::max()) {}

  void notify() { timer_.cancel(); }

  // Until the next notify().
  boost::asio::awaitable<void> wait() {
    co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }

  // Until `condition` holds.
  template <typename Condition>
  boost::asio::awaitable<void> wait_until(Condition condition) {
    while (!condition()) co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }

  // Until `condition` holds or `deadline` passes; true if the condition holds.
  template <typename Condition>
  boost::asio::awaitable<bool> wait_until(Condition condition, clock::time_point deadline) {
    using namespace boost::asio::experimental::awaitable_operators;
    boost::asio::steady_timer limit(timer_.get_executor(), deadline);
    while (!condition() && clock::now() < deadline)
      co_await (timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable)) ||
                limit.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable)));
    co_return condition();
  }

 private:
  boost::asio::steady_timer timer_;   // never expires: notify() cancels it
};

}  // namespace mailtap
