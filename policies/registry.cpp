// The list of fault types. To add one: write types/<name>.cpp, declare it in
// types/types.hpp, add its params to types/params.hpp and list it here (README "Adding a fault type").
#include "policies/registry.hpp"

#include <algorithm>

#include "policies/limits.hpp"
#include "policies/types/types.hpp"

namespace mailtap::policies {

const std::vector<fault_type>& fault_types() {
  static const std::vector<fault_type> list = {
      types::delay(),          types::reply(),          types::reply_and_close(),
      types::disconnect(),     types::reset(),          types::stall(),
      types::throttle(),       types::slice(),          types::capabilities(),
      types::banner(),         types::greylist(),       types::quota(),
      types::fail_then_pass(), types::blackhole(),      types::upstream_unreachable(),
      types::verb_filter(),    types::split_dot_withhold(),
  };
  return list;
}

const fault_type* find_type(std::string_view name) {
  for (const auto& t : fault_types())
    if (t.name == name) return &t;
  return nullptr;
}

std::string type_names() {
  std::string out;
  for (const auto& t : fault_types()) {
    if (!out.empty()) out += '|';
    out += t.name;
  }
  return out;
}

bool valid_rule_name(std::string_view name) {
  if (name.empty() || name.size() > limits::rule_name_chars) return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return c > 0x20 && c < 0x7f && c != '"' && c != '\'' && c != '\\';
  });
}

std::optional<std::string> check_rule(rule& r) {
  if (!valid_rule_name(r.name))
    return "rule name must be 1 to " + std::to_string(limits::rule_name_chars) +
           " printable characters without spaces or quotes";
  const fault_type* t = find_type(r.type());
  if (!t) return "unknown fault type '" + std::string(r.type()) + "'";
  if (!(r.match.probability >= 0.0 && r.match.probability <= 1.0)) return "probability must be from 0.0 to 1.0";
  if (t->session_wide) {
    if (!r.phases.empty()) return "type '" + std::string(t->name) + "' is session-wide and takes no phase";
    if (!r.match.session_level_only())
      return "type '" + std::string(t->name) + "' is session-wide: it can match only client, tls, nth_session, after, "
             "for, until, probability and max_count";
    return std::nullopt;
  }
  if (r.phases.empty()) {
    if (t->default_phases.empty()) return "type '" + std::string(t->name) + "' needs a phase";
    r.phases = t->default_phases;
  }
  for (auto p : r.phases)
    if (std::find(t->phases.begin(), t->phases.end(), p) == t->phases.end())
      return "phase '" + std::string(protocol::to_string(p)) + "' is not allowed for type '" + std::string(t->name) + "'";
  return std::nullopt;
}

}  // namespace mailtap::policies
