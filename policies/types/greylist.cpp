// greylist (default phase rcpt): the first attempt for a (client address, sender,
// recipient) triple is refused, and so is every retry sooner than retry_after; after that
// the triple passes, across connections. Triples live in the rule's state.
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = greylist_params;

void read(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  if (r.key() == "retry_after") {
    if (auto d = r.duration()) p.retry_after_us = *d;
    return;
  }
  read_reply_key(r, p.reply, 400, 599);
}

void finish(table_reader& r, type_params& tp) { finish_reply(r, std::get<params>(tp).reply, params{}.reply.code); }

// At rcpt the triple's recipient is this command's; elsewhere all recipients, sorted.
std::string triple(const decide_context& c) {
  std::string key = c.session.client_key;
  key += '\0';
  key += state_sender(c.q);
  key += '\0';
  if (c.q.ph == protocol::phase::rcpt) {
    protocol::fault_query only_this = c.q;
    only_this.recipients = {};
    key += state_recipients(only_this, ',');
  } else {
    key += state_recipients(c.q, ',');
  }
  return key;
}

protocol::fault_decision decide(decide_context& c) {
  const auto& p = std::get<params>(c.r.params);
  bool created = false;
  state_entry& e = c.state.get(triple(c), created);
  if (created) e.first_us = c.now_us;
  protocol::fault_decision d;
  const std::uint64_t waited = c.now_us > e.first_us ? c.now_us - e.first_us : 0;
  if (created || waited < p.retry_after_us) {
    d.what = protocol::verdict::reply;
    d.reply = p.reply;
  }
  return d;
}

}  // namespace

fault_type greylist() {
  return {.name = params::type_name,
          .phases = rule_phases(),
          .default_phases = {protocol::phase::rcpt},
          .keys = {"retry_after", "code", "enhanced", "text"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .decide = decide};
}

}  // namespace mailtap::policies::types
