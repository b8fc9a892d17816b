// The list of fault types. To add one: write types/<name>.cpp, declare it in
// types/types.hpp, add its params to types/params.hpp and list it here (README "Adding a fault type").
#include "policies/registry.hpp"

#include <algorithm>

#include "policies/limits.hpp"
#include "policies/types/types.hpp"

namespace mailtap::policies {

const std::vector<fault_type>& fault_types() {
  static const std::vector<fault_type> list = {
      types::delay(),          types::reply(),          types::reply_and_close(),
      types::disconnect(),     types::reset(),          types::stall(),
      types::throttle(),       types::slice(),          types::capabilities(),
      types::banner(),         types::greylist(),       types::quota(),
      types::fail_then_pass(), types::blackhole(),      types::upstream_unreachable(),
      types::verb_filter(),    types::split_dot_withhold(),
  };
  return list;
}

const fault_type* find_type(std::string_view name) {
  for (const auto& t : fault_types())
    if (t.name == name) return &t;
  return nullptr;
}

std::string type_names() {
  std::string out;
  for (const auto& t : fault_types()) {
    if (!out.empty()) out += '|';
    out += t.name;
  }
  return out;
}

bool valid_rule_name(std::string_view name) {
  if (name.empty() || name.size() > limits::rule_name_chars) return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return c > 0x20 && c < 0x7f && c != '"' && c != '\'' && c != '\\';
  });
}

std::optional<std::string> check_reply_code(const rule& r);

std::optional<rule_problem> check_rule_at_key(rule& r) {
  auto at = [](std::string key, std::string text) { return rule_problem{std::move(key), std::move(text)}; };
  if (!valid_rule_name(r.name))
    return at("name", "rule name must be 1 to " + std::to_string(limits::rule_name_chars) +
                          " printable characters without spaces or quotes");
  const fault_type* t = find_type(r.type());
  if (!t) return at("type", "unknown fault type '" + std::string(r.type()) + "'");
  if (!(r.match.probability >= 0.0 && r.match.probability <= 1.0))
    return at("probability", "probability must be from 0.0 to 1.0");
  if (t->session_wide) {
    if (!r.phases.empty()) return at("phase", "type '" + std::string(t->name) + "' is session-wide and takes no phase");
    if (!r.match.session_level_only())
      return at("type", "type '" + std::string(t->name) +
                            "' is session-wide: it can match only client, tls, nth_session, after, "
                            "for, until, probability and max_count");
    return std::nullopt;
  }
  if (r.phases.empty()) {
    if (t->default_phases.empty()) return at("phase", "type '" + std::string(t->name) + "' needs a phase");
    r.phases = t->default_phases;
  }
  for (auto p : r.phases)
    if (std::find(t->phases.begin(), t->phases.end(), p) == t->phases.end())
      return at("phase", "phase '" + std::string(protocol::to_string(p)) + "' is not allowed for type '" +
                             std::string(t->name) + "'");
  if (const auto* f = std::get_if<fail_then_pass_params>(&r.params);
      f && f->key == fail_then_pass_params::key_kind::message_id &&
      (r.phases.size() != 1 || r.phases.front() != protocol::phase::data_end))
    return at("phase", "key 'message_id' needs phase 'data_end' (the Message-ID is known once the message is in)");
  // The Nth RCPT of a transaction exists only at `rcpt`; elsewhere the matcher would never pass.
  if (r.match.nth_recipient && (r.phases.size() != 1 || r.phases.front() != protocol::phase::rcpt))
    return at("nth_recipient", "nth_recipient matches only at phase 'rcpt' (set phase = \"rcpt\")");
  if (auto problem = check_reply_code(r)) {
    const bool about_phase = problem->starts_with("phase 'bdat'");
    return at(about_phase ? "phase" : "code", *problem);
  }
  return std::nullopt;
}

std::optional<std::string> check_rule(rule& r) {
  auto problem = check_rule_at_key(r);
  if (!problem) return std::nullopt;
  return std::move(problem->text);
}

// The relay answers in a fault's place, so the code must leave it in a state it can carry on
// from. 1xx/3xx would start an exchange the fault never finishes (a 354 would turn the body
// into commands, a 334 the credentials, a 220 to STARTTLS the TLS handshake). A 2xx is only a
// plain acceptance of a command that was not forwarded; never at the greeting, STARTTLS, AUTH
// or the message (ARCHITECTURE.md, "Invariants": only `blackhole` may answer the message with 2xx). A fault on the
// message goes at `data_end`, which covers DATA and BDAT alike; `bdat` takes no reply.
std::optional<std::string> check_reply_code(const rule& r) {
  const protocol::reply_spec* reply = nullptr;
  if (const auto* rp = std::get_if<reply_params>(&r.params)) reply = &rp->reply;
  else if (const auto* cp = std::get_if<reply_and_close_params>(&r.params)) reply = &cp->reply;
  else if (const auto* dp = std::get_if<disconnect_params>(&r.params); dp && dp->reply) reply = &*dp->reply;
  if (!reply) return std::nullopt;
  const int klass = reply->code / 100;
  if (klass != 2 && klass != 4 && klass != 5)
    return "code " + std::to_string(reply->code) + ": a fault's reply is 2xx, 4xx or 5xx (a 1xx/3xx starts an exchange it never finishes)";
  for (auto p : r.phases) {
    using protocol::phase;
    if (p == phase::bdat)
      return "phase 'bdat' takes no reply: put a fault on the message at phase 'data_end' (it covers DATA and BDAT)";
    if (klass == 2 && (p == phase::connect || p == phase::banner || p == phase::starttls || p == phase::auth ||
                       p == phase::data || p == phase::data_end))
      return "code " + std::to_string(reply->code) + " at phase '" + std::string(protocol::to_string(p)) +
             "': a 2xx there is not a fault the relay can stand behind (use type 'banner' for a greeting, "
             "'blackhole' for a message)";
  }
  return std::nullopt;
}

}  // namespace mailtap::policies
