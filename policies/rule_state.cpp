// Bounded keyed state: insertion-ordered eviction keeps memory flat under key floods
// (every new client or envelope adds a key) without timers.
#include "policies/rule_state.hpp"

namespace mailtap::policies {

std::string rule_state::bounded_key(std::string_view key) {
  if (key.size() <= limits::state_key_bytes) return std::string(key);
  std::uint64_t h = 0xcbf29ce484222325ull;   // FNV-1a 64
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "#";
  for (int shift = 60; shift >= 0; shift -= 4) out += hex[(h >> shift) & 0xf];
  out += ":" + std::to_string(key.size());
  return out;
}

state_entry& rule_state::get(std::string_view key, bool& created) {
  std::string k = bounded_key(key);
  if (auto it = entries_.find(k); it != entries_.end()) {
    created = false;
    return it->second.value;
  }
  created = true;
  if (entries_.size() >= capacity_) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
  order_.push_back(k);
  auto [it, inserted] = entries_.emplace(std::move(k), slot{state_entry{}, std::prev(order_.end())});
  (void)inserted;
  return it->second.value;
}

void rule_state::clear() {
  entries_.clear();
  order_.clear();
}

}  // namespace mailtap::policies
