// reset: RST (SO_LINGER 0) instead of an orderly close. No keys.
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = reset_params;

protocol::fault_decision decide(decide_context&) {
  protocol::fault_decision d;
  d.what = protocol::verdict::reset;
  return d;
}

}  // namespace

fault_type reset() {
  return {.name = params::type_name,
          .phases = rule_phases(),
          .keys = {},
          .make = [] { return type_params{params{}}; },
          .read = [](table_reader&, type_params&) {},
          .decide = decide};
}

}  // namespace mailtap::policies::types
