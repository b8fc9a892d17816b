// Internal to policies/: what the engine and its session advisors share (through a
// shared_ptr, so an advisor may outlive the engine object): the loaded rules with their
// state and counts, the clocks and the master seed. Every field but the immutable ones is
// guarded by `mutex`; decide_errors is atomic.
//
// The rules are published as an immutable rule_set: every change (add, remove, reset, a
// reload's replace_all) makes a new set, and an advisor keeps the set that was current when
// its session opened, so a session in flight keeps its rules whatever is reloaded meanwhile.
// The rules' state and counts (loaded_rule's mutable fields) stay under `mutex`.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "policies/rule.hpp"
#include "policies/rule_state.hpp"
#include "policies/types/type.hpp"

namespace mailtap::policies {

struct loaded_rule {
  rule r;
  const fault_type* type = nullptr;
  std::uint64_t loaded_us = 0;   // steady clock, for after/for
  std::uint64_t injected = 0;    // for max_count and the rule's own counts (list, counters)
  // Its name and type's count since the relay started (engine_shared::injected_totals),
  // which outlives the rule: mailtap_faults_injected_total.
  std::shared_ptr<std::uint64_t> total;
  rule_state state;

  // Decided by a session and not yet applied nor given back (session_advisor): max_count
  // holds them, so that sessions deciding at once never apply more than it allows, but they
  // are not counted as injected (the counter follows what the relay applied).
  std::uint64_t reserved = 0;

  void count_one() {
    ++injected;
    if (total) ++*total;
  }

  bool exhausted() const { return r.match.max_count && injected + reserved >= *r.match.max_count; }
  // The stage at which the rule acts at phase `p` (fault_type::stage_at).
  protocol::fault_stage stage_at(protocol::phase p) const;
};

// Load order. The vector never changes once published; its rules' state does (under the mutex).
using rule_set = std::vector<std::shared_ptr<loaded_rule>>;

struct engine_shared {
  engine_shared(std::uint64_t seed, std::function<std::uint64_t()> steady, std::function<std::int64_t()> wall)
      : master_seed(seed), steady_now_us(std::move(steady)), wall_now_s(std::move(wall)) {}

  const std::uint64_t master_seed;
  const std::function<std::uint64_t()> steady_now_us;
  const std::function<std::int64_t()> wall_now_s;

  std::mutex mutex;
  std::shared_ptr<const rule_set> rules = std::make_shared<const rule_set>();   // never null
  std::atomic<std::uint64_t> decide_errors{0};
  // Faults injected by rule name and type since start, whatever rules came and went
  // (limits::injected_series_kept); each loaded rule counts into its own (loaded_rule::total).
  std::map<std::pair<std::string, std::string>, std::shared_ptr<std::uint64_t>> injected_totals;

  // Called with `mutex` held, as `next` is published: each of its rules counts into the total
  // of its name and type.
  void attach_totals(const rule_set& next);
};

}  // namespace mailtap::policies
