// TLS on the path: an upstream certificate that was not verified (the tls record's
// `verification`, captures/FORMAT.md), and STARTTLS taken away from the client: removed
// from or masked in the EHLO reply it got while the destination offered it.
#include <algorithm>

#include "diagnose/checks.hpp"
#include "protocol/command.hpp"

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

}  // namespace

void check_tls(const conversation& c, std::vector<finding>& out) {
  for (const auto* e : c.timeline)
    if (const auto* t = std::get_if<captures::tls_event>(e))
      if (t->leg == protocol::leg::upstream && (!t->tls.verified || t->tls.insecure)) not_verified(*t, out);

  // STARTTLS stripped: the destination offered it, and the client was shown a reply without it.
  const exchange* offered = nullptr;
  for (const exchange& x : c.exchanges) {
    if (x.ph != protocol::phase::ehlo) continue;
    if (!x.edit && x.source == origin::server && offers_starttls(*x.reply)) offered = &x;
    bool stripped = (x.edit && offered && !offers_starttls(*x.reply)) || masks_starttls(*x.reply);
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
