// What became of each message: proof of hand-off (the destination's 2xx to the end of data
// and its queue id), mail lost without a bounce (a 2xx the destination never gave), and an
// ambiguous end of data (the message went upstream, its reply never came: delivered or not,
// nobody knows, and a retry may deliver it twice), and a message the destination accepted
// after its sender had closed the connection (a retry delivers it twice).
#include <algorithm>

#include "diagnose/checks.hpp"
#include "diagnose/end_of_data.hpp"
#include "diagnose/handoff.hpp"
#include "diagnose/modes.hpp"
#include "protocol/relay_fsm.hpp"

namespace mailtap::diagnose {

namespace {

// A final reply's text holds each of its lines, LF between them (captures/FORMAT.md); a
// report shows them on one line.
std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

reply_ref final_reply_ref(const captures::reply_summary& fr) { return reply_ref{fr.code, fr.enhanced, one_line(fr.text)}; }

}  // namespace

evidence_item transaction_evidence(const captures::transaction& t) {
  std::string text = "transaction " + (t.without_mail ? std::string(captures::no_mail_sender) : "<" + t.mail_from + ">") + " to";
  for (const auto& r : t.rcpt_to) text += " <" + r + ">";
  text += ": " + std::string(protocol::to_string(t.result));
  if (t.final_reply) {
    text += ", final reply " + std::to_string(t.final_reply->code);
    if (!t.final_reply->enhanced.empty()) text += " " + t.final_reply->enhanced;
    if (!t.final_reply->text.empty()) text += " " + one_line(t.final_reply->text);
  }
  if (t.synthesized) text += " (synthesized by the relay)";
  if (t.rebuilt) text += " (no record: rebuilt from the transcript of an incomplete capture)";
  return {t.end_us, "transaction", text};
}

namespace {

// `end` below is the end-of-data exchange that closed `t` (end_of_data.hpp), or null.

void handed_off(const captures::transaction& t, const exchange* end, std::vector<finding>& out) {
  finding f;
  f.id = "handoff";
  f.level = severity::info;
  f.stage = "data_end";
  f.source = origin::server;
  const auto& fr = *t.final_reply;
  f.reply = final_reply_ref(fr);
  std::string full = one_line(fr.text);
  if (end) {
    full.clear();
    for (const auto& l : end->reply->reply.lines) full += (full.empty() ? "" : " ") + l;
    f.evidence = evidence_of(*end);
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

void blackholed(const conversation& c, const captures::transaction& t, const exchange* end, std::vector<finding>& out) {
  const mode_text& m = mode("blackhole");
  finding f;
  f.id = std::string(m.id);
  f.level = severity::error;
  f.stage = "data_end";
  f.title = std::string(m.title);
  f.explanation = std::string(m.explanation);
  f.action = std::string(m.action);
  f.source = origin::relay;
  if (t.final_reply) f.reply = final_reply_ref(*t.final_reply);
  if (end) f.evidence = evidence_of(*end);
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

// The first of the relay's notes within transaction t whose text `is` one sought: null when none.
template <typename Predicate>
const captures::event* note_within(const conversation& c, const captures::transaction& t, Predicate is) {
  for (const auto* e : c.timeline)
    if (const auto* n = std::get_if<captures::note_event>(e))
      if (n->t_us >= t.start_us && n->t_us <= t.end_us && is(n->text)) return e;
  return nullptr;
}

// The relay's note that the client closed (a FIN) or lost (a reset) its connection before the
// reply to its end of data, without QUIT, within the transaction: null when it did not. A
// client that resets is at least as likely to send again as one that closes (a fifth trial).
const captures::event* closed_before_reply(const conversation& c, const captures::transaction& t) {
  return note_within(c, t, [](const std::string& text) {
    return text == protocol::note_closed_before_end_of_data_reply ||
           text == protocol::note_closed_after_quit_before_end_of_data_reply ||
           text.starts_with(protocol::note_client_connection_lost);
  });
}

// The time of the client's last bytes (a `bytes` record, client/in) at or before `us`; 0 when none.
std::uint64_t client_last_bytes_us(const conversation& c, std::uint64_t us) {
  std::uint64_t last = 0;
  for (const auto* e : c.timeline)
    if (const auto* b = std::get_if<captures::bytes_event>(e))
      if (b->leg == protocol::leg::client && b->dir == protocol::direction::in && b->t_us <= us) last = b->t_us;
  return last;
}

// A FIN without QUIT before the reply to the end of data is a client that gave up only when the
// capture leaves the reply no way to it. The relay takes a FIN as the end of the client's input,
// not of its reading (protocol/relay_fsm.hpp on_client_eof), and writes every reply still owed:
// a client that half-closes (shutdown(SHUT_WR), a TLS FIN without close_notify) to wait for them
// reads its 250. It is such a client when all of these hold: the FIN came with its last bytes
// (within protocol::client_gave_up_after_us of them, the bound the relay uses for one after a
// pipelined QUIT: a sender that gives up closes at its own timeout, seconds later); the relay
// then wrote the destination's reply to the end of data to it (a client/out `bytes` record
// holding the reply's code, recorded as queued, captures/FORMAT.md); and no failed write or
// reset followed (the note protocol::note_client_connection_lost, which names a failed write's
// unwritten bytes). A reset, a failed write, a session ended before the reply went out, or a
// close long after the last bytes stay a duplicate: the capture cannot tell a close(2) from a
// half-close, and a closed socket takes a write and answers it with a reset nobody records.
bool half_closed_and_was_answered(const conversation& c, const captures::transaction& t, const exchange* end,
                                  const captures::event& closed) {
  const auto* note = std::get_if<captures::note_event>(&closed);
  if (!note || note->text != protocol::note_closed_before_end_of_data_reply || !end || !t.final_reply) return false;
  const std::uint64_t fin_us = note->t_us;
  const std::uint64_t last_us = client_last_bytes_us(c, fin_us);
  if (last_us == 0 || fin_us >= last_us + protocol::client_gave_up_after_us) return false;
  const std::string code = std::to_string(t.final_reply->code);
  const std::uint64_t from_us = std::max(fin_us, end->reply->t_us);
  bool written = false;
  for (const auto* e : c.timeline) {
    if (captures::event_time(*e) < fin_us) continue;
    if (const auto* n = std::get_if<captures::note_event>(e); n && n->text.starts_with(protocol::note_client_connection_lost))
      return false;   // a reset or a failed write after the FIN: the reply may not have reached it
    if (const auto* b = std::get_if<captures::bytes_event>(e))
      if (b->leg == protocol::leg::client && b->dir == protocol::direction::out && b->t_us >= from_us &&
          (b->data.starts_with(code) || b->data.find("\n" + code) != std::string::npos))
        written = true;
  }
  return written;
}

// When the sender's end of data came: its BDAT ... LAST, or the start of the data_end stage the
// reply to its dot ended (captures/FORMAT.md `stage`); the transaction's start when neither is known.
std::uint64_t end_of_data_sent_us(const conversation& c, const captures::transaction& t, const exchange* end) {
  if (end && end->command) return end->command->t_us;
  for (const auto& s : c.cap->stages)
    if (s.ph == protocol::phase::data_end && s.start_us >= t.start_us && s.start_us <= t.end_us &&
        (!end || (end->reply->t_us >= s.start_us && end->reply->t_us <= s.start_us + s.duration_us)))
      return s.start_us;
  return t.start_us;
}

// The delay rule that held this message's end or the reply to it (phase data_end, with `when`
// "command" or "reply": policies/README.md), or null. Its record is written as the hold ends,
// within the transaction.
const captures::fault_event* end_of_data_delay(const conversation& c, const captures::transaction& t) {
  for (const auto* e : c.timeline)
    if (const auto* f = std::get_if<captures::fault_event>(e))
      if (f->fault.decision == "delay" && f->fault.ph == protocol::phase::data_end && f->t_us >= t.start_us &&
          f->t_us <= t.end_us)
        return f;
  return nullptr;
}

// A duplicate_delivery finding's common part: an error at data_end, the final reply its reply.
finding duplicate_delivery(const captures::transaction& t, origin source) {
  finding f;
  f.id = "duplicate_delivery";
  f.level = severity::error;
  f.stage = "data_end";
  f.source = source;
  f.reply = final_reply_ref(*t.final_reply);
  return f;
}

// RFC 1047: the sender stopped waiting for the reply to its end of data and closed; the
// destination accepted the message after that. The sender never saw the 2xx, so it holds the
// message as not sent and sends it again: delivered twice. When a delay rule held the end of
// data or its reply, the rule made the wait the sender gave up on, and the finding is the rule's.
void delivered_after_sender_left(const conversation& c, const captures::transaction& t, const exchange* end,
                                 const captures::event& closed, std::vector<finding>& out) {
  finding f = duplicate_delivery(t, origin::client);
  const auto& fr = *t.final_reply;
  const std::uint64_t sent_end_us = end_of_data_sent_us(c, t, end);
  const std::uint64_t closed_us = captures::event_time(closed);
  const auto seconds = [](std::uint64_t us) { return std::to_string((us + 500'000) / 1'000'000) + " s"; };
  const std::string after_message =
      closed_us > sent_end_us ? " (" + seconds(closed_us - sent_end_us) + " after the message)" : "";
  const std::string accepted = std::to_string(fr.code) + (fr.enhanced.empty() ? "" : " " + fr.enhanced);
  const std::string retried = "The sender never saw that reply, so it holds the message as not sent and will send it "
                              "again: the recipients get it twice (RFC 1047).";
  f.title = "delivered after the sender gave up: it will send the message again";
  const captures::fault_event* delay = end_of_data_delay(c, t);
  const bool answered_in_time = end && end->source == origin::server && end->reply->t_us <= closed_us;
  if (delay && answered_in_time) {
    const std::uint64_t answered_us = end->reply->t_us > sent_end_us ? end->reply->t_us - sent_end_us : 0;
    f.explanation = "a reply to the end of data held longer than the sender waits. The destination accepted the "
                    "message (" + accepted + ") " + duration_text(answered_us) +
                    " after its end of data, but the relay held that reply for the rule, and the sender closed its "
                    "connection" + after_message + ", without QUIT, before the reply reached it. " + retried;
  } else if (delay) {
    f.explanation = "an end of data held longer than the sender waits. The relay held the sender's end of data for "
                    "the rule before it went on, and the sender closed its connection" + after_message +
                    ", without QUIT, before the reply came. The destination then accepted the message (" + accepted +
                    "). " + retried;
  } else {
    f.explanation = "The sender closed its connection before the destination answered its end of data" + after_message +
                    ", without QUIT. The destination then accepted the message (" + accepted + "). " + retried;
  }
  f.action = delay ? "Make the sender wait for the reply to the end of data (RFC 5321 4.5.3.2.6: 10 minutes). The "
                     "wait it gave up on was the rule's, not the destination's: shorten or remove the rule to see "
                     "the destination's own timing."
                   : "Make the sender wait for the reply to the end of data (RFC 5321 4.5.3.2.6: 10 minutes), or find "
                     "why the destination took so long to answer (a content scan, a slow queue).";
  f.evidence.push_back(evidence_of(closed));
  if (end) {
    auto more = evidence_of(*end);
    f.evidence.insert(f.evidence.end(), more.begin(), more.end());
  }
  f.evidence.push_back(transaction_evidence(t));
  if (delay) mark_injected(f, *delay);
  merge_finding(out, std::move(f));
}

// The relay's note that the session ended while a delay still held the destination's reply to
// this transaction's end (relay_fsm.hpp note_end_of_data_reply_held_at_session_end): null when not.
const captures::event* reply_held_at_session_end(const conversation& c, const captures::transaction& t) {
  return note_within(c, t, [](const std::string& text) { return text == protocol::note_end_of_data_reply_held_at_session_end; });
}

// The destination accepted the message, but a delay rule still held that reply when the session
// ended (the relay's shutdown deadline, an abort): the sender was never told, and sends it again.
void delivered_but_held_at_session_end(const conversation& c, const captures::transaction& t, const exchange* end,
                                       const captures::event& held, std::vector<finding>& out) {
  finding f = duplicate_delivery(t, origin::relay);
  const auto& fr = *t.final_reply;
  const std::string accepted = std::to_string(fr.code) + (fr.enhanced.empty() ? "" : " " + fr.enhanced);
  const std::string ended = c.cap->end ? " (" + c.cap->end->reason + ")" : "";
  f.title = "delivered, but the sender was never told: it will send the message again";
  f.explanation = "The destination accepted the message (" + accepted + "), but the relay was still holding that "
                  "reply for a delay rule when the session ended" + ended + ", so the sender never saw it. It holds "
                  "the message as not sent and will send it again: the recipients get it twice (RFC 1047).";
  f.action = "Let held replies out before the session ends: a delay shorter than the relay's shutdown grace "
             "(timeouts.drain), or stop the relay once its sessions are done.";
  f.evidence.push_back(evidence_of(held));
  if (end) {
    auto more = evidence_of(*end);
    f.evidence.insert(f.evidence.end(), more.begin(), more.end());
  }
  f.evidence.push_back(transaction_evidence(t));
  if (c.cap->end) f.evidence.push_back({c.cap->end->t_us, "end", "end: " + c.cap->end->reason + " " + c.cap->end->detail});
  if (const captures::fault_event* delay = end_of_data_delay(c, t)) mark_injected(f, *delay);
  merge_finding(out, std::move(f));
}

}  // namespace

void check_delivery(const conversation& c, std::vector<finding>& out) {
  const auto ends = end_of_data_replies(c);
  for (std::size_t i = 0; i < c.cap->transactions.size(); ++i) {
    const auto& t = c.cap->transactions[i];
    if (t.result == protocol::outcome::blackholed ||
        (t.synthesized && t.final_reply && t.final_reply->code / 100 == 2))
      blackholed(c, t, ends[i], out);
    else if (t.result == protocol::outcome::unknown && !t.rebuilt) ambiguous(c, t, out);   // else capture_incomplete
    else if (t.result == protocol::outcome::delivered && t.final_reply) {
      handed_off(t, ends[i], out);
      if (const auto* closed = closed_before_reply(c, t)) {
        // A client that half-closed and was written its reply saw the 250: nothing to send again.
        if (!half_closed_and_was_answered(c, t, ends[i], *closed)) delivered_after_sender_left(c, t, ends[i], *closed, out);
      } else if (const auto* held = reply_held_at_session_end(c, t)) {
        delivered_but_held_at_session_end(c, t, ends[i], *held, out);
      }
    }
  }
}

}  // namespace mailtap::diagnose
