// One decision point: rules in load order, each matching rule draws its probability (before
// max_count is consulted, so the draws depend only on this session's traffic) and decides (stateful types update their state here, winner or not); the verdict of highest
// precedence wins (the first loaded on a tie), rewrites join a proceed or a delay, and only
// the winner and the contributing rewrites count: each is reserved when decided (max_count
// holds it) and counted when the relay says it applied it (applied), or given back uncounted
// (not_applied, or the advisor's end: the session ended before it acted).
#include "policies/session_advisor.hpp"

#include <algorithm>

#include "policies/precedence.hpp"

namespace mailtap::policies {

session_advisor::session_advisor(std::shared_ptr<engine_shared> shared, std::shared_ptr<const rule_set> rules,
                                 std::uint64_t number, std::string client_address, bool client_tls)
    : shared_(std::move(shared)), rules_(std::move(rules)), random_(session_seed(shared_->master_seed, number)) {
  facts_.number = number;
  facts_.client_ip = parse_client_address(client_address);
  facts_.client_key = facts_.client_ip ? to_string(*facts_.client_ip) : client_address;
  facts_.client_address = std::move(client_address);
  facts_.client_tls = client_tls;
  facts_.seed = session_seed(shared_->master_seed, number);
}

session_advisor::~session_advisor() {
  if (reserved_.empty()) return;
  try {
    std::lock_guard lock(shared_->mutex);
    for (loaded_rule* lr : reserved_) --lr->reserved;
  } catch (...) {
    shared_->decide_errors.fetch_add(1);
  }
}

bool session_advisor::settle(std::string_view rule, bool count) {
  std::lock_guard lock(shared_->mutex);
  auto it = std::find_if(reserved_.begin(), reserved_.end(), [&](const loaded_rule* lr) { return lr->r.name == rule; });
  if (it == reserved_.end()) return false;
  loaded_rule* lr = *it;
  reserved_.erase(it);
  --lr->reserved;
  if (count) lr->count_one();
  return true;
}

void session_advisor::applied(std::string_view rule) {
  try {
    settle(rule, true);
  } catch (...) {
    shared_->decide_errors.fetch_add(1);
  }
}

void session_advisor::not_applied(std::string_view rule) {
  try {
    settle(rule, false);
  } catch (...) {
    shared_->decide_errors.fetch_add(1);
  }
}

bool session_advisor::draw(double probability) {
  if (probability >= 1.0) return true;
  if (!(probability > 0.0)) return false;
  return random_.uniform01() < probability;
}

protocol::session_plan session_advisor::plan_session() {
  protocol::session_plan plan;
  if (rules_->empty()) return plan;
  try {
    const std::uint64_t now = shared_->steady_now_us();
    const std::int64_t wall = shared_->wall_now_s();
    std::lock_guard lock(shared_->mutex);
    for (const auto& lr : *rules_) {
      if (lr->stage_at(protocol::phase::data_end) == protocol::fault_stage::message) plan.decides_messages = true;
      if (!lr->type->session_wide) continue;
      const matcher& m = lr->r.match;
      if (!m.active(lr->loaded_us, now, wall) || !m.matches_session(facts_) || !draw(m.probability)) continue;
      if (lr->exhausted()) continue;
      if (!lr->type->plan(lr->r.params, plan)) continue;
      if (!lr->type->counts_when_acting) lr->count_one();
      plan.rules.emplace_back(lr->r.name, std::string(lr->r.type()));
    }
  } catch (...) {
    shared_->decide_errors.fetch_add(1);
    plan = {};
  }
  return plan;
}

void session_advisor::reserve(loaded_rule* lr) {
  reserved_.push_back(lr);
  ++lr->reserved;
}

// Reserved when it acts, not when it was armed: max_count then holds across the sessions that
// armed it at once, as it does for decisions.
bool session_advisor::reserve_plan_rule(std::string_view rule) {
  try {
    std::lock_guard lock(shared_->mutex);
    for (const auto& lr : *rules_) {
      if (lr->r.name != rule || !lr->type->counts_when_acting) continue;
      if (lr->exhausted()) return false;
      reserve(lr.get());
      return true;
    }
  } catch (...) {
    shared_->decide_errors.fetch_add(1);
  }
  return false;
}

protocol::fault_decision session_advisor::decide(const protocol::fault_query& q) {
  if (rules_->empty()) return {};
  try {
    const std::uint64_t now = shared_->steady_now_us();
    const std::int64_t wall = shared_->wall_now_s();
    return evaluate(q, now, wall);
  } catch (...) {
    shared_->decide_errors.fetch_add(1);
    return {};
  }
}

protocol::fault_decision session_advisor::evaluate(const protocol::fault_query& q, std::uint64_t now_us,
                                                   std::int64_t wall_s) {
  struct hit {
    loaded_rule* rule;
    protocol::fault_decision decision;
  };
  std::vector<hit> hits;
  std::lock_guard lock(shared_->mutex);
  for (const auto& lr : *rules_) {
    if (lr->type->session_wide || !lr->r.has_phase(q.ph) || lr->stage_at(q.ph) != q.stage) continue;
    const matcher& m = lr->r.match;
    if (!m.active(lr->loaded_us, now_us, wall_s) || !m.matches(q, facts_) || !draw(m.probability)) continue;
    decide_context c{lr->r, q, facts_, lr->state, now_us, random_};
    protocol::fault_decision d = lr->type->decide(c);
    // After the draws (the probability's and the decision's own, e.g. a delay's jitter): other
    // sessions using up a rule never shift this session's generator.
    if (lr->exhausted()) continue;
    if (d.what == protocol::verdict::proceed && d.rewrites.empty()) continue;   // matched, nothing to inject
    d.rule = lr->r.name;
    d.type = std::string(lr->r.type());
    hits.push_back({lr.get(), std::move(d)});
  }

  const hit* winner = nullptr;
  for (const auto& h : hits) {
    if (h.decision.what == protocol::verdict::proceed) continue;
    if (!winner || precedence_rank(h.decision.what) < precedence_rank(winner->decision.what)) winner = &h;
  }
  // Reserved, not counted: the relay counts what it applies (applied).
  reserved_.reserve(reserved_.size() + hits.size());   // so that nothing below throws half way
  protocol::fault_decision out;
  if (winner) {
    out = winner->decision;
    reserve(winner->rule);
  }
  if (out.what == protocol::verdict::proceed || out.what == protocol::verdict::delay) {
    for (const auto& h : hits) {
      if (h.decision.what != protocol::verdict::proceed) continue;
      merge_rewrites(out.rewrites, h.decision.rewrites);
      out.rewrites.rules.push_back({h.decision.rule, h.decision.type, h.decision.rewrites});
      reserve(h.rule);
    }
  }
  return out;
}

}  // namespace mailtap::policies
