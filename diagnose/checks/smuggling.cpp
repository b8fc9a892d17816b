// Smuggling attempts the relay refused (README "Refused, never forwarded"): command lines and
// AUTH responses with a bare CR, bare LF or NUL, messages with bare line endings under
// `strict`, normalised ones under `normalize`, HTTP spoken to the SMTP port, and STARTTLS
// injection on either leg. Read from the relay's notes and the end reason.
#include <array>

#include "diagnose/checks.hpp"

namespace mailtap::diagnose {

namespace {

// The starts of the relay's notes for each refusal (protocol/relay_fsm.cpp).
constexpr std::array<std::string_view, 8> refusal_notes = {
    "command refused: bare CR", "command refused: bare LF", "command refused: NUL",
    "command refused: HTTP",    "message refused: ",        "AUTH response refused",
    "normalized ",              "STARTTLS injection",
};

bool refusal_note(const std::string& text) {
  for (auto start : refusal_notes)
    if (text.rfind(start, 0) == 0) return true;
  return false;
}

}  // namespace

void check_smuggling(const conversation& c, std::vector<finding>& out) {
  finding f;
  f.id = "smuggling_attempt";
  f.level = severity::warning;
  f.stage = "session";
  f.source = origin::client;
  bool client_refusals = false;   // anything but the destination's STARTTLS injection
  for (const auto* e : c.timeline)
    if (const auto* n = std::get_if<captures::note_event>(e))
      if (refusal_note(n->text)) {
        f.evidence.push_back(evidence_of(*e));
        client_refusals = client_refusals || n->text.rfind("STARTTLS injection on the upstream leg", 0) != 0;
      }
  const auto* end = c.cap->end ? &*c.cap->end : nullptr;
  bool injection = end && (end->reason == "starttls_injection" || end->reason == "upstream_starttls_injection" ||
                           end->reason == "http_command");
  if (injection) {
    f.evidence.push_back({end->t_us, "end", "end: " + end->reason + " (" + end->detail + ")"});
    if (end->reason == "upstream_starttls_injection" && !client_refusals) f.source = origin::server;
  }
  if (f.evidence.empty()) return;
  f.title = "ambiguous or injected input refused (" + std::to_string(f.evidence.size()) + " record" +
            (f.evidence.size() == 1 ? "" : "s") + ")";
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
    f.explanation = "The peer sent input that two SMTP parsers can read differently: line endings other than CRLF "
                    "(SMTP smuggling), NUL bytes, HTTP, or bytes pipelined behind STARTTLS (CVE-2011-0411). The "
                    "relay refused it and forwarded none of it.";
    f.action = "If the sender is legitimate, fix its line endings (CRLF only, RFC 5321 2.3.8); otherwise this is a "
               "probe: block the source.";
  }
  out.push_back(std::move(f));
}

}  // namespace mailtap::diagnose
