// The fault engine: the loaded rules (in load order), their cross-session state
// (greylist triples, quota windows, fail_then_pass attempts, injection counts) and the
// factory of per-session advisors. Thread-safe: one mutex guards rules and state, so rules
// may be added, removed, replaced or reset while sessions decide from several threads. An
// advisor decides with the rules that were loaded when its session opened (a change applies
// to the sessions opened after it), shares their state and may outlive the engine object.
// Clocks are injected. Never throws.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policies/rule.hpp"
#include "protocol/fault.hpp"

namespace mailtap::policies {

struct engine_shared;

struct rule_summary {
  std::string name;
  std::string type;
  std::vector<protocol::phase> phases;
  std::uint64_t injected = 0;                 // times it won (or contributed a rewrite or plan)
  std::optional<std::uint64_t> max_count;
  bool active = false;                        // inside its after/for/until window and under max_count
  bool added_at_runtime = false;              // rule::added_at_runtime: a reload removes it
};

// faults_injected{rule,type}
struct fault_counter {
  std::string rule;
  std::string type;
  std::uint64_t count = 0;
};

class engine {
 public:
  // steady_now_us: a monotonic clock in microseconds (after/for, greylist, quota windows);
  // wall_now_s: Unix seconds (`until` only).
  engine(std::uint64_t master_seed, std::function<std::uint64_t()> steady_now_us,
         std::function<std::int64_t()> wall_now_s);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  // Checks the rule (registry.hpp check_rule: defaults its phases) and appends it; the
  // problem on a duplicate name, a bad rule or past limits::rules_loaded.
  std::optional<std::string> add(rule r);
  // All or none (a scenario file at once). When the problem is a new rule named as one
  // already loaded, `already_loaded` (if given) gets that name, so that a caller can say how to
  // free it (the admin API: remove it first).
  std::optional<std::string> add_all(std::vector<rule> rules, std::string* already_loaded = nullptr);
  // A reload: `rules` become the whole rule set, all or none (on a problem the current rules
  // stay). The new rules start afresh (state and counts); sessions already open keep the
  // rules they opened with, and new sessions get these. `removed_runtime` (if given) gets the
  // names of the rules added at runtime (rule::added_at_runtime) that were in force.
  std::optional<std::string> replace_all(std::vector<rule> rules, std::vector<std::string>* removed_runtime = nullptr);
  // The rule named `name`; when none is, the parts a firewall rule of that name was armed as
  // (`name`/banner, `name`/verbs, ...). False when nothing was removed.
  bool remove(std::string_view name);
  // Every rule, its state and its counts.
  void reset();

  std::vector<rule_summary> list() const;
  // The rules in force, each with its own count (a reset, removal or reload starts it at 0).
  std::vector<fault_counter> counters() const;
  // Every rule name and type loaded since start, with its count (0 for one that never fired:
  // engine_shared::attach_totals), whatever came and went since (limits::injected_series_kept):
  // mailtap_faults_injected_total.
  std::vector<fault_counter> injected_since_start() const;
  std::uint64_t master_seed() const;
  // Decisions that failed inside policies/ (a clock or allocation threw) and fell back to
  // proceed; the relay exports it as a counter.
  std::uint64_t decide_errors() const;

  // The advisor of one session, its generator seeded with session_seed(master, number).
  // client_address as the relay shows it ("192.0.2.1:4711", "[::1]:4711" or a bare address);
  // client_tls: the session starts encrypted (implicit TLS), for session-wide `tls` matchers.
  std::unique_ptr<protocol::fault_advisor> open_session(std::uint64_t session_number, std::string client_address,
                                                        bool client_tls = false) const;

 private:
  std::shared_ptr<engine_shared> shared_;
};

// An engine on the real clocks (steady_clock, system_clock).
std::unique_ptr<engine> make_engine(std::uint64_t master_seed);

}  // namespace mailtap::policies
