// Shared by the shaping types (throttle, slice): reading `direction` and applying a rule
// to the legs it names in a session plan. Owns nothing. Pure functions, thread-safe.
#pragma once
#include <functional>

#include "policies/types/type.hpp"

namespace mailtap::policies::types {

std::optional<shaping_direction> read_direction(table_reader& r);
// Calls `edit` on each leg `d` covers; true when any call returned true.
bool for_legs(shaping_direction d, protocol::session_plan& plan, const std::function<bool(protocol::leg_shaping&)>& edit);

}  // namespace mailtap::policies::types
