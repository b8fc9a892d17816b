// The fault types by name: an explicit list (registry.cpp), no static self-registration,
// the checks every rule passes before the engine takes it, and the duplicate-name check. The list is built once on
// first use (thread-safe static initialisation) and immutable afterwards.
#pragma once
#include <optional>
#include <span>
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

// The checks every rule passes, wherever it comes from (a scenario file, the config, tests,
// the admin API), written once here: a valid name, a known type, phases the type allows
// (empty means its defaults, which are filled in), none for session-wide types and only
// session-level matchers on those, matchers the relay can know at one of the rule's phases,
// and each type's cross-key rules (a code the relay can stand behind, message_id at data_end,
// nth_recipient at rcpt). The loader reads values; everything about the rule as a whole is
// decided here.

// One problem, with the key it is about ("code", "phase", ...; "type" for the rule as a
// whole), so a loader can report it at that key's line.
struct rule_problem {
  std::string key;
  std::string text;
};
// Every problem of the rule, in the order checked; empty when it is fine.
std::vector<rule_problem> rule_problems(rule& r);
// The first problem's text, or nullopt.
std::optional<std::string> check_rule(rule& r);

// Printable ASCII without spaces or quotes, 1..limits::rule_name_chars.
bool valid_rule_name(std::string_view name);

// Rule names are unique across everything loaded together (a file, a config with its
// scenarios and flags, an engine). The one place duplicates are found: the first rule whose
// name an earlier one has, and the message naming both places:
// "FILE:LINE: key 'name': duplicate rule name 'N' (first at line T)" within one file (T: the
// first rule's [[fault]] line), "(first at FILE:LINE)" across files, "rule 'N': duplicate
// rule name" for rules made in code.
struct duplicate_name {
  const rule* first = nullptr;
  const rule* second = nullptr;
  std::string message;
};
std::optional<duplicate_name> find_duplicate_name(std::span<const rule* const> rules);
std::optional<std::string> duplicate_rule_name(const std::vector<rule>& rules);

}  // namespace mailtap::policies
