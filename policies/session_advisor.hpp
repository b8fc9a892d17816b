// Internal to policies/: the fault_advisor of one session. Holds the session's facts and
// its seeded generator (used by one session thread at a time) and the rule set it opened
// with; evaluates those rules under the engine's mutex (their state is shared). Never throws: an internal failure counts in decide_errors and
// the decision falls back to proceed.
#pragma once
#include <memory>
#include <string>

#include "policies/engine_shared.hpp"
#include "policies/random.hpp"
#include "protocol/fault.hpp"

namespace mailtap::policies {

class session_advisor final : public protocol::fault_advisor {
 public:
  // `rules`: the engine's rule set when the session opened; the session keeps it.
  session_advisor(std::shared_ptr<engine_shared> shared, std::shared_ptr<const rule_set> rules, std::uint64_t number,
                  std::string client_address, bool client_tls);

  protocol::session_plan plan_session() override;
  protocol::fault_decision decide(const protocol::fault_query& q) override;
  void plan_rule_acted(std::string_view rule) override;

 private:
  // The probability draw of a rule whose matchers passed (no draw when it is 0 or 1, so a
  // certain rule never shifts the draws of the others).
  bool draw(double probability);
  protocol::fault_decision evaluate(const protocol::fault_query& q, std::uint64_t now_us, std::int64_t wall_s);

  std::shared_ptr<engine_shared> shared_;
  std::shared_ptr<const rule_set> rules_;
  session_facts facts_;
  rng random_;
};

}  // namespace mailtap::policies
