// reply: answer with this reply instead of forwarding the command (at connect/banner it
// replaces the greeting; at data_end it is decided when DATA arrives).
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = reply_params;

void read(table_reader& r, type_params& tp) { read_reply_key(r, std::get<params>(tp).reply, 200, 599); }

void finish(table_reader& r, type_params& tp) {
  auto& reply = std::get<params>(tp).reply;
  if (!r.has("code")) return r.fail_key("code", "required for type 'reply'");
  if (!r.has("text")) reply.text = default_reply_text(reply.code);
  finish_reply(r, reply, reply.code);
}

protocol::fault_decision decide(decide_context& c) {
  protocol::fault_decision d;
  d.what = protocol::verdict::reply;
  d.reply = std::get<params>(c.r.params).reply;
  return d;
}

}  // namespace

fault_type reply() {
  return {.name = params::type_name,
          .phases = rule_phases(),
          .keys = {"code", "enhanced", "text"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .decide = decide};
}

}  // namespace mailtap::policies::types
