// The Cisco PIX "fixup protocol smtp" / ASA "inspect esmtp" fingerprint (README "Fault
// reference", policies/README.md "Firewall profiles"): a greeting masked with '*' (every
// character but '2', '0' and space; Postfix recognises a PIX the same way), EHLO answered
// 500 (the firewall overwrote the verb with X's), STARTTLS shown as XXXXXXXA in the EHLO
// reply, and an end of data whose '.' and CRLF came in separate segments never answered.
#include <algorithm>

#include "diagnose/checks.hpp"
#include "diagnose/modes.hpp"
#include "protocol/fault.hpp"

namespace mailtap::diagnose {

namespace {

using protocol::phase;

bool masked_greeting(const captures::reply_event& r) {
  bool star = false;
  for (const auto& line : r.reply.lines)
    for (char ch : line) {
      if (ch == '*') star = true;
      else if (ch != '2' && ch != '0' && ch != ' ' && ch != '\t') return false;
    }
  return star;
}

bool masked_starttls(const captures::reply_event& r) {
  return std::any_of(r.reply.lines.begin(), r.reply.lines.end(),
                     [](const std::string& l) { return l.find("XXXXXXXA") != std::string::npos; });
}

bool firewall_fault(const protocol::fault_event& f) {
  return f.type == "banner" || f.type == "verb_filter" || f.type == "split_dot_withhold" ||
         (f.type == "capabilities" && f.detail.find("XXXXXXXA") != std::string::npos) ||
         f.rule.find("cisco") != std::string::npos;
}

// The client's '.' and its CRLF in two reads: one client read ending in "\r\n." (or being
// just "."), the next starting with "\r\n".
const captures::bytes_event* split_dot(const conversation& c) {
  const captures::bytes_event* last = nullptr;
  for (const auto* e : c.timeline) {
    const auto* b = std::get_if<captures::bytes_event>(e);
    if (!b || b->leg != protocol::leg::client || b->dir != protocol::direction::in) continue;
    if (last && b->data.rfind("\r\n", 0) == 0) {
      const std::string& d = last->data;
      if (d == "." || (d.size() >= 3 && d.compare(d.size() - 3, 3, "\r\n.") == 0)) return b;
    }
    last = b;
  }
  return nullptr;
}

// A message with no reply to its end of data (the transaction has no final reply).
bool unanswered_message(const conversation& c) {
  return std::any_of(c.cap->transactions.begin(), c.cap->transactions.end(), [](const captures::transaction& t) {
    return !t.final_reply && t.size > 0;
  });
}

// A masked EHLO ("XXXX") is a command the destination does not know: 500 (sendmail, Exim) or
// 502 (Postfix: "502 5.5.2 Error: command not recognized"), RFC 5321 4.2.4.
bool refused_as_unknown(int code) { return code == 500 || code == 502; }

}  // namespace

void check_firewall(const conversation& c, std::vector<finding>& out) {
  std::vector<evidence_item> seen;
  bool banner = false, starttls = false, withheld = false;
  for (const exchange& x : c.exchanges) {
    const auto& r = *x.reply;
    if (x.ph == phase::banner && masked_greeting(r)) {
      banner = true;
      seen.push_back(evidence_of(r));
    } else if (x.ph == phase::ehlo && refused_as_unknown(r.reply.code)) {
      for (auto& e : evidence_of(x)) seen.push_back(std::move(e));
    } else if (x.ph == phase::ehlo && masked_starttls(r)) {
      starttls = true;
      seen.push_back(evidence_of(r));
    }
  }
  for (const auto* e : c.timeline)
    if (const auto* n = std::get_if<captures::note_event>(e))
      if (n->text == protocol::note_split_dot_withheld) {
        withheld = true;
        seen.push_back(evidence_of(*e));
      }
  if (!withheld && unanswered_message(c))
    if (const auto* b = split_dot(c)) {
      withheld = true;
      seen.push_back({b->t_us, "bytes", "client in: '.' and its CRLF in separate segments, no reply to the end of data"});
    }
  if (!banner && !starttls && !withheld) return;
  // The 500 to EHLO is this finding's evidence, not a refusal of its own.
  out.erase(std::remove_if(out.begin(), out.end(),
                           [](const finding& g) {
                             return g.id == "command_rejected" && g.stage == "ehlo" && g.reply && refused_as_unknown(g.reply->code);
                           }),
            out.end());

  const mode_text& m = mode("firewall_fixup");
  finding f;
  f.id = std::string(m.id);
  f.stage = withheld ? "data_end" : banner ? "banner" : "ehlo";
  f.level = withheld || c.cap->transactions.empty() ? severity::error : severity::warning;
  f.title = std::string(m.title);
  std::string signs;
  auto sign = [&](bool on, const char* what) {
    if (on) signs += (signs.empty() ? "" : "; ") + std::string(what);
  };
  sign(banner, "the greeting is masked with '*'");
  sign(std::any_of(seen.begin(), seen.end(), [](const evidence_item& e) { return e.text.rfind("C> EHLO", 0) == 0; }),
       "EHLO was answered as an unknown command (500 or 502)");
  sign(starttls, "STARTTLS shows as XXXXXXXA");
  sign(withheld, "an end of data split over two segments got no reply");
  f.explanation = "Seen here: " + signs + ". " + std::string(m.explanation);
  f.action = std::string(m.action);
  f.source = origin::server;
  std::stable_sort(seen.begin(), seen.end(), [](const evidence_item& a, const evidence_item& b) { return a.t_us < b.t_us; });
  f.evidence = std::move(seen);
  finding& held = merge_finding(out, std::move(f));
  // The rule that acted (masked the banner, answered EHLO 500), before a session-wide plan that
  // may never have (split_dot_withhold on a session whose dot came in one segment). A finding at
  // the withheld end of data is the withholding rule's (a newcomer's trial: it named the banner's).
  const captures::fault_event* fe = nullptr;
  if (withheld)
    fe = first_fault(c, [](const protocol::fault_event& x) { return x.type == "split_dot_withhold" && x.decision != "plan"; });
  if (!fe) fe = first_fault(c, [](const protocol::fault_event& x) { return firewall_fault(x) && x.decision != "plan"; });
  if (!fe) fe = first_fault(c, [](const protocol::fault_event& x) { return firewall_fault(x); });
  if (fe) mark_injected(held, *fe);
}

}  // namespace mailtap::diagnose
