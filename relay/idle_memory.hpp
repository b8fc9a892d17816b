// Handing the heap's free pages back to the kernel once the relay has been idle for a moment.
// glibc keeps what a burst of sessions freed (their buffers, the capture writer's lines) in its
// arenas, so without this a relay's RSS stays at its busiest level for ever (README
// "Performance", W5's memory). Called from any thread when the last session ends; the release
// runs on the given context at most once per `settle`, and only if no session started since.
#pragma once
#include <atomic>
#include <chrono>
#include <functional>

#include <boost/asio/io_context.hpp>

namespace mailtap {

class idle_memory {
 public:
  // `idle` says whether the relay is still idle when the timer fires (no session, none starting).
  idle_memory(boost::asio::io_context& context, std::function<bool()> idle,
              std::chrono::milliseconds settle = std::chrono::milliseconds(250))
      : context_(context), idle_(std::move(idle)), settle_(settle) {}

  // The last session ended: arm the release unless it is already armed (one post per settle).
  void on_idle();
  std::uint64_t releases() const { return releases_.load(); }

 private:
  void release_if_still_idle();

  boost::asio::io_context& context_;
  std::function<bool()> idle_;
  std::chrono::milliseconds settle_;
  std::atomic<bool> armed_{false};
  std::atomic<std::uint64_t> releases_{0};
};

}  // namespace mailtap
