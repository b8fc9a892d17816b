// disconnect: FIN; with `code`, that reply is sent first. At data_end the dot never goes upstream.
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = disconnect_params;

void read(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  if (!p.reply) p.reply = protocol::reply_spec{};
  read_reply_key(r, *p.reply, 200, 599);
}

void finish(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  if (!r.has("code")) {
    if (r.has("enhanced")) r.fail_key("enhanced", "needs 'code' (without it nothing is sent before the FIN)");
    if (r.has("text")) r.fail_key("text", "needs 'code' (without it nothing is sent before the FIN)");
    p.reply.reset();
    return;
  }
  if (!r.has("text")) p.reply->text = "Closing connection";
  finish_reply(r, *p.reply, p.reply->code);
}

protocol::fault_decision decide(decide_context& c) {
  const auto& p = std::get<params>(c.r.params);
  protocol::fault_decision d;
  d.what = protocol::verdict::disconnect;
  if (p.reply) {
    d.with_reply = true;
    d.reply = *p.reply;
  }
  return d;
}

}  // namespace

fault_type disconnect() {
  return {.name = params::type_name,
          .phases = rule_phases(),
          .keys = {"code", "enhanced", "text"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .decide = decide};
}

}  // namespace mailtap::policies::types
