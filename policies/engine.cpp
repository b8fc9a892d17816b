// Rule management: add (checked and names made unique by registry.hpp, bounded), remove, reset, summaries.
#include "policies/engine.hpp"

#include <algorithm>
#include <chrono>

#include "policies/engine_shared.hpp"
#include "policies/limits.hpp"
#include "policies/registry.hpp"
#include "policies/session_advisor.hpp"

namespace mailtap::policies {

protocol::fault_stage loaded_rule::stage_at(protocol::phase p) const {
  if (p == protocol::phase::connect) return protocol::fault_stage::command;
  if (p == protocol::phase::banner) return protocol::fault_stage::reply;
  return type->stage ? type->stage(r.params) : protocol::fault_stage::command;
}

engine::engine(std::uint64_t master_seed, std::function<std::uint64_t()> steady_now_us,
               std::function<std::int64_t()> wall_now_s)
    : shared_(std::make_shared<engine_shared>(master_seed, std::move(steady_now_us), std::move(wall_now_s))) {}

engine::~engine() = default;

std::optional<std::string> engine::add(rule r) {
  std::vector<rule> one;
  one.push_back(std::move(r));
  return add_all(std::move(one));
}

std::optional<std::string> engine::add_all(std::vector<rule> rules) {
  try {
    std::vector<std::unique_ptr<loaded_rule>> fresh;
    for (auto& r : rules) {
      if (auto problem = check_rule(r)) return "rule '" + r.name + "': " + *problem;
      auto lr = std::make_unique<loaded_rule>();
      lr->type = find_type(r.type());
      lr->r = std::move(r);
      fresh.push_back(std::move(lr));
    }
    const std::uint64_t now = shared_->steady_now_us();
    std::lock_guard lock(shared_->mutex);
    if (shared_->rules.size() + fresh.size() > limits::rules_loaded)
      return "more than " + std::to_string(limits::rules_loaded) + " rules loaded";
    std::vector<const rule*> all;   // the loaded ones first: a new rule is the duplicate
    for (const auto& lr : shared_->rules) all.push_back(&lr->r);
    for (const auto& lr : fresh) all.push_back(&lr->r);
    if (auto duplicate = find_duplicate_name(all)) return std::move(duplicate->message);
    for (auto& lr : fresh) {
      lr->loaded_us = now;
      shared_->rules.push_back(std::move(lr));
    }
    shared_->rule_count.store(shared_->rules.size(), std::memory_order_relaxed);
    return std::nullopt;
  } catch (const std::exception& e) {
    return std::string("cannot add rules: ") + e.what();
  } catch (...) {
    return "cannot add rules";
  }
}

bool engine::remove(std::string_view name) {
  std::lock_guard lock(shared_->mutex);
  auto& rules = shared_->rules;
  const auto it = std::find_if(rules.begin(), rules.end(), [&](const auto& lr) { return lr->r.name == name; });
  if (it == rules.end()) return false;
  rules.erase(it);
  shared_->rule_count.store(rules.size(), std::memory_order_relaxed);
  return true;
}

void engine::reset() {
  std::vector<std::unique_ptr<loaded_rule>> gone;   // freed after the lock is released
  std::lock_guard lock(shared_->mutex);
  gone.swap(shared_->rules);
  shared_->rule_count.store(0, std::memory_order_relaxed);
  shared_->decide_errors = 0;
}

std::vector<rule_summary> engine::list() const {
  std::vector<rule_summary> out;
  try {
    const std::uint64_t now = shared_->steady_now_us();
    const std::int64_t wall = shared_->wall_now_s();
    std::lock_guard lock(shared_->mutex);
    for (const auto& lr : shared_->rules) {
      out.push_back({lr->r.name, std::string(lr->r.type()), lr->r.phases, lr->injected, lr->r.match.max_count,
                     !lr->exhausted() && lr->r.match.active(lr->loaded_us, now, wall)});
    }
  } catch (...) {
    // Out of memory: what was collected so far.
  }
  return out;
}

std::vector<fault_counter> engine::counters() const {
  std::vector<fault_counter> out;
  try {
    std::lock_guard lock(shared_->mutex);
    for (const auto& lr : shared_->rules) out.push_back({lr->r.name, std::string(lr->r.type()), lr->injected});
  } catch (...) {
    // Out of memory: what was collected so far.
  }
  return out;
}

std::uint64_t engine::master_seed() const { return shared_->master_seed; }

std::uint64_t engine::decide_errors() const { return shared_->decide_errors.load(); }

std::unique_ptr<protocol::fault_advisor> engine::open_session(std::uint64_t session_number, std::string client_address,
                                                              bool client_tls) const {
  return std::make_unique<session_advisor>(shared_, session_number, std::move(client_address), client_tls);
}

std::unique_ptr<engine> make_engine(std::uint64_t master_seed) {
  return std::make_unique<engine>(
      master_seed,
      [] {
        return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                              std::chrono::steady_clock::now().time_since_epoch())
                                              .count());
      },
      [] {
        return static_cast<std::int64_t>(
            std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
      });
}

}  // namespace mailtap::policies
