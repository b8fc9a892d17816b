// The cross-session state of one stateful rule (greylist triples, quota windows,
// fail_then_pass attempts): a keyed table of at most limits::state_entries entries, the
// oldest inserted evicted first. Owned by the engine; used only under its mutex.
#pragma once
#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

#include "policies/limits.hpp"

namespace mailtap::policies {

struct state_entry {
  std::uint64_t first_us = 0;   // greylist: first seen; quota: window start (steady clock)
  std::uint64_t count = 0;      // quota: matches in the window; fail_then_pass: attempts
};

class rule_state {
 public:
  explicit rule_state(std::size_t capacity = limits::state_entries) : capacity_(capacity == 0 ? 1 : capacity) {}

  // The entry for `key`; `created` tells whether it was just added (value-initialised).
  state_entry& get(std::string_view key, bool& created);
  std::size_t size() const { return entries_.size(); }
  void clear();

  // Keys past limits::state_key_bytes become a fixed-size digest.
  static std::string bounded_key(std::string_view key);

 private:
  struct slot {
    state_entry value;
    std::list<std::string>::iterator order;
  };
  std::size_t capacity_;
  std::unordered_map<std::string, slot> entries_;
  std::list<std::string> order_;   // insertion order, oldest first
};

}  // namespace mailtap::policies
