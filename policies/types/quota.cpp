// quota (default phase mail): per client, sender or all, the first `limit` matches in a
// window pass and the rest fail (452 4.5.3 by default, any 4xx/5xx; a 421 also closes)
// until the window, which starts at its first match, ends. Windows live in the rule's state.
#include "policies/limits.hpp"
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = quota_params;

void read(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  const auto k = r.key();
  if (k == "limit") {
    if (auto v = r.integer(0, limits::count_value)) p.limit = static_cast<std::uint64_t>(*v);
  } else if (k == "window") {
    if (auto d = r.duration()) {
      if (*d == 0) r.fail("expected a duration > 0");
      else p.window_us = *d;
    }
  } else if (k == "per") {
    if (auto v = r.choice({"client", "sender", "all"}))
      p.per = *v == "client" ? params::per_kind::client : *v == "sender" ? params::per_kind::sender : params::per_kind::all;
  } else {
    read_reply_key(r, p.reply, 400, 599);   // code, enhanced, text
  }
}

// Any 4xx or 5xx, so real limits can be reproduced (Gmail's daily sending limit is
// "550 5.4.5"). Without `enhanced` only the defaults' own codes get one: 452 4.5.3 and
// 421 4.7.0 (RFC 3463 3.6 and 3.8); a 421 closes the connection, as RFC 5321 3.8 says it does.
void finish(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  if (!r.has("limit")) r.fail_key("limit", "required for type 'quota'");
  if (!r.has("window")) r.fail_key("window", "required for type 'quota'");
  auto& reply = p.reply;
  if (!r.has("enhanced")) reply.enhanced = reply.code == 452 ? "4.5.3" : reply.code == 421 ? "4.7.0" : "";
  if (!r.has("text"))
    reply.text = reply.code == 421  ? "Quota exceeded, closing connection"
                 : reply.code < 500 ? "Quota exceeded, please try again later"
                                    : "Quota exceeded";
  if (!reply.enhanced.empty() && reply.enhanced[0] - '0' != reply.code / 100)
    r.fail_key("enhanced", "class " + reply.enhanced.substr(0, 1) + " does not match code " +
                               std::to_string(reply.code) + " (RFC 3463: the class is the code's first digit)");
}

std::string window_key(const decide_context& c, params::per_kind per) {
  switch (per) {
    case params::per_kind::client: return c.session.client_key;
    case params::per_kind::sender: return state_sender(c.q);
    case params::per_kind::all: return {};
  }
  return {};
}

protocol::fault_decision decide(decide_context& c) {
  const auto& p = std::get<params>(c.r.params);
  bool created = false;
  state_entry& e = c.state.get(window_key(c, p.per), created);
  if (created || c.now_us < e.first_us || c.now_us - e.first_us >= p.window_us) {
    e.first_us = c.now_us;
    e.count = 0;
  }
  ++e.count;
  protocol::fault_decision d;
  if (e.count > p.limit) {
    d.what = p.reply.code == 421 ? protocol::verdict::reply_and_close : protocol::verdict::reply;
    d.reply = p.reply;
  }
  return d;
}

}  // namespace

fault_type quota() {
  return {.name = params::type_name,
          .phases = rule_phases(),
          .default_phases = {protocol::phase::mail},
          .keys = {"limit", "window", "per", "code", "enhanced", "text"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .decide = decide};
}

}  // namespace mailtap::policies::types
