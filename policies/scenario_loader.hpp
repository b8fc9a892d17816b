// Scenario loading (policies/README.md "Scenario files"): the [[fault]] tables of a parsed
// TOML document become checked rules, firewall profiles expanded. Strict: an unknown key,
// a key of another type, a wrong value type or range, a bad duration, CIDR or phase is an
// error, reported for the first problem in file order as one line "FILE:LINE: key 'K': problem".
// Pure apart from load_scenario reading its file. Never throws. Thread-safe.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "policies/rule.hpp"

namespace mailtap::policies {

struct load_result {
  std::vector<rule> rules;   // in file order; empty when error is set
  std::string error;         // one line, empty on success
  bool ok() const { return error.empty(); }
};

// The document's `fault` array of tables (absent: no rules, no error; other keys are the
// caller's, e.g. the main config's). `file` is the name shown in errors.
load_result rules_from_toml(const toml::table& doc, std::string_view file);

// A scenario file: only [[fault]] tables, at least one, at most limits::scenario_file_bytes.
load_result load_scenario(const std::string& path);

// The first rule whose name an earlier one already has (names are unique across everything
// loaded), as "FILE:LINE: key 'name': duplicate rule name 'N' (first at FILE:LINE)".
std::optional<std::string> duplicate_rule_name(const std::vector<rule>& rules);

}  // namespace mailtap::policies
