// Rule management: add (checked, names made unique by registry.hpp's find_duplicate_name,
// bounded), replace (a reload), remove, reset, summaries. Each change publishes a new rule_set
// (engine_shared.hpp).
#include "policies/engine.hpp"

#include <algorithm>
#include <chrono>
#include <set>
#include <utility>

#include "policies/engine_shared.hpp"
#include "policies/limits.hpp"
#include "policies/registry.hpp"
#include "policies/session_advisor.hpp"

namespace mailtap::policies {

protocol::fault_stage loaded_rule::stage_at(protocol::phase p) const { return type->stage_at(r.params, p); }

engine::engine(std::uint64_t master_seed, std::function<std::uint64_t()> steady_now_us,
               std::function<std::int64_t()> wall_now_s)
    : shared_(std::make_shared<engine_shared>(master_seed, std::move(steady_now_us), std::move(wall_now_s))) {}

engine::~engine() = default;

std::optional<std::string> engine::add(rule r) {
  std::vector<rule> one;
  one.push_back(std::move(r));
  return add_all(std::move(one));
}

namespace {

// The first name `fresh` repeats, within itself or of `current` (registry.hpp: the one
// duplicate check, naming both places); `already_loaded` gets the name when the first of the
// two is in `current`.
std::optional<std::string> repeated_name(const rule_set& current, const rule_set& fresh,
                                         std::string* already_loaded = nullptr) {
  std::vector<const rule*> all;   // the loaded ones first: a new rule is the duplicate
  for (const auto& lr : current) all.push_back(&lr->r);
  for (const auto& lr : fresh) all.push_back(&lr->r);
  auto duplicate = find_duplicate_name(all);
  if (!duplicate) return std::nullopt;
  if (already_loaded && std::any_of(current.begin(), current.end(), [&](const auto& lr) { return &lr->r == duplicate->first; }))
    *already_loaded = duplicate->first->name;
  return std::move(duplicate->message);
}

// Checks every rule and makes its loaded form (names unique within `rules`); the problem
// otherwise. Nothing is published here.
std::optional<std::string> prepare(std::vector<rule>& rules, rule_set& fresh) {
  for (auto& r : rules) {
    if (auto problem = check_rule(r)) return "rule '" + r.name + "': " + *problem;
    auto lr = std::make_shared<loaded_rule>();
    lr->type = find_type(r.type());
    lr->r = std::move(r);
    fresh.push_back(std::move(lr));
  }
  if (fresh.size() > limits::rules_loaded) return "more than " + std::to_string(limits::rules_loaded) + " rules loaded";
  return repeated_name({}, fresh);
}

}  // namespace

std::optional<std::string> engine::add_all(std::vector<rule> rules, std::string* already_loaded) {
  try {
    rule_set fresh;
    if (auto problem = prepare(rules, fresh)) return problem;
    const std::uint64_t now = shared_->steady_now_us();
    std::lock_guard lock(shared_->mutex);
    const rule_set& current = *shared_->rules;
    if (current.size() + fresh.size() > limits::rules_loaded)
      return "more than " + std::to_string(limits::rules_loaded) + " rules loaded";
    if (auto problem = repeated_name(current, fresh, already_loaded)) return problem;
    auto next = std::make_shared<rule_set>(current);
    for (auto& lr : fresh) {
      lr->loaded_us = now;
      next->push_back(std::move(lr));
    }
    shared_->attach_totals(*next);
    shared_->rules = std::move(next);
    return std::nullopt;
  } catch (const std::exception& e) {
    return std::string("cannot add rules: ") + e.what();
  } catch (...) {
    return "cannot add rules";
  }
}

std::optional<std::string> engine::replace_all(std::vector<rule> rules, std::vector<std::string>* removed_runtime) {
  try {
    auto fresh = std::make_shared<rule_set>();
    if (auto problem = prepare(rules, *fresh)) return problem;
    const std::uint64_t now = shared_->steady_now_us();
    for (auto& lr : *fresh) lr->loaded_us = now;
    std::shared_ptr<const rule_set> gone;   // freed after the lock is released
    {
      std::lock_guard lock(shared_->mutex);
      shared_->attach_totals(*fresh);
      gone = std::exchange(shared_->rules, std::move(fresh));
    }
    if (removed_runtime)
      for (const auto& lr : *gone)
        if (lr->r.added_at_runtime) removed_runtime->push_back(lr->r.name);
    return std::nullopt;
  } catch (const std::exception& e) {
    return std::string("cannot replace rules: ") + e.what();
  } catch (...) {
    return "cannot replace rules";
  }
}

bool engine::remove(std::string_view name) {
  std::lock_guard lock(shared_->mutex);
  const rule_set& current = *shared_->rules;
  const bool exact = std::any_of(current.begin(), current.end(), [&](const auto& lr) { return lr->r.name == name; });
  // A firewall rule was armed as its parts, NAME/banner, NAME/verbs...: its name removes them all
  // (and only them: a rule someone named NAME/x stays).
  const auto removed = [&](const rule& r) { return exact ? r.name == name : r.firewall_of == name; };
  auto next = std::make_shared<rule_set>();
  for (const auto& lr : current)
    if (!removed(lr->r)) next->push_back(lr);
  if (next->size() == current.size()) return false;
  shared_->rules = std::move(next);
  return true;
}

void engine::reset() {
  auto empty = std::make_shared<const rule_set>();
  std::shared_ptr<const rule_set> gone;   // freed after the lock is released
  std::lock_guard lock(shared_->mutex);
  gone = std::exchange(shared_->rules, std::move(empty));
  shared_->decide_errors = 0;
}

std::vector<rule_summary> engine::list() const {
  std::vector<rule_summary> out;
  try {
    const std::uint64_t now = shared_->steady_now_us();
    const std::int64_t wall = shared_->wall_now_s();
    std::lock_guard lock(shared_->mutex);
    for (const auto& lr : *shared_->rules) {
      out.push_back({lr->r.name, std::string(lr->r.type()), lr->r.phases, lr->injected, lr->r.match.max_count,
                     !lr->exhausted() && lr->r.match.active(lr->loaded_us, now, wall), lr->r.added_at_runtime});
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
    for (const auto& lr : *shared_->rules) out.push_back({lr->r.name, std::string(lr->r.type()), lr->injected});
  } catch (...) {
    // Out of memory: what was collected so far.
  }
  return out;
}

std::vector<fault_counter> engine::injected_since_start() const {
  std::vector<fault_counter> out;
  try {
    std::lock_guard lock(shared_->mutex);
    for (const auto& [key, total] : shared_->injected_totals) out.push_back({key.first, key.second, *total});
  } catch (...) {
    // Out of memory: what was collected so far.
  }
  return out;
}

void engine_shared::attach_totals(const rule_set& next) {
  for (const auto& lr : next) {
    if (lr->total) continue;
    auto key = std::make_pair(lr->r.name, std::string(lr->r.type()));
    auto found = injected_totals.find(key);
    if (found == injected_totals.end()) {
      if (injected_totals.size() >= limits::injected_series_kept) {
        // Make room: the series of rules loaded neither now nor in `next` go.
        std::set<std::pair<std::string, std::string>> in_force;
        for (const auto* set : {rules.get(), &next})
          for (const auto& other : *set) in_force.emplace(other->r.name, std::string(other->r.type()));
        for (auto it = injected_totals.begin(); it != injected_totals.end();)
          it = in_force.contains(it->first) ? std::next(it) : injected_totals.erase(it);
      }
      found = injected_totals.emplace(std::move(key), std::make_shared<std::uint64_t>(0)).first;
    }
    lr->total = found->second;
  }
}

std::uint64_t engine::master_seed() const { return shared_->master_seed; }

std::uint64_t engine::decide_errors() const { return shared_->decide_errors.load(); }

std::unique_ptr<protocol::fault_advisor> engine::open_session(std::uint64_t session_number, std::string client_address,
                                                              bool client_tls) const {
  std::shared_ptr<const rule_set> rules;
  {
    std::lock_guard lock(shared_->mutex);
    rules = shared_->rules;
  }
  return std::make_unique<session_advisor>(shared_, std::move(rules), session_number, std::move(client_address),
                                           client_tls);
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
