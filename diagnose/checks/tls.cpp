// TLS on the path: an upstream certificate that was not verified (the tls record's
// `verification`, captures/FORMAT.md), STARTTLS taken away from the client: removed from or
// masked in the EHLO reply it got while the destination offered it, and a failed upstream
// handshake after which the session went on in plaintext (the relay's fall-back), and a
// renegotiation a peer asked for, which the relay refused.
#include <algorithm>

#include "diagnose/checks.hpp"
#include "protocol/command.hpp"
#include "protocol/relay_fsm.hpp"
#include "protocol/starttls_sequencer.hpp"

namespace mailtap::diagnose {

namespace {

bool offers_starttls(const captures::reply_event& r) {
  return std::any_of(r.reply.lines.begin(), r.reply.lines.end(), [](const std::string& l) {
    return l.size() >= 8 && protocol::iequals(std::string_view(l).substr(0, 8), "STARTTLS");
  });
}

bool masks_starttls(const captures::reply_event& r) {
  return std::any_of(r.reply.lines.begin(), r.reply.lines.end(),
                     [](const std::string& l) { return l.find("XXXXXXXA") != std::string::npos; });
}

void not_verified(const captures::tls_event& t, std::vector<finding>& out) {
  finding f;
  f.id = "tls_not_verified";
  f.level = severity::warning;
  f.stage = "tls";
  f.source = t.tls.insecure ? origin::relay : origin::server;
  const std::string why = t.tls.verification.empty() ? std::string("not verified") : t.tls.verification;
  f.title = "upstream TLS certificate not verified (" + why + ")";
  f.explanation = t.tls.insecure
                      ? "The upstream leg was encrypted but its certificate was not checked: verification is off by "
                        "configuration. Anyone on the path could have stood in for the destination."
                      : "The upstream leg was encrypted, but the destination's certificate did not verify (" + why +
                            "). Mail went on, as MTAs do with opportunistic TLS (RFC 7435), so the destination's "
                            "identity is not proven.";
  f.action = "Give the destination a certificate that chains to a trusted CA and names its host, or pin it "
             "(upstream_fingerprint); require verification (verify_upstream = \"require\") once it passes.";
  f.evidence.push_back(evidence_of(captures::event{t}));
  merge_finding(out, std::move(f));
}

// The client asked for STARTTLS, the destination agreed and then broke the handshake; the relay
// told the client 454 and went on in plaintext on a new connection (RFC 7435). The mail that
// followed crossed both legs unencrypted.
void fell_back_to_plaintext(const conversation& c, const captures::event& note, std::vector<finding>& out) {
  finding f;
  f.id = "tls_unavailable";
  f.level = severity::warning;
  f.stage = "starttls";
  f.source = origin::server;
  f.title = "the destination's TLS handshake failed: the session went on without TLS";
  f.explanation = "The client asked for STARTTLS and the destination answered 220, but its TLS handshake failed, so "
                  "the relay told the client 454 (RFC 3207 4) and went on in plaintext on a new connection, as an MTA "
                  "with opportunistic TLS does (RFC 7435). What the client sent after that crossed both legs "
                  "unencrypted.";
  f.action = "Look at the destination's TLS set-up (certificate, versions, a middlebox that breaks the handshake); "
             "set upstream_tls = \"required\" where plaintext is not acceptable.";
  f.evidence.push_back(evidence_of(note));
  for (const exchange& x : c.exchanges)
    if (x.source == origin::relay && x.reply->reply.code == 454 && x.reply->t_us >= captures::event_time(note))
      f.evidence.push_back(evidence_of(*x.reply));
  merge_finding(out, std::move(f));
}

// A peer asked to renegotiate TLS mid-session (a TLS 1.2 HelloRequest from the destination, a
// ClientHello from the client) and the relay refused with a no_renegotiation alert: mailtap
// never renegotiates (README "What the relay does on the wire", STARTTLS). A peer that insists then gives up,
// which is what the session's end shows; the other findings name that end, this one its cause.
void renegotiation_refused(const conversation& c, const captures::note_event& n, std::vector<finding>& out) {
  const bool upstream = n.text.starts_with("the upstream");
  finding f;
  f.id = "tls_renegotiation_refused";
  f.stage = "tls";
  f.source = upstream ? origin::server : origin::client;
  const char* who = upstream ? "destination" : "client";
  // The destination that gave up may have hung up, or ended its TLS with a fatal alert (an end
  // upstream_protocol_error, protocol::upstream_tls_broken_detail).
  const bool gave_up = c.cap->end && (c.cap->end->reason == (upstream ? "upstream_closed" : "client_closed") ||
                                      (upstream && c.cap->end->reason == "upstream_protocol_error" &&
                                       c.cap->end->detail.starts_with(protocol::upstream_tls_broken_detail)));
  f.level = gave_up ? severity::error : severity::warning;
  f.title = std::string("the ") + who + " asked to renegotiate TLS, and mailtap refused";
  f.explanation = std::string("Mid-session the ") + who +
                  " asked for a new TLS handshake on its leg (TLS 1.2 renegotiation). mailtap refuses "
                  "renegotiation on both legs (a no_renegotiation alert; TLS 1.3 has none at all)" +
                  (gave_up ? std::string(", and the ") + who + " then ended the connection." : ".");
  f.action = upstream ? "Stop the destination from renegotiating (OpenSSL's SSL_OP_NO_RENEGOTIATION, a TLS 1.3 "
                        "minimum), or let the upstream leg use TLS 1.3."
                      : "Stop the client from renegotiating, or let it use TLS 1.3 with the relay.";
  f.evidence.push_back(evidence_of(captures::event{n}));
  if (gave_up) f.evidence.push_back({c.cap->end->t_us, "end", "end: " + c.cap->end->reason + " (" + c.cap->end->detail + ")"});
  merge_finding(out, std::move(f));
}

}  // namespace

const captures::event* upstream_tls_fallback(const conversation& c) {
  for (const auto* e : c.timeline)
    if (const auto* n = std::get_if<captures::note_event>(e))
      if (n->text.find(protocol::note_upstream_tls_fallback) != std::string::npos) return e;
  return nullptr;
}

// The client's first bytes on a connection where SMTP begins in plaintext are a TLS handshake
// record (RFC 8446 5.1: content type 22, version 3.x): it expects implicit TLS (SMTPS, RFC
// 8314 3.3), as `swaks --tls-on-connect` or a client set to port 465 does, and reads the
// relay's 220 as a broken handshake.
void tls_on_plaintext_port(const conversation& c, std::vector<finding>& out) {
  for (const auto* e : c.timeline) {
    if (std::get_if<captures::tls_event>(e)) return;   // an SMTPS listener (or STARTTLS) set up TLS
    const auto* b = std::get_if<captures::bytes_event>(e);
    if (!b || b->leg != protocol::leg::client || b->dir != protocol::direction::in) continue;
    if (b->data.size() < 3 || b->data[0] != '\x16' || b->data[1] != '\x03') return;
    finding f;
    f.id = "client_tls_on_plaintext_port";
    f.level = severity::error;
    f.stage = "banner";
    f.source = origin::client;
    f.title = "the client began a TLS handshake where SMTP starts in plaintext";
    f.explanation = "The client's first bytes are a TLS ClientHello, not an SMTP command: it expects TLS from the "
                    "start (SMTPS, \"implicit TLS\", RFC 8314 3.3), while this listener speaks plaintext SMTP and "
                    "offers STARTTLS. The client reads the greeting as a failed handshake and no mail is sent.";
    f.action = "Point the client at mailtap's implicit-TLS listener (--listen-tls, [tls] listen), or configure it "
               "for STARTTLS on this port (swaks: --tls instead of --tls-on-connect).";
    f.evidence.push_back(evidence_of(*e));
    out.push_back(std::move(f));
    return;
  }
}

void check_tls(const conversation& c, std::vector<finding>& out) {
  tls_on_plaintext_port(c, out);
  if (const auto* fallback = upstream_tls_fallback(c)) fell_back_to_plaintext(c, *fallback, out);
  for (const auto* e : c.timeline)
    if (const auto* n = std::get_if<captures::note_event>(e))
      if (n->text.ends_with(protocol::note_renegotiation_refused)) renegotiation_refused(c, *n, out);
  for (const auto* e : c.timeline)
    if (const auto* t = std::get_if<captures::tls_event>(e))
      if (t->leg == protocol::leg::upstream && (!t->tls.verified || t->tls.insecure)) not_verified(*t, out);

  // STARTTLS stripped: the destination offered it, and the client was shown a reply without it.
  // Not the client's EHLO after its own STARTTLS: RFC 3207 4.2 forbids offering it again there.
  std::uint64_t client_tls_at = UINT64_MAX;
  for (const auto* e : c.timeline)
    if (const auto* t = std::get_if<captures::tls_event>(e); t && t->leg == protocol::leg::client) {
      client_tls_at = t->t_us;
      break;
    }
  const exchange* offered = nullptr;
  for (const exchange& x : c.exchanges) {
    if (x.ph != protocol::phase::ehlo) continue;
    if (!x.edit && x.source == origin::server && offers_starttls(*x.reply)) offered = &x;
    const bool client_in_tls = x.reply->t_us > client_tls_at;
    bool stripped = (x.edit && offered && !client_in_tls && !offers_starttls(*x.reply)) || masks_starttls(*x.reply);
    if (!stripped) continue;
    finding f;
    f.id = "starttls_stripped";
    f.level = severity::warning;
    f.stage = "ehlo";
    f.source = origin::server;
    f.title = masks_starttls(*x.reply) ? "STARTTLS masked (XXXXXXXA) in the EHLO reply"
                                       : "STARTTLS removed from the EHLO reply";
    f.explanation = "The destination offers STARTTLS, but the EHLO reply the client saw does not: something on the "
                    "path took it out, so the client sends in plaintext, or gives up if it requires TLS.";
    f.action = "Find what edits the EHLO reply (a firewall's SMTP inspection, a proxy) and let STARTTLS through.";
    if (offered) f.evidence.push_back(evidence_of(*offered->reply));
    f.evidence.push_back(evidence_of(*x.reply));
    // mailtap itself takes STARTTLS out when it cannot honour it (README "Edits it makes"),
    // and says so in a note at that time.
    for (const auto* e : c.timeline)
      if (const auto* n = std::get_if<captures::note_event>(e))
        if (n->t_us == x.reply->t_us && n->text.find("removed STARTTLS") != std::string::npos) {
          f.source = origin::relay;
          f.explanation = "mailtap removed STARTTLS from the EHLO reply because it cannot honour it on this path "
                          "(see the note): the client sends in plaintext.";
          f.action = "Check mailtap's TLS settings ([tls] starttls, upstream) against what the destination offers.";
          f.evidence.push_back(evidence_of(*e));
        }
    finding& held = merge_finding(out, std::move(f));
    if (const auto* fe = first_fault(c, [](const protocol::fault_event& y) {
          return y.type == "capabilities" && y.detail.find("STARTTLS") != std::string::npos;
        }))
      mark_injected(held, *fe);
  }
}

}  // namespace mailtap::diagnose
