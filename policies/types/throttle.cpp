// throttle (session-wide): writes on a leg are paced to bytes_per_second. When two rules
// pace the same leg, the one loaded first keeps it.
#include "policies/limits.hpp"
#include "policies/types/shaping.hpp"
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = throttle_params;

void read(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  if (r.key() == "bytes_per_second") {
    if (auto v = r.integer(1, limits::bytes_per_second)) p.bytes_per_second = static_cast<std::uint64_t>(*v);
  } else if (r.key() == "direction") {
    if (auto d = read_direction(r)) p.direction = *d;
  }
}

void finish(table_reader& r, type_params&) {
  if (!r.has("bytes_per_second")) r.fail_key("bytes_per_second", "required for type 'throttle'");
}

bool plan(const type_params& tp, protocol::session_plan& out) {
  const auto& p = std::get<params>(tp);
  return for_legs(p.direction, out, [&](protocol::leg_shaping& leg) {
    if (leg.bytes_per_second != 0 || p.bytes_per_second == 0) return false;
    leg.bytes_per_second = p.bytes_per_second;
    return true;
  });
}

}  // namespace

fault_type throttle() {
  return {.name = params::type_name,
          .session_wide = true,
          .keys = {"bytes_per_second", "direction"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .plan = plan};
}

}  // namespace mailtap::policies::types
