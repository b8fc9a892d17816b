// Internal to policies/: the fault_advisor of one session. Holds the session's facts and
// its seeded generator (used by one session thread at a time) and the rule set it opened
// with; evaluates those rules under the engine's mutex (their state is shared). Never throws: an internal failure counts in decide_errors and
// the decision falls back to proceed.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "policies/engine_shared.hpp"
#include "policies/random.hpp"
#include "protocol/fault.hpp"

namespace mailtap::policies {

class session_advisor final : public protocol::fault_advisor {
 public:
  // `rules`: the engine's rule set when the session opened; the session keeps it.
  session_advisor(std::shared_ptr<engine_shared> shared, std::shared_ptr<const rule_set> rules, std::uint64_t number,
                  std::string client_address, bool client_tls);

  // Gives back the reservations still held: what the session decided and never applied.
  ~session_advisor() override;
  session_advisor(const session_advisor&) = delete;
  session_advisor& operator=(const session_advisor&) = delete;

  protocol::session_plan plan_session() override;
  protocol::fault_decision decide(const protocol::fault_query& q) override;
  bool reserve_plan_rule(std::string_view rule) override;
  void applied(std::string_view rule) override;
  void not_applied(std::string_view rule) override;

 private:
  // The probability draw of a rule whose matchers passed (no draw when it is 0 or 1, so a
  // certain rule never shifts the draws of the others).
  bool draw(double probability);
  protocol::fault_decision evaluate(const protocol::fault_query& q, std::uint64_t now_us, std::int64_t wall_s);
  // Holds one use of `rule` for this session (max_count counts it), until settled or the end.
  // Called with shared_->mutex held.
  void reserve(loaded_rule* lr);
  // Takes one reservation of `rule` back (counting it when `count`); false when none is held.
  bool settle(std::string_view rule, bool count);

  std::shared_ptr<engine_shared> shared_;
  std::shared_ptr<const rule_set> rules_;
  session_facts facts_;
  rng random_;
  // The rules this session decided on and the relay has not yet applied or given back, one
  // entry per decision (guarded by shared_->mutex; the rule set keeps them alive).
  std::vector<loaded_rule*> reserved_;
};

}  // namespace mailtap::policies
