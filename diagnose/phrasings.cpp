// Known wordings of refusals, as data: Postfix, Exim, Microsoft 365 / Exchange Online, Gmail,
// Proofpoint and Mimecast, then common wordings shared by many servers. Each row is a
// lower-case substring, the vendor whose wording it is, the mode it points to, and the reply
// classes it may refine (4, 5, or 0 for both). Rows are tried in order: the more specific
// wordings come before the ones they contain ("relay quota exceeded" before "quota exceeded",
// Microsoft's "TenantAttribution; Relay Access Denied" before Postfix's "Relay access denied").
#include <array>
#include <cctype>
#include <string>

#include "diagnose/classify.hpp"

namespace mailtap::diagnose {

namespace {

struct phrasing {
  std::string_view needle;
  std::string_view vendor;
  std::string_view mode;
  int klass;
};

constexpr std::array phrasings = {
    // Microsoft 365 / Exchange Online
    phrasing{"recipientnotfound", "microsoft", "unknown_recipient", 0},
    phrasing{"tenantattribution", "microsoft", "tenant_propagation", 0},
    phrasing{"banned sending ip", "microsoft", "reverse_dns_block", 0},
    phrasing{"traffic not accepted from this ip", "microsoft", "reverse_dns_block", 0},
    phrasing{"authentication unsuccessful", "microsoft", "smarthost_auth", 0},
    phrasing{"client not authenticated", "microsoft", "smarthost_auth", 0},
    phrasing{"submission quota exceeded", "microsoft", "relay_quota", 0},
    // Postfix (smtpd access restrictions, anvil rate limits, postgrey)
    // A sender it does not know (reject_unlisted_sender, 5.1.0), at MAIL or a delayed RCPT.
    phrasing{"sender address rejected: user unknown", "postfix", "sender_address_rejected", 0},
    phrasing{"user unknown in", "postfix", "unknown_recipient", 0},
    phrasing{"relay access denied", "postfix", "tenant_propagation", 0},
    phrasing{"sender address rejected", "postfix", "sender_blocked", 0},
    phrasing{"cannot find your reverse hostname", "postfix", "reverse_dns_block", 0},
    phrasing{"cannot find your hostname", "postfix", "reverse_dns_block", 0},
    phrasing{"blocked using", "postfix", "reverse_dns_block", 0},
    phrasing{"message size exceeds fixed limit", "postfix", "message_too_large", 0},
    phrasing{"too much mail from", "postfix", "relay_quota", 0},
    phrasing{"too many connections from", "postfix", "relay_quota", 0},
    phrasing{"insufficient system storage", "postfix", "temporary_failure", 4},
    // Exim
    phrasing{"unrouteable address", "exim", "unknown_recipient", 0},
    phrasing{"administrative prohibition", "exim", "policy_rejection", 0},
    phrasing{"mailbox quota exceeded", "exim", "mailbox_full", 0},
    // Gmail
    phrasing{"the email account that you tried to reach does not exist", "gmail", "unknown_recipient", 0},
    // 450 4.2.1 and 550 5.2.1 (RFC 3463 X.2.1): the mailbox exists, it takes no mail for now, or at all.
    phrasing{"receiving mail at a rate", "gmail", "mailbox_busy", 4},
    phrasing{"account that you tried to reach is disabled", "gmail", "mailbox_disabled", 5},
    phrasing{"out of storage space", "gmail", "mailbox_full", 0},
    phrasing{"daily user sending", "gmail", "relay_quota", 0},
    phrasing{"sending limit exceeded", "gmail", "relay_quota", 0},
    phrasing{"unsolicited mail", "gmail", "policy_rejection", 0},
    phrasing{"not in whitelist", "gmail", "reverse_dns_block", 0},
    // Proofpoint (Essentials)
    phrasing{"email blocked", "proofpoint", "sender_blocked", 0},
    phrasing{"tenant not found", "proofpoint", "tenant_propagation", 0},
    // Mimecast
    phrasing{"envelope blocked", "mimecast", "sender_blocked", 0},
    phrasing{"blocked senders", "mimecast", "sender_blocked", 0},
    phrasing{"invalid recipient", "mimecast", "unknown_recipient", 0},
    phrasing{"internal resource temporarily unavailable", "mimecast", "greylisting", 4},
    // Common wordings
    phrasing{"greylist", "", "greylisting", 4},
    phrasing{"graylist", "", "greylisting", 4},
    phrasing{"relay quota", "", "relay_quota", 0},
    phrasing{"rate limit", "", "relay_quota", 0},
    phrasing{"too many messages", "", "relay_quota", 0},
    phrasing{"daily limit", "", "relay_quota", 0},
    phrasing{"quota exceeded", "", "mailbox_full", 0},
    // Gmail's "is over quota", and Postfix access maps', Dovecot's and many others' "Over quota".
    phrasing{"over quota", "", "mailbox_full", 0},
    phrasing{"mailbox is full", "", "mailbox_full", 0},
    phrasing{"mailbox full", "", "mailbox_full", 0},
    phrasing{"no such user", "", "unknown_recipient", 0},
    phrasing{"unknown user", "", "unknown_recipient", 0},
    phrasing{"user not found", "", "unknown_recipient", 0},
    phrasing{"reverse dns", "", "reverse_dns_block", 0},
    phrasing{"reverse hostname", "", "reverse_dns_block", 0},
    phrasing{"ptr record", "", "reverse_dns_block", 0},
    phrasing{"block list", "", "sender_blocked", 0},
    phrasing{"blocklist", "", "sender_blocked", 0},
    phrasing{"blacklist", "", "sender_blocked", 0},
    phrasing{"tenant", "", "tenant_propagation", 0},
    phrasing{"too large", "", "message_too_large", 0},
    phrasing{"size limit", "", "message_too_large", 0},
};

// Names in greetings and replies that say whose server it is.
struct vendor_mark {
  std::string_view needle;
  std::string_view vendor;
};
constexpr std::array vendor_marks = {
    vendor_mark{"esmtp postfix", "postfix"},     vendor_mark{"queued as", "postfix"},
    vendor_mark{"exim", "exim"},                 vendor_mark{"microsoft esmtp", "microsoft"},
    vendor_mark{"outlook.com", "microsoft"},     vendor_mark{"internalid=", "microsoft"},
    vendor_mark{"mx.google.com", "gmail"},       vendor_mark{"gsmtp", "gmail"},
    vendor_mark{"pphosted", "proofpoint"},       vendor_mark{"proofpoint", "proofpoint"},
    vendor_mark{"mimecast", "mimecast"},
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::optional<phrasing_match> match_phrasing(std::string_view text, int code) {
  const std::string t = lower(text);
  for (const auto& p : phrasings)
    if ((p.klass == 0 || p.klass == code / 100) && t.find(p.needle) != std::string::npos)
      return phrasing_match{p.vendor, p.mode};
  return std::nullopt;
}

std::string_view vendor_of(std::string_view text) {
  const std::string t = lower(text);
  for (const auto& m : vendor_marks)
    if (t.find(m.needle) != std::string::npos) return m.vendor;
  return "";
}

}  // namespace mailtap::diagnose
