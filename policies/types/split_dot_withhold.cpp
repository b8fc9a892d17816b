// split_dot_withhold (session-wide), Cisco bug CSCds90792: a '.' and its CRLF that reach
// the relay in separate reads are never passed on, so the sender times out. No keys.
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = split_dot_withhold_params;

bool plan(const type_params&, protocol::session_plan& out) {
  if (out.withhold_split_dot) return false;
  out.withhold_split_dot = true;
  return true;
}

}  // namespace

fault_type split_dot_withhold() {
  return {.name = params::type_name,
          .session_wide = true,
          .counts_when_acting = true,   // most sessions never split a dot: count the ones that do
          .keys = {},
          .make = [] { return type_params{params{}}; },
          .read = [](table_reader&, type_params&) {},
          .plan = plan};
}

}  // namespace mailtap::policies::types
