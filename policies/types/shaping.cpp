// Direction handling shared by throttle and slice.
#include "policies/types/shaping.hpp"

namespace mailtap::policies::types {

std::optional<shaping_direction> read_direction(table_reader& r) {
  auto v = r.choice({"to_client", "to_upstream", "both"});
  if (!v) return std::nullopt;
  if (*v == "to_client") return shaping_direction::to_client;
  if (*v == "to_upstream") return shaping_direction::to_upstream;
  return shaping_direction::both;
}

bool for_legs(shaping_direction d, protocol::session_plan& plan, const std::function<bool(protocol::leg_shaping&)>& edit) {
  bool any = false;
  if (d != shaping_direction::to_upstream) any = edit(plan.to_client) || any;
  if (d != shaping_direction::to_client) any = edit(plan.to_upstream) || any;
  return any;
}

}  // namespace mailtap::policies::types
