// Smuggling attempts the relay refused (README "Refused, never forwarded"): command lines with
// a bare CR, bare LF or NUL, white space before the verb, XCLIENT, XFORWARD or PROXY, STARTTLS
// with a parameter, or over the relay's line limit; AUTH responses with a bare CR, bare LF or
// NUL; messages with bare line endings under `strict`; HTTP spoken to the SMTP port; STARTTLS
// injection on either leg; and the relay's error limit, which ends a session that sends only
// such lines. Read from the relay's notes, its own replies to them and the end reason. Also a
// message whose bare line endings the relay forwarded as spaces under `normalize`: no refusal,
// the attempt neutralised, and the destination's reply to the message says what became of it.
#include <algorithm>
#include <array>

#include "diagnose/checks.hpp"
#include "diagnose/end_of_data.hpp"
#include "diagnose/reply_codes.hpp"

namespace mailtap::diagnose {

namespace {

// One kind of input the relay refuses: the start of its note (protocol/relay_fsm.cpp,
// protocol/starttls_sequencer.cpp) and what the peer sent, in the explanation's words.
struct refusal_kind {
  std::string_view note;
  std::string_view sent;
};

constexpr std::string_view bare_in_command = "a bare CR, bare LF or NUL in a command line";
constexpr std::array<refusal_kind, 11> refusal_kinds = {{
    {"command refused: bare CR", bare_in_command},
    {"command refused: bare LF", bare_in_command},
    {"command refused: NUL", bare_in_command},
    {"command refused: white space before the verb",
     "white space before a command's verb, which one parser skips and another refuses"},
    {"command refused: verb never forwarded: ",
     "XCLIENT, XFORWARD or PROXY, which would set the client address and name the destination records"},
    {"command refused: STARTTLS with a parameter", "STARTTLS with a parameter (RFC 3207 4 allows none)"},
    {"command refused: line too long",
     "command lines over 2048 bytes, which a parser with a shorter limit cuts, reading their rest as a command"},
    {"command refused: HTTP", "HTTP, spoken to the SMTP port"},
    {"message refused: ", "a bare CR, bare LF or NUL in a message, where two parsers find different ends of it"},
    {"AUTH response refused", "a bare CR, bare LF or NUL in an AUTH response"},
    {"STARTTLS injection", "bytes pipelined behind STARTTLS (CVE-2011-0411)"},
}};

// The relay's note for a message whose bare CR/LF (and NUL) it forwarded as spaces under
// `normalize` (protocol/relay_fsm.cpp, end_of_data): "normalized N bare CR/LF to spaces[, M NUL
// to spaces]". Not a refusal: the message went on.
constexpr std::string_view normalized_note = "normalized ";

// The relay's end detail and note at its error limit (protocol/relay_fsm.cpp, too_many_refusals).
constexpr std::string_view error_limit_detail = "too many commands refused by the relay";
constexpr std::string_view error_limit_note_end = " commands refused by the relay: session closed";

const refusal_kind* refusal_kind_of(const std::string& note) {
  for (const auto& k : refusal_kinds)
    if (note.starts_with(k.note)) return &k;
  return nullptr;
}

// What the end reason alone says the client sent, for a capture without the relay's note.
std::string_view sent_by_end(const captures::end_record& e) {
  if (e.reason == "http_command") return "HTTP, spoken to the SMTP port";
  if (e.reason == "starttls_injection") return "bytes pipelined behind STARTTLS (CVE-2011-0411)";
  return "";
}

// The relay notes a message it refused for its line endings before its own 550 5.6.0
// (protocol/relay_fsm.cpp): a 550 5.6.0 without that note is someone else's.
bool message_refused_before(const conversation& c, std::uint64_t t_us) {
  return std::any_of(c.timeline.begin(), c.timeline.end(), [&](const captures::event* e) {
    const auto* n = std::get_if<captures::note_event>(e);
    return n && n->t_us <= t_us && n->text.starts_with("message refused: ");
  });
}

std::string joined(const std::vector<std::string_view>& parts) {
  std::string out;
  for (auto p : parts) out += (out.empty() ? "" : "; ") + std::string(p);
  return out;
}

// A message whose bare line endings the relay forwarded as spaces (normalize): its note, the
// transaction it was in and the exchange that answered its end, when found.
struct neutralised_message {
  const captures::note_event* note = nullptr;
  const captures::transaction* t = nullptr;
  const exchange* end = nullptr;
};

// What the client's refusals read from the timeline add to the finding: the refused command
// (what the client sent, recorded just before its note), the note, and the kind of input.
struct client_refusals {
  std::vector<std::string_view> sent;   // each kind's words once, in the order first seen
  std::string error_limit_count;        // the refusals that closed the session at the error limit, or ""
  bool any = false;                     // anything but the destination's STARTTLS injection
  bool message_refused = false;         // a message failed for its line endings: mail stopped
  std::vector<neutralised_message> neutralised;   // messages forwarded with spaces: nothing refused
};

client_refusals read_refusals(const conversation& c, finding& f) {
  client_refusals r;
  const captures::event* last_command = nullptr;
  for (const auto* e : c.timeline) {
    if (const auto* cmd = std::get_if<captures::command_event>(e); cmd && cmd->leg == protocol::leg::client)
      last_command = e;
    const auto* n = std::get_if<captures::note_event>(e);
    if (!n) continue;
    if (n->text.ends_with(error_limit_note_end)) {
      r.error_limit_count = n->text.substr(0, n->text.find(' '));
      f.evidence.push_back(evidence_of(*e));
      continue;
    }
    if (n->text.starts_with(normalized_note)) {
      r.neutralised.push_back({n});
      r.any = true;
      continue;
    }
    const refusal_kind* k = refusal_kind_of(n->text);
    if (!k) continue;
    if (n->text.starts_with("command refused: ") && last_command) f.evidence.push_back(evidence_of(*last_command));
    last_command = nullptr;
    f.evidence.push_back(evidence_of(*e));
    if (std::find(r.sent.begin(), r.sent.end(), k->sent) == r.sent.end()) r.sent.push_back(k->sent);
    r.any = r.any || !n->text.starts_with("STARTTLS injection on the upstream leg");
    r.message_refused = r.message_refused || n->text.starts_with("message refused: ");
  }
  return r;
}

// Each normalised message's transaction (the one open when the relay noted it at the message's
// end, each transaction taken once: pipelined ones share their times) and the exchange that
// answered its end.
void find_neutralised_messages(const conversation& c, client_refusals& r) {
  const auto ends = end_of_data_replies(c);
  const auto& ts = c.cap->transactions;
  std::vector<bool> taken(ts.size(), false);
  for (auto& m : r.neutralised)
    for (std::size_t i = 0; i < ts.size(); ++i) {
      if (taken[i] || ts[i].start_us > m.note->t_us || m.note->t_us > ts[i].end_us) continue;
      taken[i] = true;
      m.t = &ts[i];
      m.end = i < ends.size() ? ends[i] : nullptr;
      break;
    }
}

std::string reply_words(int code, const std::string& enhanced, const std::string& text) {
  std::string out = std::to_string(code);
  if (!enhanced.empty()) out += " " + enhanced;
  if (!text.empty()) out += " " + text;
  return out;
}

// What the message's end got: the reply that answered it, else its transaction's final reply.
std::string answer_of(const neutralised_message& m) {
  if (m.end) {
    std::string lines;
    for (const auto& l : m.end->reply->reply.lines) lines += (lines.empty() ? "" : " ") + l;
    return std::to_string(m.end->reply->reply.code) + " " + lines;
  }
  if (m.t && m.t->final_reply) {
    std::string text = m.t->final_reply->text;
    std::replace(text.begin(), text.end(), '\n', ' ');
    return reply_words(m.t->final_reply->code, m.t->final_reply->enhanced, text);
  }
  return "";
}

bool delivered(const neutralised_message& m) { return m.t && m.t->result == protocol::outcome::delivered; }

// What became of one normalised message, in a sentence.
std::string fate_of(const neutralised_message& m, std::string_view in_place) {
  const std::string answer = answer_of(m);
  const std::string quoted = answer.empty() ? "" : " (" + answer + ")";
  if (!m.t) return " The relay forwarded it; the capture holds no record of what became of it.";
  switch (m.t->result) {
    case protocol::outcome::delivered:
      return " The destination accepted it" + quoted + ": delivered, with " + std::string(in_place) +
             " for each bare line ending.";
    case protocol::outcome::blackholed:
      return " A blackhole fault answered it" + quoted + ": it went nowhere.";
    case protocol::outcome::rejected:
    case protocol::outcome::tempfailed:
      return " It was refused" + quoted + ", for a reason of its own (its own finding says which), not its line "
             "endings, which the relay had already turned into " + std::string(in_place) + ".";
    case protocol::outcome::aborted:
      return " It was not delivered: the transaction ended before the message did (aborted).";
    case protocol::outcome::unknown:
      return " Its end went to the destination and no reply came: it may have been delivered.";
  }
  return "";
}

bool normalised_to_crlf(const conversation& c) { return c.cap->header.normalize_to.empty(); }

std::string neutralised_title(const conversation& c, const client_refusals& r) {
  const bool all_delivered = std::all_of(r.neutralised.begin(), r.neutralised.end(), delivered);
  const std::string what = r.neutralised.size() == 1 ? "a message" : std::to_string(r.neutralised.size()) + " messages";
  if (normalised_to_crlf(c))
    return "bare line endings in " + what + ", forwarded by the relay as CRLF (normalize)" +
           (all_delivered ? " and delivered" : "");
  return "bare line endings in " + what + " turned into spaces by the relay and " +
         (all_delivered ? "delivered" : "forwarded") + ": a smuggling attempt neutralised";
}

void explain_neutralised(const conversation& c, finding& f, const client_refusals& r) {
  const bool crlf = normalised_to_crlf(c);
  const std::string_view in_place = crlf ? "a CRLF" : "a space";
  std::string text =
      "The client's message held a CR or LF alone, not in a CRLF (RFC 5321 2.3.8 allows only CRLF), which two "
      "SMTP parsers can read differently: one takes \"\\n.\\n\" for the end of the message and reads what follows "
      "as commands, another reads on (SMTP smuggling).";
  if (crlf)
    text += " The relay's bare_line_endings was normalize as recorded before the capture header's normalize_to "
            "(captures/FORMAT.md): it read each bare CR or LF as a line ending and forwarded a CRLF in its place, so "
            "the relay and the destination read the same lines.";
  else
    text += " The relay's bare_line_endings is normalize: it forwarded each as a space (a NUL too), so only "
            "<CRLF>.<CRLF> ended the message and the relay and the destination read the same message, with "
            "nothing smuggled past either.";
  for (const auto& m : r.neutralised) {
    text += " The relay noted \"" + m.note->text + "\".";
    text += fate_of(m, in_place);
  }
  f.explanation = f.explanation.empty() ? text : f.explanation + " " + text;
}

void cite_neutralised(const client_refusals& r, finding& f) {
  for (const auto& m : r.neutralised) {
    f.evidence.push_back(evidence_of(captures::event{*m.note}));
    if (m.end) f.evidence.push_back(evidence_of(*m.end->reply));
    if (m.t) f.evidence.push_back(transaction_evidence(*m.t));
    if (!f.reply && m.end) {
      const auto& rep = m.end->reply->reply;
      f.reply = reply_ref{rep.code, rep.enhanced, reply_text(*m.end->reply)};
      f.basic_meaning = basic_meaning(rep.code);
      if (auto e = enhanced_meaning(rep.enhanced)) f.enhanced_meaning = *e;
    }
  }
}

void explain_client(finding& f, const client_refusals& r) {
  f.explanation = "The client sent what two SMTP parsers can read differently, or what only the relay may say to the "
                  "destination: " + joined(r.sent) + ". The relay refused it itself (its own reply, no fault) and "
                  "none of it reached the destination as sent.";
  if (r.message_refused)
    f.explanation += " The message was refused (550 5.6.0 from mailtap, not the destination) and the session closed: "
                     "nothing of it was delivered.";
  if (!r.error_limit_count.empty())
    f.explanation += " The destination never saw the refused commands, so its own error limit could not end the "
                     "session: the relay's did, after " + r.error_limit_count + " of them (421 4.7.0, as Postfix's "
                     "smtpd_hard_error_limit).";
  f.action = "If the sender is legitimate, fix what it sends (CRLF line endings only, RFC 5321 2.3.8; each command "
             "at the start of its line and within 2048 bytes; no XCLIENT, XFORWARD or PROXY, which mailtap never "
             "offers); otherwise this is a probe: block the source.";
}

}  // namespace

bool ended_at_relay_error_limit(const captures::capture& c) {
  return c.end && c.end->reason == "protocol_error" && c.end->detail == error_limit_detail;
}

bool smuggling_reply(const conversation& c, const exchange& x) {
  if (x.source != origin::relay || x.fault) return false;
  const auto& r = x.reply->reply;
  if (r.code == 421 && r.enhanced == "4.7.0") return ended_at_relay_error_limit(*c.cap);
  return r.code == 550 && r.enhanced == "5.6.0" && message_refused_before(c, x.reply->t_us);
}

void check_smuggling(const conversation& c, std::vector<finding>& out) {
  finding f;
  f.id = "smuggling_attempt";
  f.stage = "session";
  f.source = origin::client;
  client_refusals refusals = read_refusals(c, f);
  // Mail stopped only when a message was refused; the rest are refusals the session went past
  // (or that ended a session with no message in it).
  f.level = refusals.message_refused ? severity::error : severity::warning;
  for (const exchange& x : c.exchanges)
    if (smuggling_reply(c, x)) f.evidence.push_back(evidence_of(*x.reply));
  const auto* end = c.cap->end ? &*c.cap->end : nullptr;
  bool injection = end && (end->reason == "starttls_injection" || end->reason == "upstream_starttls_injection" ||
                           end->reason == "http_command");
  if (injection || ended_at_relay_error_limit(*c.cap)) {
    f.evidence.push_back({end->t_us, "end", "end: " + end->reason + " (" + end->detail + ")"});
    if (end->reason == "upstream_starttls_injection" && !refusals.any) f.source = origin::server;
    if (refusals.sent.empty() && !sent_by_end(*end).empty()) refusals.sent.push_back(sent_by_end(*end));
  }
  const std::size_t refused_records = f.evidence.size();
  if (refused_records == 0 && refusals.neutralised.empty()) return;
  find_neutralised_messages(c, refusals);
  cite_neutralised(refusals, f);
  std::stable_sort(f.evidence.begin(), f.evidence.end(),
                   [](const evidence_item& a, const evidence_item& b) { return a.t_us < b.t_us; });
  if (refused_records > 0)
    f.title = "input the relay refused and never forwarded (" + std::to_string(refused_records) + " record" +
              (refused_records == 1 ? "" : "s") + ")" +
              (refusals.error_limit_count.empty() ? "" : "; session closed at the relay's error limit");
  if (!refusals.neutralised.empty())
    f.title += (f.title.empty() ? "" : "; ") + neutralised_title(c, refusals);
  if (f.source == origin::server) {
    // Only the destination injects at STARTTLS from the upstream side; the client's refusals
    // (notes) would have kept the client as the source.
    f.explanation = "The destination sent bytes after its 220 to STARTTLS, before the TLS handshake began "
                    "(RFC 3207 4.2; CVE-2011-0411 from the server's side): they would be read as if they had "
                    "come through TLS. The relay closed the session instead of starting TLS, and passed none of "
                    "them on.";
    f.action = "Look for what writes into the SMTP stream between mailtap and the destination (a firewall's SMTP "
               "inspection, a man in the middle), then at the destination's STARTTLS implementation.";
  } else {
    if (refused_records > 0) explain_client(f, refusals);
    if (!refusals.neutralised.empty()) {
      explain_neutralised(c, f, refusals);
      if (refused_records == 0)
        f.action = "Nothing was smuggled: the relay neutralised it. If the sender is legitimate, fix its line "
                   "endings (CRLF only, RFC 5321 2.3.8): its lines joined by spaces reach the destination as one "
                   "(a header field so becomes part of the one before); otherwise this is a probe: block the source.";
    }
  }
  out.push_back(std::move(f));
}

}  // namespace mailtap::diagnose
