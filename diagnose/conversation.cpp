// The conversation view: replies paired with their commands (captures/reply_pairing.hpp),
// each attributed to the destination, the relay, or the fault rule whose record made it.
#include "diagnose/conversation.hpp"

#include <algorithm>

#include "captures/reply_pairing.hpp"
#include "diagnose/classify.hpp"
#include "protocol/command.hpp"

namespace mailtap::diagnose {

namespace {

using captures::event;

bool is_reply_decision(const std::string& d) {
  return d == "reply" || d == "reply_and_close" || d == "disconnect" || d == "blackhole" || d == "unreachable";
}

// A fault record that answered with a reply carries it in its detail: "552 5.2.2 Mailbox
// full", or "greeting: 554 5.7.1 ..." at connect. It is written when the fault is done, so it
// may follow its reply in the file at the same time; it never comes later in time.
bool fault_made(const captures::fault_event& f, const captures::reply_event& r) {
  if (!is_reply_decision(f.fault.decision) || f.t_us > r.t_us) return false;
  if (f.fault.decision == "unreachable") return true;
  const std::string code = std::to_string(r.reply.code);
  const std::string& d = f.fault.detail;
  return d.rfind(code, 0) == 0 || d.find(": " + code) != std::string::npos;
}

// The fault's detail is this very reply, text and all (protocol/fault_holds.cpp describes it
// so): "250 2.0.0 Ok: queued as 4F2", or after "greeting: ". The relay's own replies around it
// may share its code and time (a pipelined chunk's "250 2.0.0 chunk accepted").
bool fault_names(const captures::fault_event& f, const captures::reply_event& r) {
  if (!fault_made(f, r)) return false;
  std::string said = std::to_string(r.reply.code);
  if (!r.reply.enhanced.empty()) said += " " + r.reply.enhanced;
  if (const std::string text = r.reply.text(); !text.empty()) said += " " + text;
  const std::string& d = f.fault.detail;
  return d == said || d.ends_with(": " + said);
}

// The fault that made each reply of `paired` the relay sent on its own (null for the rest):
// first each fault whose detail is the reply's whole text, then by code the faults left, in
// time order, so a reply of the same code that came first takes no other reply's fault.
std::vector<const captures::fault_event*> faults_of(const std::vector<captures::paired_reply>& paired,
                                                    std::vector<const captures::fault_event*> faults) {
  std::vector<const captures::fault_event*> made_by(paired.size(), nullptr);
  for (auto matches : {&fault_names, &fault_made})
    for (std::size_t i = 0; i < paired.size(); ++i) {
      const auto& p = paired[i];
      if (made_by[i] || p.edit || p.reply->leg != protocol::leg::client) continue;
      auto it = std::find_if(faults.begin(), faults.end(), [&](const auto* f) { return matches(*f, *p.reply); });
      if (it == faults.end()) continue;
      made_by[i] = *it;
      faults.erase(it);
    }
  return made_by;
}

// The rewrite a verb filter records as it overwrites a client's command with X
// (protocol/fault_holds.cpp, forward_masked_command): at the command's own time, naming its
// verb ("command overwritten with X: AUTH"); pipelined commands share the time, not the verb.
constexpr std::string_view masking_prefix = "command overwritten with X: ";

// Those rewrites, in time order: looked up per command, so a capture of N commands pipelined
// at one time costs N lookups, not N scans of the timeline (a hostile trial: 40,000 RCPTs in
// one read took diagnose 5.9 s, quadratic).
std::vector<const captures::fault_event*> masking_faults(const std::vector<const event*>& timeline) {
  std::vector<const captures::fault_event*> out;
  for (const event* e : timeline)
    if (const auto* f = std::get_if<captures::fault_event>(e);
        f && f->fault.decision == "rewrite" && f->fault.detail.starts_with(masking_prefix))
      out.push_back(f);
  return out;
}

const captures::fault_event* masking_fault(const std::vector<const captures::fault_event*>& masks,
                                           const captures::command_event& cmd) {
  if (masks.empty()) return nullptr;
  const std::string verb = protocol::to_upper(std::string_view(cmd.text).substr(0, cmd.text.find(' ')));
  const auto first = std::lower_bound(masks.begin(), masks.end(), cmd.t_us,
                                      [](const captures::fault_event* f, std::uint64_t t) { return f->t_us < t; });
  for (auto it = first; it != masks.end() && (*it)->t_us == cmd.t_us; ++it)
    if (protocol::iequals(std::string_view((*it)->fault.detail).substr(masking_prefix.size()), verb)) return *it;
  return nullptr;
}

std::string reply_lines(const captures::reply_event& r, const char* who) {
  if (r.reply.lines.empty()) return std::string(who) + std::to_string(r.reply.code);
  std::string out;
  for (std::size_t i = 0; i < r.reply.lines.size(); ++i) {
    if (i) out += "\n";
    out += who + std::to_string(r.reply.code) + (i + 1 == r.reply.lines.size() ? " " : "-") + r.reply.lines[i];
  }
  return out;
}

std::string fault_text(const protocol::fault_event& x) {
  std::string line = x.rule.empty() ? "(unnamed rule)" : x.rule;
  if (!x.type.empty()) line += " (" + x.type + ")";
  line += " " + x.decision + " at " + std::string(protocol::to_string(x.ph));
  if (!x.detail.empty()) line += ": " + x.detail;
  return line;
}

}  // namespace

std::string reply_text(const captures::reply_event& r) { return r.reply.text(); }

evidence_item evidence_of(const captures::reply_event& r) {
  const char* who = r.leg == protocol::leg::upstream ? "S< " : "R> ";
  return {r.t_us, "reply", reply_lines(r, who)};
}

evidence_item evidence_of(const event& e) {
  if (const auto* r = std::get_if<captures::reply_event>(&e)) return evidence_of(*r);
  if (const auto* c = std::get_if<captures::command_event>(&e))
    return {c->t_us, "command", (c->leg == protocol::leg::upstream ? "U> " : "C> ") + c->text};
  if (const auto* n = std::get_if<captures::note_event>(&e)) return {n->t_us, "note", "!! " + n->text};
  if (const auto* f = std::get_if<captures::fault_event>(&e)) return {f->t_us, "fault", "F! " + fault_text(f->fault)};
  if (const auto* t = std::get_if<captures::tls_event>(&e))
    return {t->t_us, "tls", "== TLS " + std::string(protocol::to_string(t->leg)) + ": " + t->tls.version + " " +
                                t->tls.cipher + (t->tls.verification.empty() ? "" : ", " + t->tls.verification)};
  const auto& b = std::get<captures::bytes_event>(e);
  return {b.t_us, "bytes", std::string(b.leg == protocol::leg::client ? "client " : "upstream ") +
                               (b.dir == protocol::direction::in ? "in: " : "out: ") + protocol::escape_bytes(b.data, 80)};
}

// Only a 421 to the relay's command reaches the client in its command's place
// (protocol/fault_holds.cpp, answer_absorbed_go_with_421); any other reply stays the relay's.
protocol::phase exchange::client_ph() const {
  return in_place_of && reply->reply.code == 421 ? protocol::parse_command(in_place_of->text).cmd.ph : ph;
}

std::vector<evidence_item> evidence_of(const exchange& x) {
  std::vector<evidence_item> out;
  if (x.in_place_of) out.push_back(evidence_of(event{*x.in_place_of}));
  if (x.command) out.push_back(evidence_of(event{*x.command}));
  if (x.fault) out.push_back(evidence_of(event{*x.fault}));
  out.push_back(evidence_of(*x.reply));
  return out;
}

namespace {

// The MTA or gateway the destination names itself: in its greeting, else in its reply to EHLO
// (or HELO), each as the destination sent it (not a fault's, not the relay's masked copy).
std::string named_server(const conversation& conv) {
  for (auto ph : {protocol::phase::banner, protocol::phase::ehlo, protocol::phase::helo})
    for (const exchange& x : conv.exchanges) {
      if (x.ph != ph || x.source != origin::server || x.edit) continue;
      for (const auto& line : x.reply->reply.lines)
        if (auto v = vendor_of(line); !v.empty()) return std::string(v);
    }
  return "";
}

}  // namespace

conversation read_conversation(const captures::capture& c) {
  conversation conv;
  conv.cap = &c;
  conv.timeline = captures::timeline_of(c);
  std::vector<const captures::fault_event*> faults;   // reply-making faults not matched yet
  for (const event* e : conv.timeline)
    if (const auto* f = std::get_if<captures::fault_event>(e))
      if (is_reply_decision(f->fault.decision)) faults.push_back(f);
  const auto masks = masking_faults(conv.timeline);
  const auto paired = captures::pair_replies(conv.timeline);
  const auto made_by = faults_of(paired, std::move(faults));
  conv.exchanges.reserve(paired.size());
  for (std::size_t i = 0; i < paired.size(); ++i) {
    const auto& p = paired[i];
    exchange x;
    x.reply = p.reply;
    x.command = p.command;
    x.ph = p.ph;
    x.edit = p.edit;
    x.in_place_of = p.in_place_of;
    x.source = p.reply->leg == protocol::leg::upstream ? origin::server : origin::relay;
    if (x.source == origin::server && x.command && x.command->leg == protocol::leg::client)
      x.fault = masking_fault(masks, *x.command);
    if (const auto* f = made_by[i]) {
      x.source = origin::injected;
      x.fault = f;
      // The fault's phase is the stage it answered (a greeting at connect, the end of data).
      if (f->fault.ph == protocol::phase::connect || f->fault.ph == protocol::phase::banner)
        x.ph = protocol::phase::banner;
      else if (f->fault.ph == protocol::phase::data_end) x.ph = protocol::phase::data_end;
    }
    conv.exchanges.push_back(x);
  }
  conv.server_vendor = named_server(conv);
  return conv;
}

}  // namespace mailtap::diagnose
