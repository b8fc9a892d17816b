// The list of fault types. To add one: write types/<name>.cpp, declare it in
// types/types.hpp, add its params to types/params.hpp and list it here (README "Adding a fault type").
#include "policies/registry.hpp"

#include <algorithm>
#include <unordered_map>

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

namespace {

std::optional<std::string> check_reply_code(const rule& r);

std::string phase_list(const std::vector<protocol::phase>& phases) {
  std::string out;
  for (auto p : phases) {
    if (!out.empty()) out += '|';
    out += protocol::to_string(p);
  }
  return out;
}

bool allows(const fault_type& t, protocol::phase p) {
  return std::find(t.phases.begin(), t.phases.end(), p) != t.phases.end();
}

// A session-wide type is decided once at connect: nothing of a command is known yet.
void check_session_wide(const rule& r, const fault_type& t, std::vector<rule_problem>& out) {
  const std::string why = "not allowed here: type '" + std::string(t.name) +
                          "' is session-wide (decided once at connect): it can match only client, tls, "
                          "nth_session, after, for, until, probability and max_count";
  if (!r.phases.empty()) out.push_back({"phase", why});
  for (auto key : r.match.query_keys()) out.push_back({std::string(key), why});
}

void check_phases(rule& r, const fault_type& t, std::vector<rule_problem>& out) {
  if (r.phases.empty()) {
    if (t.default_phases.empty()) {
      out.push_back({"phase", "required for type '" + std::string(t.name) + "' (one of " +
                                  phase_list(rule_phases()) + ")"});
      return;
    }
    r.phases = t.default_phases;
  }
  for (auto p : r.phases)
    if (!allows(t, p))
      out.push_back({"phase", "phase '" + std::string(protocol::to_string(p)) + "' is not allowed for type '" +
                                  std::string(t.name) + "' (allowed: " + phase_list(t.phases) + ")"});
}

// ---- where a matcher can be known

using protocol::fault_stage;
using protocol::phase;

// What the relay's query carries at each decision point (protocol/fault_holds.cpp: query_for
// and its callers). The verb, argument and line length are filled in only when a command is
// asked about before it goes on: not at connect, banner or data_end, and not at its reply.
bool on_a_command(phase p, fault_stage s) {
  const auto& commands = command_phases();
  return s == fault_stage::command && std::find(commands.begin(), commands.end(), p) != commands.end();
}

// Only MAIL and RCPT carry an address (protocol/command.cpp), on the command and its reply.
bool at_mail_or_rcpt(phase p, fault_stage) { return p == phase::mail || p == phase::rcpt; }

bool after_a_hello(phase p, fault_stage) { return p != phase::connect && p != phase::banner; }

// A transaction's own phases and the commands a client may send inside one. EHLO, HELO and
// STARTTLS start the session afresh (RFC 5321 4.1.4, RFC 3207 4.2) and AUTH is refused inside
// a transaction (RFC 4954 4): none of them has a sender or recipients of its own.
bool in_a_transaction(phase p, fault_stage) {
  switch (p) {
    case phase::connect:
    case phase::banner:
    case phase::ehlo:
    case phase::helo:
    case phase::starttls:
    case phase::auth: return false;
    default: return true;
  }
}

bool from_rcpt_on(phase p, fault_stage s) { return p != phase::mail && in_a_transaction(p, s); }

struct matcher_need {
  std::string_view key;
  std::string_view what;   // "the sender is"
  bool (*known)(phase, fault_stage);
  std::string_view where;
};

constexpr std::string_view at_a_command =
    "at a command (any phase but connect, banner and data_end), before it goes on: not at its reply (a delay "
    "needs when = \"command\")";
constexpr std::string_view in_one =
    "in a transaction: at mail, rcpt, data, data_end, bdat and the commands a client may send inside one (rset, "
    "noop, vrfy, expn, help, quit, other)";
constexpr std::string_view in_one_from_rcpt =
    "in a transaction from rcpt on: at rcpt, data, data_end, bdat and the commands a client may send inside one "
    "(rset, noop, vrfy, expn, help, quit, other)";

// Every query-dependent matcher but nth_recipient, which has its own, stricter check (phase rcpt only).
constexpr matcher_need matcher_needs[] = {
    {"verb", "the verb is", on_a_command, at_a_command},
    {"argument", "the argument is", on_a_command, at_a_command},
    {"line_longer_than", "the command line is", on_a_command, at_a_command},
    {"address_longer_than", "the MAIL or RCPT address is", at_mail_or_rcpt, "at mail and rcpt"},
    {"ehlo", "the EHLO or HELO name is", after_a_hello, "once one was sent: not at connect or banner"},
    {"sender", "the sender is", in_a_transaction, in_one},
    {"sender_domain", "the sender is", in_a_transaction, in_one},
    {"nth_transaction", "the transaction is", in_a_transaction, in_one},
    {"recipient", "the recipients are", from_rcpt_on, in_one_from_rcpt},
    {"recipient_domain", "the recipients are", from_rcpt_on, in_one_from_rcpt},
    {"recipients_more_than", "the recipients are", from_rcpt_on, in_one_from_rcpt},
};

const matcher_need* need_of(std::string_view key) {
  for (const auto& n : matcher_needs)
    if (n.key == key) return &n;
  return nullptr;
}

// A matcher known at none of the rule's phases would let the rule load and never act (a
// capabilities rule, at ehlo, with a recipient). One phase where it can be known is enough.
void check_matchers_known(const rule& r, const fault_type& t, bool defaulted, std::vector<rule_problem>& out) {
  for (auto key : r.match.query_keys()) {
    const matcher_need* need = need_of(key);
    if (!need || std::any_of(r.phases.begin(), r.phases.end(),
                             [&](phase p) { return need->known(p, t.stage_at(r.params, p)); }))
      continue;
    std::string at = r.phases.size() == 1 ? "phase '" + std::string(protocol::to_string(r.phases.front())) + "'"
                                          : "any of phases " + phase_list(r.phases);
    if (defaulted) at += ", the default of type '" + std::string(t.name) + "'";
    out.push_back({std::string(key), "can never match at " + at + " (" + std::string(need->what) +
                                         " known only " + std::string(need->where) + ")"});
  }
}

}  // namespace

