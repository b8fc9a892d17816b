// How the session ended (captures/FORMAT.md "End reasons"): timeouts on either side, a
// destination that could not be reached or refused the connection, a failed upstream TLS,
// a stall fault, and a capture that is incomplete (what it says may be partial).
#include "diagnose/checks.hpp"
#include "diagnose/modes.hpp"
#include "protocol/command.hpp"

namespace mailtap::diagnose {

namespace {

evidence_item end_evidence(const captures::end_record& e) {
  return {e.t_us, "end", "end: " + e.reason + (e.detail.empty() ? "" : " (" + e.detail + ")")};
}

// The stage the session was in when it ended: the phase of the last exchange or command.
std::string last_stage(const conversation& c) {
  std::string stage = "session";
  for (const auto* e : c.timeline) {
    if (const auto* cmd = std::get_if<captures::command_event>(e))
      stage = std::string(protocol::to_string(protocol::parse_command(cmd->text).cmd.ph));
  }
  if (!c.cap->transactions.empty() && !c.cap->transactions.back().final_reply && c.cap->transactions.back().size > 0)
    stage = "data_end";
  return stage;
}

void timeout(const conversation& c, const captures::end_record& e, std::vector<finding>& out) {
  finding f;
  f.id = "timeout";
  f.evidence.push_back(end_evidence(e));
  if (e.reason == "upstream_timeout") {
    f.level = severity::error;
    f.source = origin::server;
    f.stage = last_stage(c);
    f.title = "the destination did not reply in time (" + f.stage + ")";
    f.explanation = "The destination went silent and the relay's reply timeout (RFC 5321 4.5.3.2) ran out. " +
                    e.detail;
    f.action = "Look at the destination at that stage: a hung service, a firewall that drops packets, a filter "
               "that holds replies.";
  } else if (e.reason == "client_timeout") {
    f.level = severity::warning;
    f.source = origin::client;
    f.stage = last_stage(c);
    f.title = "the sender was too slow (" + e.detail + ")";
    f.explanation = "The client did not send its next command or its data in time, and the relay closed the "
                    "session with 421 4.4.2.";
    f.action = "Look at the sending application or the network from it; raise [timeouts] if the pause is expected.";
  } else {   // fault_stall
    f.level = severity::error;
    f.source = origin::injected;
    f.stage = last_stage(c);
    f.title = "the session stalled until it was closed";
    f.explanation = "Nothing was answered and nothing read until the stall's maximum ran out.";
    f.action = "A stall fault did this; remove it to deliver.";
    if (const auto* fe = first_fault(c, [](const protocol::fault_event& x) { return x.decision == "stall"; }))
      mark_injected(f, *fe);
  }
  merge_finding(out, std::move(f));
}

void unreachable(const conversation& c, const captures::end_record& e, std::vector<finding>& out) {
  const mode_text& m = mode("destination_unreachable");
  finding f;
  f.id = std::string(m.id);
  f.level = severity::error;
  f.stage = "banner";
  f.title = std::string(m.title);
  f.explanation = std::string(m.explanation);
  f.action = std::string(m.action);
  f.source = origin::server;
  for (const auto* ev : c.timeline)
    if (const auto* n = std::get_if<captures::note_event>(ev))
      if (n->text.rfind("upstream unreachable", 0) == 0 || n->text.rfind("upstream_", 0) == 0)
        f.evidence.push_back(evidence_of(*ev));
  f.evidence.push_back(end_evidence(e));
  finding& held = merge_finding(out, std::move(f));
  if (const auto* fe = first_fault(c, [](const protocol::fault_event& x) { return x.decision == "unreachable"; }))
    mark_injected(held, *fe);
}

}  // namespace

void check_session_end(const conversation& c, std::vector<finding>& out) {
  if (!c.cap->complete) {
    finding f;
    f.id = "capture_incomplete";
    f.level = severity::warning;
    f.stage = "session";
    f.title = c.cap->end ? "capture incomplete: records were dropped" : "capture incomplete: no end record";
    f.explanation = "The capture is missing records (the relay stopped or the writer fell behind), so what follows "
                    "may be partial.";
    f.action = "Check the relay's log for capture write failures at that time.";
    f.source = origin::relay;
    if (c.cap->end) f.evidence.push_back(end_evidence(*c.cap->end));
    out.push_back(std::move(f));
  }
  if (!c.cap->end) return;
  const auto& e = *c.cap->end;
  if (e.reason == "upstream_timeout" || e.reason == "client_timeout" || e.reason == "fault_stall") timeout(c, e, out);
  else if (e.reason == "upstream_unreachable" || e.reason == "upstream_refused") unreachable(c, e, out);
  else if (e.reason == "upstream_tls_failed") {
    finding f;
    f.id = "tls_unavailable";
    f.level = severity::error;
    f.stage = "starttls";
    f.title = "the upstream leg could not be secured as required";
    f.explanation = "TLS to the destination failed (or its certificate did not pass a required check), and the TLS "
                    "settings forbid going on in plaintext. " + e.detail;
    f.action = "Check the destination's certificate and TLS versions, or relax the upstream TLS settings.";
    f.source = origin::server;
    f.evidence.push_back(end_evidence(e));
    merge_finding(out, std::move(f));
  }
}

}  // namespace mailtap::diagnose
