// Code-based classification (RFC 5321 4.2 reply codes at each stage, RFC 3463 subjects and
// details) and its refinement by phrasing.
#include "diagnose/classify.hpp"

#include <algorithm>
#include <cctype>
#include <optional>

namespace mailtap::diagnose {

namespace {

using protocol::phase;

// "5.2.2" -> {2, 2}; {-1, -1} when not an enhanced code.
std::pair<int, int> subject_detail(std::string_view e) {
  if (e.size() < 5 || e[1] != '.') return {-1, -1};
  auto dot = e.find('.', 2);
  if (dot == std::string_view::npos) return {-1, -1};
  auto number = [](std::string_view s) {
    if (s.empty() || s.size() > 3) return -1;
    int n = 0;
    for (char c : s) {
      if (c < '0' || c > '9') return -1;
      n = n * 10 + (c - '0');
    }
    return n;
  };
  return {number(e.substr(2, dot - 2)), number(e.substr(dot + 1))};
}

classification generic(int code) { return {code / 100 == 4 ? "temporary_failure" : "permanent_failure", false}; }

bool contains_ignoring_case(std::string_view text, std::string_view word) {
  return std::search(text.begin(), text.end(), word.begin(), word.end(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
         }) != text.end();
}

bool in_transaction(phase ph) {
  return ph == phase::mail || ph == phase::rcpt || ph == phase::data || ph == phase::data_end || ph == phase::bdat;
}

}  // namespace

classification classify_by_code(phase ph, int code, std::string_view enhanced) {
  const int klass = code / 100;
  if (klass != 4 && klass != 5) return {"", false};
  auto [subject, detail] = subject_detail(enhanced);

  if (ph == phase::banner || ph == phase::connect) {
    // A refusal before any command is about the connection itself (RFC 5321 3.1: 554 "no
    // SMTP service here"; 421 "service not available").
    // 421 from a destination that was reached is a refusal of service (load, a connection
    // limit, a shutdown), not an unreachable one; X.4.x (network, routing) is the relay's own
    // 421 4.4.1 for a destination it could not reach. 4.7.x is a connection limit as often as
    // a reverse-DNS policy: the phrasing decides.
    if (subject == 4) return {"destination_unreachable", true};
    if (code == 421) return {"service_unavailable", subject == 3};
    if (subject == 7) return {"reverse_dns_block", true};
    return {klass == 5 ? "reverse_dns_block" : "destination_unreachable", false};
  }
  // 421 after the greeting closes the session, whatever the command (RFC 5321 3.8): not a
  // refusal of that command. Its text may still say why (a rate limit), so not specific.
  if (code == 421 && ph != phase::auth) return {"service_closing", false};
  // AUTH the server does not know (500), does not offer (502) or takes out of sequence (503,
  // RFC 5321 4.2.4; RFC 4954 4: after a successful AUTH) says nothing about the credentials:
  // the command was refused.
  if (ph == phase::auth && (code == 500 || code == 502 || code == 503)) return {"command_rejected", true};
  // Authentication (RFC 4954 6; X.7.8 to X.7.13).
  if (ph == phase::auth || code == 535 || code == 534 || code == 538 || code == 530 ||
      (subject == 7 && (detail == 8 || detail == 9 || detail == 11 || detail == 12 || detail == 13)))
    return {"smarthost_auth", ph == phase::auth || subject == 7 || code == 535};
  // STARTTLS out of sequence (503: TLS already active, inside a transaction) or with
  // arguments (501) is the client's mistake; any other refusal means no TLS (RFC 3207 4).
  if (ph == phase::starttls) return code == 503 || code == 501 ? classification{"command_rejected", true}
                                                                : classification{"tls_unavailable", true};
  if (!in_transaction(ph)) return {"command_rejected", subject == 5};
  // 454 is a temporary authentication failure (RFC 4954 6) or TLS not available (RFC 3207 4),
  // or a server's temporary refusal of its own wording: not a quota, not specific.
  if (code == 454) return {"temporary_failure", false};

  switch (subject) {
    case 1:
      // Address status (RFC 3463 3.2), detail by detail. X.1.7 and X.1.8: the sender's address is
      // malformed, or its domain does not resolve (Postfix's reject_unknown_sender_domain, 450
      // 4.1.8 while DNS fails): no block list, and the sender's wherever the reply comes (Postfix
      // delays its sender restrictions to RCPT by default, smtpd_delay_reject).
      if (detail == 7 || detail == 8) return {"sender_address_rejected", true};
      // X.1.0 "Other address status" says only that an address was wrong, and which one its
      // wording says (Postfix's "550 5.1.0 <s>: Sender address rejected: User unknown in ..."):
      // never an unknown recipient (nor a block list at MAIL) from the basic code.
      if (detail == 0 && (ph == phase::rcpt || ph == phase::mail)) return generic(code);
      // At MAIL the only address is the sender's, whatever detail names it.
      if (ph == phase::mail && detail >= 1) return {"sender_address_rejected", true};
      // X.1.1, X.1.2: no such mailbox, no such system.
      if (detail == 1 || detail == 2) return {"unknown_recipient", true};
      // X.1.3: the recipient address is not valid syntax (RFC 5321 4.1.2), as the client sent it.
      if (detail == 3) return {"recipient_address_invalid", true};
      // X.1.4: the address names more than one mailbox.
      if (detail == 4) return {"ambiguous_recipient", true};
      // X.1.6: the mailbox existed and moved, with no forwarding address.
      if (detail == 6) return {"mailbox_moved", true};
      // X.1.10 (RFC 7505): the recipient's domain publishes a null MX: it takes no mail at all.
      if (detail == 10) return {"null_mx", true};
      break;
    case 2:
      // Mailbox status (RFC 3463 3.3): the mailbox exists, whatever its detail says of it.
      // X.2.1 "Mailbox disabled, not accepting messages", permanent or for now: a 4xx is a
      // mailbox that takes no mail at the moment (Gmail's 450 4.2.1, a recipient receiving mail
      // faster than it allows), a 5xx one that is disabled. Never an unknown recipient (a
      // tester's "450 4.2.1 Mailbox busy, try later" was one, advising to check for typos).
      if (detail == 1) return {klass == 4 ? "mailbox_busy" : "mailbox_disabled", true};
      if (detail == 2) return {"mailbox_full", true};
      if (detail == 3) return {"message_too_large", true};
      // X.2.4: a mailing list address the destination could not expand.
      if (detail == 4) return {"list_expansion_failed", true};
      // X.2.0 (or a detail not registered): the basic code at its stage says no more than the
      // mailbox's status, and 550 or 553 to RCPT must not read as an unknown address; the
      // wording may say what (Postgrey's "450 4.2.0 ... Greylisted" stays greylisting).
      if ((code == 550 || code == 553) && ph == phase::rcpt) return generic(code);
      break;
    case 3:
      if (detail == 4) return {"message_too_large", true};
      // X.3.5, the destination's own configuration (a newcomer's trial: Postfix's "451 4.3.5
      // <a@b>: Sender address rejected: Server configuration error" read as a block list).
      if (detail == 5) return {"destination_misconfigured", true};
      break;
    case 4:
      if (detail == 5 && ph == phase::mail) return {"relay_quota", false};
      break;
    case 5:
      // X.5.3 to RCPT: too many recipients (RFC 3463 3.6; RFC 5321 4.5.3.1.10); to MAIL, a
      // message count.
      if (detail == 3) return ph == phase::rcpt ? classification{"too_many_recipients", true}
                                                : classification{"relay_quota", ph == phase::mail};
      break;
    case 6:
      return {"policy_rejection", false};
    case 7:
      if (detail == 25) return {"reverse_dns_block", true};
      if (detail == 28) return {"relay_quota", true};
      if ((detail >= 20 && detail <= 24) || detail == 26 || detail == 29) return {"sender_authentication", true};
      // X.7.27 (RFC 7505 4.2): the sender's domain publishes a null MX, so no bounce could reach it.
      if (detail == 27) return {"sender_address_rejected", true};
      if (ph == phase::mail) return {klass == 4 ? "relay_quota" : "sender_blocked", false};
      if (ph == phase::rcpt && klass == 4) return {"greylisting", false};
      return {"policy_rejection", false};
    default:
      break;
  }
  // No enhanced code (or a generic one): the basic code at its stage (RFC 5321 4.2.2).
  if (code == 552) return {ph == phase::rcpt ? "mailbox_full" : "message_too_large", false};
  if (code == 550 && ph == phase::rcpt) return {"unknown_recipient", false};
  if (code == 553 && ph == phase::rcpt) return {"unknown_recipient", false};
  // 556 "Domain does not accept mail" (RFC 7504), RFC 7505's reply to a recipient whose domain has a null MX.
  if (code == 556 && ph == phase::rcpt) return {"null_mx", false};
  if (code == 452 && ph == phase::rcpt) return {"mailbox_full", false};
  if (code == 450 && ph == phase::rcpt) return {"greylisting", false};
  if (code == 550 && ph == phase::mail) return {"sender_blocked", false};
  return generic(code);
}

reply_verdict classify(phase ph, int code, std::string_view enhanced, std::string_view text) {
  // RFC 3207 4: "530 Must issue a STARTTLS command first" shares 530 5.7.0 with RFC 4954's
  // "Authentication required"; only the text tells TLS policy from a login.
  if (code == 530 && contains_ignoring_case(text, "STARTTLS"))
    return {"tls_unavailable", std::string(vendor_of(text)), false};
  classification c = classify_by_code(ph, code, enhanced);
  reply_verdict v{c.mode, "", false};
  if (c.mode.empty()) return v;
  if (auto p = match_phrasing(text, code)) {
    v.vendor = std::string(p->vendor);
    // The phrase refines only what the code left generic, and only within the same stage's
    // meaning: a greeting's refusal stays about the connection.
    bool connection_stage = ph == phase::banner || ph == phase::connect;
    bool fits = !connection_stage || p->mode == "reverse_dns_block" || p->mode == "destination_unreachable" ||
                p->mode == "service_unavailable";
    // A quota at MAIL, or one that closes the session, is the sender's sending quota: a full
    // mailbox refuses a recipient or a message, and never closes the session (a fifth trial:
    // mailtap's own "421 4.7.0 Quota exceeded, closing connection" read as a full mailbox).
    std::string_view refined = p->mode;
    if (refined == "mailbox_full" && (ph == phase::mail || code == 421)) refined = "relay_quota";
    if (!c.specific && fits && refined != c.mode) {
      v.mode = std::string(refined);
      v.refined = true;
    }
  }
  if (v.vendor.empty()) v.vendor = std::string(vendor_of(text));
  return v;
}

}  // namespace mailtap::diagnose
