// upstream_unreachable (phase connect): behave as if the destination refused the
// connection (421 4.4.1 to the client) or accepted it and never greeted (the relay waits
// for timeouts.upstream_greeting, then answers 421).
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = upstream_unreachable_params;

void read(table_reader& r, type_params& tp) {
  if (auto v = r.choice({"refused", "no_greeting"})) std::get<params>(tp).no_greeting = *v == "no_greeting";
}

protocol::fault_decision decide(decide_context& c) {
  const auto& p = std::get<params>(c.r.params);
  protocol::fault_decision d;
  d.what = protocol::verdict::unreachable;
  d.no_greeting = p.no_greeting;
  d.reply = {421, "4.4.1",
             p.no_greeting ? "Upstream did not greet, try again later" : "Upstream refused the connection, try again later"};
  return d;
}

}  // namespace

fault_type upstream_unreachable() {
  return {.name = params::type_name,
          .phases = {protocol::phase::connect},
          .default_phases = {protocol::phase::connect},
          .keys = {"mode"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .decide = decide};
}

}  // namespace mailtap::policies::types
