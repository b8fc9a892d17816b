// stall: stop answering and stop reading commands, for `max` or until the peer gives up.
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = stall_params;

void read(table_reader& r, type_params& tp) {
  if (auto d = r.duration()) {
    if (*d == 0) r.fail("expected a duration > 0 (leave 'max' out to stall until the peer gives up)");
    else std::get<params>(tp).max_us = *d;
  }
}

protocol::fault_decision decide(decide_context& c) {
  protocol::fault_decision d;
  d.what = protocol::verdict::stall;
  d.stall_max_us = std::get<params>(c.r.params).max_us;
  return d;
}

}  // namespace

fault_type stall() {
  return {.name = params::type_name,
          .phases = rule_phases(),
          .keys = {"max"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .decide = decide};
}

}  // namespace mailtap::policies::types
