// The failure-mode texts (diagnose/README.md lists the ids). One row per mode; the
// explanations say what the wire shows and the usual cause, the actions what to change.
#include "diagnose/modes.hpp"

#include <array>

namespace mailtap::diagnose {

namespace {

constexpr std::array modes = {
    mode_text{"mailbox_full", "recipient mailbox full",
              "The destination refused the recipient because the mailbox is over its quota (enhanced code X.2.2).",
              "The recipient (or their administrator) must free space or raise the quota; a 5xx will not succeed "
              "on retry, a 4xx may once space is freed."},
    mode_text{"unknown_recipient", "unknown or misspelled recipient",
              "The destination does not know this address (X.1.1: bad mailbox; X.1.2: bad domain): a typo, a "
              "removed user, or a stale contact or distribution list. As a 4xx, the destination could not confirm "
              "the address for now (a recipient lookup or verification that did not complete).",
              "Check the address for typos; confirm with the recipient's administrator that the mailbox exists."},
    mode_text{"mailbox_moved", "recipient mailbox moved, no forwarding address",
              "The destination says this mailbox has moved and left no forwarding address (X.1.6, RFC 3463 3.2): "
              "the address was once right and is no longer used, most often a person who left the organization or "
              "changed address. It is not a typo. A 5xx will not succeed on retry; a 4xx X.1.6 is the destination "
              "deferring while the move is in progress.",
              "Tell the sender the recipient has moved: ask the recipient for the new address by another channel "
              "(or their organization for a successor), then update the contact or remove it from lists."},
    mode_text{"null_mx", "recipient domain accepts no mail (null MX)",
              "The recipient's domain publishes a null MX (an MX record of \".\", RFC 7505): it declares that it "
              "receives no mail at all, so no server will deliver to any address there (X.1.10 \"Recipient address "
              "has null MX\", basic code 556 \"Domain does not accept mail\", RFC 7504). Whoever refused looked up "
              "the domain's MX: the destination itself or a smart host on the way.",
              "The address cannot receive mail at this domain; retrying will not help. Check the domain part against "
              "the one the recipient uses (a lookalike or a retired domain, or a send-only domain such as a "
              "no-reply address), and ask the recipient for a domain that receives mail."},
    mode_text{"ambiguous_recipient", "recipient address ambiguous",
              "The destination refused this recipient because the address matches more than one mailbox (X.1.4 "
              "\"Destination mailbox address ambiguous\", RFC 3463 3.2; RFC 5321's \"553 User ambiguous\"): a "
              "short name or alias that several users share.",
              "Use the recipient's exact, full address (the one their mailbox answers to, not a nickname or partial "
              "name); the destination's administrator can say which addresses the alias matched."},
    mode_text{"recipient_address_invalid", "recipient address malformed",
              "The destination refused this recipient because the address is not valid syntax (X.1.3 \"Bad "
              "destination mailbox address syntax\", RFC 3463 3.2; RFC 5321 4.1.2): a missing or doubled @, spaces "
              "or forbidden characters, an unqualified name, or a client that wrote the RCPT TO line wrongly "
              "(angle brackets, quoting).",
              "Look at the RCPT command in the evidence: correct the address if it is mistyped, or fix how the "
              "client writes RCPT TO if the address itself is right."},
    mode_text{"mailbox_busy", "recipient mailbox busy or receiving too fast (retry later)",
              "The destination deferred this recipient with X.2.1, \"Mailbox disabled, not accepting messages\" "
              "(RFC 3463 3.3), as a temporary failure: the mailbox exists but takes no mail for now. Most often it is "
              "receiving mail faster than its provider allows (Gmail's 450 4.2.1: \"receiving mail at a rate that "
              "prevents additional messages from being delivered\"), or it is locked or suspended for a while. The "
              "address is not wrong.",
              "Keep the mail queued and let the sender retry later: it gets through once the mailbox takes mail "
              "again. If it persists for this recipient, send to it more slowly, or ask the recipient's "
              "administrator whether the mailbox is suspended."},
    mode_text{"mailbox_disabled", "recipient mailbox disabled",
              "The destination refused this recipient with X.2.1, \"Mailbox disabled, not accepting messages\" "
              "(RFC 3463 3.3), as a permanent failure: the mailbox exists but is disabled or suspended (Gmail's "
              "550 5.2.1: \"The email account that you tried to reach is disabled\"). The address is not "
              "misspelled; retrying will not help while the mailbox stays disabled.",
              "Tell the sender the recipient's mailbox is disabled: reach the recipient another way, or ask their "
              "administrator to enable it again; take the address off lists if it stays disabled."},
    mode_text{"list_expansion_failed", "mailing list could not be expanded",
              "The recipient is a mailing list address, and the destination could not expand it to its members "
              "(X.2.4, RFC 3463 3.3): the list exists; its member lookup or its configuration failed.",
              "Tell the list's owner or the destination's administrator (its log names the failure); a sender "
              "retries a 4xx, and a 5xx will not succeed until the list is fixed."},
    mode_text{"sender_blocked", "sender refused by policy (block list)",
              "The destination refused mail from this sender (address, domain or sending IP) by policy: a block "
              "list entry or a sender access rule.",
              "Ask the destination's administrator to check its block lists and sender rules for this sender; check "
              "the sending IP on public block lists."},
    mode_text{"sender_address_rejected", "sender address refused (malformed, or its domain does not resolve)",
              "The destination refused the envelope sender (MAIL FROM) itself, not a recipient, even when the reply "
              "came to a RCPT (Postfix applies its sender checks at RCPT by default): its syntax (RFC 3463 X.1.7), "
              "or its domain, which has no DNS address or MX record, or whose lookup failed (X.1.8: Postfix's "
              "reject_unknown_sender_domain answers 450 4.1.8 while DNS fails, 550 when the domain does not exist), "
              "or publishes a null MX so that no bounce could reach it (X.7.27, RFC 7505), or is a domain of the "
              "destination's own that has no such user (Postfix's \"Sender address rejected: User unknown\").",
              "Check the sender address the client uses (a typo, an unqualified or internal-only domain) and that its "
              "domain resolves in public DNS (an MX or A record) and receives mail; a 4xx is retried and passes once "
              "the lookup succeeds."},
    mode_text{"tenant_propagation", "destination does not accept this domain (relay access denied)",
              "The destination refused to accept mail for this recipient domain. A cloud gateway tenant that was just "
              "set up answers this until its configuration has propagated (up to about 60 minutes); a wrong MX, "
              "connector or accepted-domain setting looks the same.",
              "If the tenant is new, wait and retry; otherwise check the MX record and the gateway's accepted domains "
              "and connectors for this domain."},
    mode_text{"smarthost_auth", "smart host authentication failed",
              "The smart host refused the login (535 5.7.8: credentials invalid) or requires one: no mail leaves "
              "through it.",
              "Check the relay credentials configured on the sender (a changed password, a disabled account, basic "
              "authentication turned off) and the AUTH mechanism."},
    mode_text{"relay_quota", "sending quota or rate limit reached",
              "The destination or smart host limits how many messages (or connections) a sender may send in a "
              "period, and this one is over it.",
              "Keep the mail queued and retry later (4xx); spread the sending out, or ask the provider for a higher "
              "limit (a 5xx daily limit resets after its window)."},
    mode_text{"message_too_large", "message too large",
              "The destination refused the message for its size (X.3.4, X.2.3, or 552 at MAIL or end of data).",
              "Send a smaller message (compress or link attachments), or raise the destination's size limit."},
    mode_text{"reverse_dns_block", "sending host blocked (reverse DNS or IP reputation)",
              "The destination refused the sending host itself, typically because its IP has no matching reverse "
              "DNS name or its address range is on an ISP or reputation block list.",
              "Give the sending IP a PTR record that resolves back to it, check it on block lists, or relay through "
              "the ISP's smart host."},
    mode_text{"greylisting", "greylisted (temporary deferral)",
              "The destination deferred the recipient with a 4xx policy code: greylisting defers the first attempt "
              "from an unknown (client, sender, recipient) triple and accepts a retry after a few minutes.",
              "Nothing, if the sender retries: delivery follows the next attempt after the greylist delay (5 to 15 "
              "minutes in the field). Check that the sender does retry."},
    mode_text{"destination_unreachable", "destination unreachable",
              "The destination could not be reached or did not greet: a stale MX, a firewall or NAT change, or a "
              "mail service that is down.",
              "Check the MX/next-hop address, the firewall and NAT rules on the path, and that the destination's SMTP "
              "service runs and answers on its port."},
    mode_text{"service_unavailable", "destination refused service at its greeting",
              "The destination was reached, and answered the connection with 421 instead of 220 (RFC 5321 4.2.3): "
              "it takes no mail now. It is overloaded, limits connections from this client, or is shutting down; "
              "a sender keeps the message queued and tries again later.",
              "Read the greeting's text for the reason, then check the destination's load and its per-client "
              "connection limits (Postfix: smtpd_client_connection_count_limit, postscreen)."},
    mode_text{"service_closing", "destination closed the session with 421",
              "The destination answered 421 and closed the connection (RFC 5321 3.8): it is shutting down, timed "
              "the session out while it waited for a command, or hit a limit (errors, connections, messages). "
              "Nothing more reaches it in this session; a sender keeps any message not yet accepted queued and "
              "tries again later.",
              "Read the reply's text for the reason, then the destination's logs; a 421 after the client sat idle is "
              "the destination's command timeout (Postfix: smtpd_timeout, 300 s)."},
    mode_text{"too_many_recipients", "too many recipients in one transaction",
              "The server takes no more recipients in this transaction (X.5.3). RFC 5321 4.5.3.1.10: a server may "
              "limit the recipients of a message (to no fewer than 100, 4.5.3.1.8), and answers those past its "
              "limit with 452, asking the client to send them in a further transaction.",
              "Send the remaining recipients in another transaction (after this one), or raise the server's limit "
              "(Postfix: smtpd_recipient_limit); mailtap itself takes at most 1,000 per transaction."},
    mode_text{"auth_cancelled", "the client cancelled authentication",
              "The client answered the server's AUTH challenge with '*', which cancels the exchange, and the "
              "server refused the AUTH command with 501 as it must (RFC 4954 4). Nothing was refused by the "
              "server's choice: the client gave up the login, and the session goes on unauthenticated.",
              "Look at the client's AUTH configuration: it cancels when it has no credentials for the offered "
              "mechanism, or when it cannot continue the exchange."},
    mode_text{"auth_response_refused", "the client's AUTH response was malformed",
              "The client's answer to the server's AUTH challenge held a bare CR, a bare LF or a NUL, which no "
              "base64 response may (RFC 4954 4). mailtap never forwards such a line, since the destination could "
              "split it differently: it cancelled the exchange with '*' in the client's place, and the server "
              "refused the AUTH command with 501 as it must. The login failed because of the client's bytes.",
              "Look at the client's AUTH code: each response must be one line of base64 ending in CRLF. The "
              "capture's note and the client's bytes show what it sent."},
    mode_text{"policy_rejection", "refused by the destination's policy",
              "The destination refused this message or recipient by policy (X.7.x): content filtering, an access "
              "rule, or a relay restriction.",
              "Read the reply text for the rule that refused it, and ask the destination's administrator."},
    mode_text{"sender_authentication", "sender authentication (SPF/DKIM/DMARC) failed",
              "The destination refused the message because the sender's domain authentication failed (X.7.20 to "
              "X.7.26).",
              "Fix the sender domain's SPF record, DKIM signing or DMARC alignment for this sending path."},
    mode_text{"destination_misconfigured", "the destination's own configuration is broken",
              "The destination answered X.3.5, \"System incorrectly configured\" (RFC 3463 3.4): a map, a milter, a "
              "lookup table or a policy service of its own failed (Postfix says \"Server configuration error\"). "
              "Whatever the rest of its text names (a sender, a recipient), the refusal is not about them.",
              "The destination's administrator must fix its configuration (its log names the table or service); "
              "a sender keeps a 4xx's mail queued and retries, and bounces a 5xx's."},
    mode_text{"temporary_failure", "temporary failure at the destination",
              "The destination deferred with a 4xx: a transient condition (load, a lookup timing out, storage).",
              "The sender should keep the mail queued and retry; if it persists, look at the destination's logs."},
    mode_text{"permanent_failure", "permanent failure at the destination",
              "The destination refused with a 5xx that names no more specific cause.",
              "Read the reply text; the sender should bounce the message, not retry it as is."},
    mode_text{"command_rejected", "command refused",
              "A command was refused (syntax, an unsupported command or parameter, or a bad sequence).",
              "Check the client's SMTP dialogue against what the server offers in its EHLO reply."},
    mode_text{"tls_unavailable", "STARTTLS refused",
              "The client asked for STARTTLS and was refused: the session either went on in plaintext or ended.",
              "Check TLS on the destination (certificate, STARTTLS offered) and on the relay path."},
    mode_text{"blackhole", "mail lost without a bounce (blackhole)",
              "The end of data was answered 250, but the reply was made on the path, not by the destination: nothing "
              "was delivered and no bounce will come back.",
              "Find what answered instead of the destination (a filter, a quarantine, a black-holing ISP); in a "
              "capture with a blackhole fault, the rule named here did."},
    mode_text{"firewall_fixup", "Cisco SMTP fixup / ESMTP inspection in the path",
              "A firewall's SMTP inspection rewrites the conversation: a greeting masked with '*', EHLO answered 500, "
              "STARTTLS shown as XXXXXXXA, and an end of data split over two segments never passed on (the sender "
              "times out and re-sends: duplicates).",
              "Turn off SMTP fixup / ESMTP inspection on the Cisco PIX/ASA (no fixup protocol smtp; no inspect "
              "esmtp), or at least allow STARTTLS through it."},
    mode_text{"content_scan_delay", "end-of-data reply delayed (content scanning)",
              "The destination held its reply to the end of data for a long time: content scanning or attachment "
              "sandboxing (5 to 15 minutes in the field). A sender that gives up first re-sends, and the "
              "recipient gets duplicates.",
              "Expect the delay for scanned mail, or exempt the sender; keep the sender's end-of-data timeout at "
              "least 10 minutes (RFC 5321 4.5.3.2.6)."},
    mode_text{"slow_destination", "slow destination",
              "The destination is slow to greet or to answer: an overloaded server, or slow DNS, block-list or "
              "filter lookups before each reply.",
              "Look at the destination's load and its lookups (DNS resolvers, DNSBL timeouts); senders wait up to "
              "5 minutes per reply (RFC 5321 4.5.3.2)."},
};

}  // namespace

const mode_text& mode(std::string_view id) {
  for (const auto& m : modes)
    if (m.id == id) return m;
  for (const auto& m : modes)
    if (m.id == "permanent_failure") return m;
  return modes.front();
}

bool is_mode(std::string_view id) {
  for (const auto& m : modes)
    if (m.id == id) return true;
  return false;
}

}  // namespace mailtap::diagnose
