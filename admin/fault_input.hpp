// A request body that adds fault rules, read through the same loader and checks as scenario
// files (policies/scenario_loader.hpp, policies/registry.hpp): TOML with `[[fault]]` tables,
// or JSON — one rule as an object, an array of them, or {"fault": [...]} — whose objects are
// the same keys and values as a `[[fault]]` table (a duration is a string, "250ms"). A
// problem is one line; TOML problems name the body's line ("request:LINE: key 'K': ...").
// Pure, thread-safe.
#pragma once
#include <string_view>

#include "policies/scenario_loader.hpp"

namespace mailtap::admin {

enum class body_format { toml, json };

policies::load_result rules_from_body(std::string_view body, body_format format);

}  // namespace mailtap::admin
