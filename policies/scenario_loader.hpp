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

#include "config_reader/table_reader.hpp"
#include "policies/registry.hpp"
#include "policies/rule.hpp"

namespace mailtap::policies {

struct load_result {
  std::vector<rule> rules;   // in file order; empty when error is set
  std::string error;         // one line, empty on success
  bool ok() const { return error.empty(); }
};

// The document's `fault` array of tables (absent: no rules, no error; other keys are the
// caller's, e.g. the main config's), problems reported to the document's log (so a config
// file's own keys and its [[fault]] tables share one first-in-file-order report). Names
// unique within the document. Empty when the log has a problem.
std::vector<rule> read_fault_tables(config_reader::problem_log& log, const toml::table& doc);

// The same with a log of its own; `file` is the name shown in errors.
load_result rules_from_toml(const toml::table& doc, std::string_view file);

// A scenario file: only [[fault]] tables, at least one, at most limits::scenario_file_bytes.
load_result load_scenario(const std::string& path);

// Names across files: registry.hpp duplicate_rule_name.

}  // namespace mailtap::policies
