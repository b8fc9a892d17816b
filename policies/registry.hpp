// The fault types by name: an explicit list (registry.cpp), no static self-registration,
// and the checks every rule passes before the engine takes it. The list is built once on
// first use (thread-safe static initialisation) and immutable afterwards.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policies/rule.hpp"
#include "policies/types/type.hpp"

namespace mailtap::policies {

const std::vector<fault_type>& fault_types();
const fault_type* find_type(std::string_view name);
// "delay|reply|..." for error messages.
std::string type_names();

// The checks every rule must pass wherever it comes from (the loader, tests, the admin API):
// a name of 1..limits::rule_name_chars printable characters, a known type, phases the type
// allows (empty means its defaults, which are filled in), none for session-wide types, and
// only session-level matchers on those. Returns the problem, or nullopt.
std::optional<std::string> check_rule(rule& r);

// The same check, with the key the problem is about ("code", "phase", ...; "type" for the
// rule as a whole), so a loader can report it at that key's line.
struct rule_problem {
  std::string key;
  std::string text;
};
std::optional<rule_problem> check_rule_at_key(rule& r);

// Printable ASCII without spaces or quotes, 1..limits::rule_name_chars.
bool valid_rule_name(std::string_view name);

}  // namespace mailtap::policies
