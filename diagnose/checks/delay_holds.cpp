// A delay rule (when = "command") holding the client's end of data or a command in mailtap when
// the destination ended the session: with a 421 (checks/replies.cpp) or by hanging up without a
// reply (checks/session_end.cpp). The destination waited for what the rule held until its own
// timeout, so the rule's hold is the likely cause, and both findings say so in the same words.
#include <algorithm>

#include "diagnose/checks.hpp"
#include "protocol/command.hpp"

namespace mailtap::diagnose {

std::vector<const captures::fault_event*> delay_holds_at(const conversation& c, std::uint64_t t_us) {
  std::vector<const captures::fault_event*> out;
  for (const auto* e : c.timeline) {
    const auto* fe = std::get_if<captures::fault_event>(e);
    if (!fe || fe->fault.decision != "delay") continue;
    const auto& detail = fe->fault.detail;
    if (!detail.starts_with("end of data held") && !detail.starts_with("command held")) continue;
    // Its record is written as the hold ends (protocol/fault_holds.cpp), after its actual delay.
    const std::uint64_t began = fe->t_us - std::min(fe->t_us, fe->fault.actual_delay_us);
    if (fe->t_us < t_us || began > t_us) continue;
    out.push_back(fe);
  }
  return out;
}

bool holds_end_of_data(const captures::fault_event& hold) { return hold.fault.detail.starts_with("end of data held"); }

void blame_delay_hold(finding& f, const captures::fault_event& hold, std::uint64_t at_us, bool said_421) {
  const auto& h = hold.fault;
  const bool dot = holds_end_of_data(hold);
  const std::string what = dot ? "the client's end of data" : "the client's " + protocol::to_upper(protocol::to_string(h.ph));
  const std::uint64_t into = at_us - std::min(at_us, hold.t_us - std::min(hold.t_us, h.actual_delay_us));
  f.title = said_421 ? "the destination closed the session with 421 while a delay rule held " + what
                     : "the destination closed the connection while a delay rule held " + what;
  f.explanation = std::string(said_421 ? "The destination answered 421 and closed the connection (RFC 5321 3.8) "
                                       : "The destination hung up without a reply ") +
                  duration_text(into) + " into the fault rule '" + h.rule + "' (" + h.type + ") holding " + what +
                  " in mailtap" +
                  (dot ? ": it had the message's body and waited for its end, which never came. "
                       : ": it waited for a command that never came. ") +
                  "A destination times out a client that sends nothing for longer than its limit (Postfix: "
                  "smtpd_timeout), and closes so: the rule's hold " +
                  (said_421 ? "caused this 421" : "most likely caused this close (a destination may also close "
                                                  "without the 421 it owes, RFC 5321 3.8)") +
                  ", not a failure of the destination. Nothing more reached it; a sender keeps the message queued "
                  "and tries again later.";
  f.action = "Make the rule's delay shorter than the destination's timeout to see what the hold alone does, or "
             "remove or narrow the rule to see the destination's own behaviour.";
  f.source = origin::injected;
  f.rule = h.rule;
  f.evidence.push_back(evidence_of(captures::event{hold}));
  std::stable_sort(f.evidence.begin(), f.evidence.end(),
                   [](const evidence_item& a, const evidence_item& b) { return a.t_us < b.t_us; });
}

}  // namespace mailtap::diagnose
