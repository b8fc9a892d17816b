// What became of each message: proof of hand-off (the destination's 2xx to the end of data
// and its queue id), mail lost without a bounce (a 2xx the destination never gave), and an
// ambiguous end of data (the message went upstream, its reply never came: delivered or not,
// nobody knows, and a retry may deliver it twice).
#include <algorithm>

#include "diagnose/checks.hpp"
#include "diagnose/handoff.hpp"
#include "diagnose/modes.hpp"

namespace mailtap::diagnose {

namespace {

evidence_item transaction_evidence(const captures::transaction& t) {
  std::string text = "transaction <" + t.mail_from + "> to";
  for (const auto& r : t.rcpt_to) text += " <" + r + ">";
  text += ": " + std::string(protocol::to_string(t.result));
  if (t.final_reply) {
    text += ", final reply " + std::to_string(t.final_reply->code);
    if (!t.final_reply->enhanced.empty()) text += " " + t.final_reply->enhanced;
    if (!t.final_reply->text.empty()) text += " " + t.final_reply->text;
  }
  if (t.synthesized) text += " (synthesized by the relay)";
  return {t.end_us, "transaction", text};
}

// The end-of-data exchange that closed `t` (its final reply, at the transaction's end).
const exchange* end_reply(const conversation& c, const captures::transaction& t) {
  const exchange* found = nullptr;
  for (const auto& x : c.exchanges)
    if (x.ph == protocol::phase::data_end && x.reply->t_us >= t.start_us && x.reply->t_us <= t.end_us) found = &x;
  return found;
}

void handed_off(const conversation& c, const captures::transaction& t, std::vector<finding>& out) {
  finding f;
  f.id = "handoff";
  f.level = severity::info;
  f.stage = "data_end";
  f.source = origin::server;
  const auto& fr = *t.final_reply;
  f.reply = reply_ref{fr.code, fr.enhanced, fr.text};
  std::string full = fr.text;
  if (const exchange* x = end_reply(c, t)) {
    full.clear();
    for (const auto& l : x->reply->reply.lines) full += (full.empty() ? "" : " ") + l;
    f.evidence = evidence_of(*x);
  }
  f.evidence.push_back(transaction_evidence(t));
  std::string who;
  for (const auto& r : t.rcpt_to) who += (who.empty() ? "" : ", ") + r;
  if (auto q = parse_queue_id(full)) {
    f.queue_id = q->id;
    f.vendor = std::string(q->vendor);
    f.title = "handed off to the destination, queue id " + q->id;
  } else {
    f.title = "handed off to the destination";
  }
  f.explanation = "The destination answered the end of data with " + std::to_string(fr.code) +
                  (fr.enhanced.empty() ? "" : " " + fr.enhanced) +
                  ": it took responsibility for the message (RFC 5321 4.1.1.4) for " + (who.empty() ? "(none)" : who) +
                  ". If the recipient says it is missing, look it up at the destination" +
                  (f.queue_id.empty() ? "." : " by its queue id " + f.queue_id + ".");
  f.action = "Nothing on this path. A missing message is the destination's to trace (its logs, quarantine, filters).";
  out.push_back(std::move(f));
}

void blackholed(const conversation& c, const captures::transaction& t, std::vector<finding>& out) {
  const mode_text& m = mode("blackhole");
  finding f;
  f.id = std::string(m.id);
  f.level = severity::error;
  f.stage = "data_end";
  f.title = std::string(m.title);
  f.explanation = std::string(m.explanation);
  f.action = std::string(m.action);
  f.source = origin::relay;
  if (t.final_reply) f.reply = reply_ref{t.final_reply->code, t.final_reply->enhanced, t.final_reply->text};
  if (const exchange* x = end_reply(c, t)) f.evidence = evidence_of(*x);
  f.evidence.push_back(transaction_evidence(t));
  finding& held = merge_finding(out, std::move(f));
  if (const auto* fe = first_fault(c, [](const protocol::fault_event& x) { return x.decision == "blackhole"; }))
    mark_injected(held, *fe);
}

void ambiguous(const conversation& c, const captures::transaction& t, std::vector<finding>& out) {
  finding f;
  f.id = "ambiguous_end_of_data";
  f.level = severity::error;
  f.stage = "data_end";
  f.title = "end of data ambiguous: delivery status unknown";
  f.explanation = "The whole message, its final dot included, went to the destination, and no reply came back "
                  "before the connection was lost. The destination may have accepted it. The sender was not told "
                  "so (or got a 4xx) and will likely send it again: a risk of duplicate delivery.";
  f.action = "Check at the destination whether the message arrived before letting the sender retry; find why the "
             "connection was lost after the dot (a timeout shorter than 10 minutes, RFC 5321 4.5.3.2.6, a firewall, "
             "a crash).";
  f.source = origin::server;
  for (const auto* e : c.timeline)
    if (const auto* n = std::get_if<captures::note_event>(e))
      if (n->text.rfind("ambiguous end of data", 0) == 0) f.evidence.push_back(evidence_of(*e));
  f.evidence.push_back(transaction_evidence(t));
  if (c.cap->end) f.evidence.push_back({c.cap->end->t_us, "end", "end: " + c.cap->end->reason + " " + c.cap->end->detail});
  merge_finding(out, std::move(f));
}

}  // namespace

void check_delivery(const conversation& c, std::vector<finding>& out) {
  for (const auto& t : c.cap->transactions) {
    if (t.result == protocol::outcome::blackholed ||
        (t.synthesized && t.final_reply && t.final_reply->code / 100 == 2))
      blackholed(c, t, out);
    else if (t.result == protocol::outcome::unknown) ambiguous(c, t, out);
    else if (t.result == protocol::outcome::delivered && t.final_reply) handed_off(c, t, out);
  }
}

}  // namespace mailtap::diagnose
