// Bounded fan-out of session events (relay/event_hub.hpp).
#include "relay/event_hub.hpp"

#include <algorithm>
#include <iterator>
#include <utility>

namespace mailtap {

std::vector<std::string> event_subscription::take(std::uint64_t& dropped) {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
  queue_.clear();
  dropped = std::exchange(dropped_, 0);
  return out;
}

void event_subscription::push(const std::string& event) {
  bool was_empty = false;
  {
    std::lock_guard lock(mutex_);
    if (queue_.size() >= capacity_) {
      ++dropped_;
      return;
    }
    was_empty = queue_.empty() && dropped_ == 0;
    queue_.push_back(event);
  }
  if (was_empty && wake_) wake_();
}

std::shared_ptr<event_subscription> event_hub::subscribe(std::function<void()> wake, std::size_t capacity) {
  std::lock_guard lock(mutex_);
  std::erase_if(list_, [](const auto& w) { return w.expired(); });
  if (list_.size() >= max_subscribers) return nullptr;
  auto s = std::make_shared<event_subscription>(capacity, std::move(wake));
  list_.push_back(s);
  subscribers_.store(list_.size(), std::memory_order_relaxed);
  return s;
}

void event_hub::publish(const std::string& event) {
  if (!has_subscribers()) return;
  std::vector<std::shared_ptr<event_subscription>> live;
  {
    std::lock_guard lock(mutex_);
    std::erase_if(list_, [](const auto& w) { return w.expired(); });
    subscribers_.store(list_.size(), std::memory_order_relaxed);
    for (auto& w : list_)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->push(event);
}

}  // namespace mailtap
