// Live session events for subscribers of the admin API (GET /api/v1/events, a WebSocket):
// session started, stage reached, fault injected, session ended, each one JSON object
// (admin/README.md lists the fields). Sessions publish from their own threads; with no
// subscriber a publish is one relaxed load. Each subscriber has a bounded queue: when it is
// full, newer events are dropped and counted, and the subscriber is told how many it lost,
// so a slow subscriber never slows the relay or grows its memory. Thread-safe.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace mailtap {

class event_subscription {
 public:
  // `wake` is called (on a publisher's thread) when the queue goes from empty to not empty.
  event_subscription(std::size_t capacity, std::function<void()> wake) : capacity_(capacity), wake_(std::move(wake)) {}
  // The queued events, and how many were dropped since the last take.
  std::vector<std::string> take(std::uint64_t& dropped);
  void push(const std::string& event);

 private:
  const std::size_t capacity_;
  std::function<void()> wake_;
  std::mutex mutex_;
  std::deque<std::string> queue_;
  std::uint64_t dropped_ = 0;
};

class event_hub {
 public:
  // Events a subscriber may have waiting before newer ones are dropped.
  static constexpr std::size_t subscriber_queue = 1024;
  // At most this many subscribers at once (subscribe returns null past it).
  static constexpr std::size_t max_subscribers = 8;

  std::shared_ptr<event_subscription> subscribe(std::function<void()> wake, std::size_t capacity = subscriber_queue);
  bool has_subscribers() const { return subscribers_.load(std::memory_order_relaxed) > 0; }
  // One event, a JSON object as text; dropped at once when nobody listens.
  void publish(const std::string& event);

 private:
  mutable std::mutex mutex_;
  std::vector<std::weak_ptr<event_subscription>> list_;
  std::atomic<std::size_t> subscribers_{0};
};

}  // namespace mailtap