std::vector<rule_problem> rule_problems(rule& r) {
  std::vector<rule_problem> out;
  if (!valid_rule_name(r.name))
    out.push_back({"name", "expected 1 to " + std::to_string(limits::rule_name_chars) +
                               " printable ASCII characters without spaces or quotes, got '" + echo(r.name) + "'"});
  const fault_type* t = find_type(r.type());
  if (!t) {
    out.push_back({"type", "unknown fault type '" + echo(r.type()) + "'"});
    return out;
  }
  if (!(r.match.probability >= 0.0 && r.match.probability <= 1.0))
    out.push_back({"probability", "probability must be from 0.0 to 1.0"});
  if (t->session_wide) {
    check_session_wide(r, *t, out);
    return out;
  }
  const bool defaulted = r.phases.empty();
  check_phases(r, *t, out);
  if (!out.empty()) return out;
  if (const auto* f = std::get_if<fail_then_pass_params>(&r.params);
      f && f->key == fail_then_pass_params::key_kind::message_id &&
      (r.phases.size() != 1 || r.phases.front() != protocol::phase::data_end))
    out.push_back({"phase", "key 'message_id' needs phase 'data_end' (the Message-ID is known once the message is in)"});
  // The Nth RCPT of a transaction exists only at `rcpt`; elsewhere the matcher would never pass.
  if (r.match.nth_recipient && (r.phases.size() != 1 || r.phases.front() != protocol::phase::rcpt))
    out.push_back({"nth_recipient", "nth_recipient matches only at phase 'rcpt' (set phase = \"rcpt\")"});
  check_matchers_known(r, *t, defaulted, out);
  if (auto problem = check_reply_code(r)) {
    const bool about_phase = problem->starts_with("phase 'bdat'");
    out.push_back({about_phase ? "phase" : "code", *problem});
  }
  return out;
}

std::optional<std::string> check_rule(rule& r) {
  auto problems = rule_problems(r);
  if (problems.empty()) return std::nullopt;
  return std::move(problems.front().text);
}

namespace {

// "FILE" of an origin "FILE:LINE".
std::string_view origin_file(std::string_view origin) { return origin.substr(0, origin.rfind(':')); }

std::string duplicate_message(const rule& first, const rule& second) {
  std::string where;
  if (!first.origin.empty() && !second.origin.empty() && first.table_line > 0 &&
      origin_file(first.origin) == origin_file(second.origin))
    where = " (first at line " + std::to_string(first.table_line) + ")";
  else if (!first.origin.empty())
    where = " (first at " + first.origin + ")";
  if (second.origin.empty()) return "rule '" + echo(second.name) + "': duplicate rule name" + where;
  return second.origin + ": key 'name': duplicate rule name '" + echo(second.name) + "'" + where;
}

}  // namespace

std::optional<duplicate_name> find_duplicate_name(std::span<const rule* const> rules) {
  std::unordered_map<std::string_view, const rule*> seen;
  for (const rule* r : rules) {
    auto [it, fresh] = seen.emplace(r->name, r);
    if (!fresh) return duplicate_name{it->second, r, duplicate_message(*it->second, *r)};
  }
  return std::nullopt;
}

std::optional<std::string> duplicate_rule_name(const std::vector<rule>& rules) {
  std::vector<const rule*> all;
  all.reserve(rules.size());
  for (const auto& r : rules) all.push_back(&r);
  auto d = find_duplicate_name(all);
  if (!d) return std::nullopt;
  return std::move(d->message);
}

namespace {

// The relay answers in a fault's place, so the code must leave it in a state it can carry on
// from. 1xx/3xx would start an exchange the fault never finishes (a 354 would turn the body
// into commands, a 334 the credentials, a 220 to STARTTLS the TLS handshake). A 2xx is only a
// plain acceptance of a command that was not forwarded; never at the greeting, STARTTLS, AUTH
// or the message (ARCHITECTURE.md, "Invariants": only `blackhole` may answer the message with 2xx),
// nor at MAIL or RCPT: a recipient the destination never saw would then seem covered by its 250
// to the message, lost while every record says delivered (MAIL: a transaction it never saw). A
// fault on the message goes at `data_end`, which covers DATA and BDAT alike; `bdat` takes no reply.
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
    if (klass == 2 && (p == phase::mail || p == phase::rcpt))
      return "code " + std::to_string(reply->code) + " at phase '" + std::string(protocol::to_string(p)) +
             (p == phase::mail ? "': a 2xx there opens a transaction the destination never sees"
                               : "': a 2xx there accepts a recipient the destination never sees, and the "
                                 "destination's 250 to the message would then seem to cover it") +
             " (use a 4xx or 5xx to refuse it, 'blackhole' to accept a message and deliver nothing)";
    if (klass == 2 && (p == phase::connect || p == phase::banner || p == phase::starttls || p == phase::auth ||
                       p == phase::data || p == phase::data_end))
      return "code " + std::to_string(reply->code) + " at phase '" + std::string(protocol::to_string(p)) +
             "': a 2xx there is not a fault the relay can stand behind (use type 'banner' for a greeting, "
             "'blackhole' for a message)";
  }
  return std::nullopt;
}

}  // namespace

}  // namespace mailtap::policies
