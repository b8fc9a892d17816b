// fail_then_pass (default phase data_end): the first `failures` attempts with the same key
// (envelope = sender + sorted recipients, sender, client, or the message's Message-ID) fail,
// then they pass, across connections. Attempt counts live in the rule's state. Keyed by
// Message-ID it acts at the message stage (after the body, before the dot goes upstream).
#include "policies/limits.hpp"
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = fail_then_pass_params;

void read(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  const auto k = r.key();
  if (k == "failures") {
    if (auto v = r.integer(1, limits::count_value)) p.failures = static_cast<std::uint64_t>(*v);
  } else if (k == "key") {
    if (auto v = r.choice({"envelope", "sender", "client", "message_id"}))
      p.key = *v == "envelope"  ? params::key_kind::envelope
              : *v == "sender"  ? params::key_kind::sender
              : *v == "client"  ? params::key_kind::client
                                : params::key_kind::message_id;
  } else {
    read_reply_key(r, p.reply, 400, 599);
  }
}

void finish(table_reader& r, type_params& tp) {
  if (!r.has("failures")) r.fail_key("failures", "required for type 'fail_then_pass'");
  finish_reply(r, std::get<params>(tp).reply, params{}.reply.code);
}

std::string attempt_key(const decide_context& c, params::key_kind k) {
  switch (k) {
    case params::key_kind::envelope: return state_sender(c.q) + '\0' + state_recipients(c.q, '\0');
    case params::key_kind::sender: return state_sender(c.q);
    case params::key_kind::client: return c.session.client_key;
    case params::key_kind::message_id: return std::string(c.q.message_id);
  }
  return {};
}

protocol::fault_decision decide(decide_context& c) {
  const auto& p = std::get<params>(c.r.params);
  if (p.key == params::key_kind::message_id && c.q.message_id.empty()) return {};   // nothing to count by
  bool created = false;
  state_entry& e = c.state.get(attempt_key(c, p.key), created);
  if (e.count <= p.failures) ++e.count;   // saturates just past `failures`: passes stay passes
  protocol::fault_decision d;
  if (e.count <= p.failures) {
    d.what = protocol::verdict::reply;
    d.reply = p.reply;
  }
  return d;
}

}  // namespace

fault_type fail_then_pass() {
  return {.name = params::type_name,
          .phases = rule_phases(),
          .default_phases = {protocol::phase::data_end},
          .keys = {"failures", "key", "code", "enhanced", "text"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .stage = [](const type_params& tp) {
            return std::get<params>(tp).key == params::key_kind::message_id ? protocol::fault_stage::message
                                                                              : protocol::fault_stage::command;
          },
          .decide = decide};
}

}  // namespace mailtap::policies::types
