// reply_and_close: reply (default 421 4.7.0), then close the connection.
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = reply_and_close_params;

void read(table_reader& r, type_params& tp) { read_reply_key(r, std::get<params>(tp).reply, 200, 599); }

void finish(table_reader& r, type_params& tp) { finish_reply(r, std::get<params>(tp).reply, params{}.reply.code); }

protocol::fault_decision decide(decide_context& c) {
  protocol::fault_decision d;
  d.what = protocol::verdict::reply_and_close;
  d.reply = std::get<params>(c.r.params).reply;
  return d;
}

}  // namespace

fault_type reply_and_close() {
  return {.name = params::type_name,
          .phases = rule_phases(),
          .keys = {"code", "enhanced", "text"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .decide = decide};
}

}  // namespace mailtap::policies::types
