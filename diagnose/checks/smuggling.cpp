// Smuggling attempts the relay refused (README "Refused, never forwarded"): command lines with
// a bare CR, bare LF or NUL, white space before the verb, XCLIENT, XFORWARD or PROXY, STARTTLS
// with a parameter, or over the relay's line limit; AUTH responses with a bare CR, bare LF or
// NUL; messages with bare line endings under `strict`, normalised ones under `normalize`; HTTP
// spoken to the SMTP port; STARTTLS injection on either leg; and the relay's error limit, which
// ends a session that sends only such lines. Read from the relay's notes, its own replies to
// them and the end reason.
#include <algorithm>
#include <array>

#include "diagnose/checks.hpp"

namespace mailtap::diagnose {

namespace {

// One kind of input the relay refuses: the start of its note (protocol/relay_fsm.cpp,
// protocol/starttls_sequencer.cpp) and what the peer sent, in the explanation's words.
struct refusal_kind {
  std::string_view note;
  std::string_view sent;
};

constexpr std::string_view bare_in_command = "a bare CR, bare LF or NUL in a command line";
constexpr std::array<refusal_kind, 12> refusal_kinds = {{
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
    {"normalized ", "bare CR or LF in a message (normalised: the relay forwarded a space in their place; a CRLF in "
                    "captures whose header has no normalize_to, captures/FORMAT.md)"},
    {"STARTTLS injection", "bytes pipelined behind STARTTLS (CVE-2011-0411)"},
}};

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

// What the client's refusals read from the timeline add to the finding: the refused command
// (what the client sent, recorded just before its note), the note, and the kind of input.
struct client_refusals {
  std::vector<std::string_view> sent;   // each kind's words once, in the order first seen
  std::string error_limit_count;        // the refusals that closed the session at the error limit, or ""
  bool any = false;                     // anything but the destination's STARTTLS injection
  bool message_refused = false;         // a message failed for its line endings: mail stopped
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
  if (f.evidence.empty()) return;
  std::stable_sort(f.evidence.begin(), f.evidence.end(),
                   [](const evidence_item& a, const evidence_item& b) { return a.t_us < b.t_us; });
  f.title = "input the relay refused and never forwarded (" + std::to_string(f.evidence.size()) + " record" +
            (f.evidence.size() == 1 ? "" : "s") + ")" +
            (refusals.error_limit_count.empty() ? "" : "; session closed at the relay's error limit");
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
    explain_client(f, refusals);
  }
  out.push_back(std::move(f));
}

}  // namespace mailtap::diagnose
