// diagnose/: the reply-code tables (RFC 5321 basic codes, the RFC 3463 / IANA enhanced code
// registry), code-first classification refined by MTA phrasings, and queue-id parsing.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "diagnose/classify.hpp"
#include "diagnose/handoff.hpp"
#include "diagnose/modes.hpp"
#include "diagnose/reply_codes.hpp"

namespace mailtap::diagnose {
namespace {

using protocol::phase;

TEST(EnhancedCodeTable, EveryEntryIsWellFormedUniqueAndInRegistryOrder) {
  ASSERT_GE(enhanced_table_size(), 80u);
  std::set<std::string> seen;
  std::pair<int, int> last{-1, -1};
  for (std::size_t i = 0; i < enhanced_table_size(); ++i) {
    const auto& e = enhanced_at(i);
    std::string code(e.code);
    ASSERT_EQ(code.rfind("X.", 0), 0u) << code;
    auto dot = code.find('.', 2);
    ASSERT_NE(dot, std::string::npos) << code;
    std::pair<int, int> sd{std::stoi(code.substr(2, dot - 2)), std::stoi(code.substr(dot + 1))};
    EXPECT_LT(last, sd) << code << " out of order";
    last = sd;
    EXPECT_TRUE(seen.insert(code).second) << code << " twice";
    EXPECT_FALSE(e.title.empty()) << code;
  }
  // Every subject of RFC 3463 3.1-3.8 has its "other or undefined" detail 0.
  for (int subject = 0; subject <= 7; ++subject)
    EXPECT_NE(find_enhanced("X." + std::to_string(subject) + ".0"), nullptr) << subject;
}

TEST(EnhancedCodeTable, MeaningsCarryTheClass) {
  EXPECT_EQ(enhanced_meaning("5.2.2"), "permanent failure: Mailbox full");
  EXPECT_EQ(enhanced_meaning("4.7.1"), "persistent transient failure: Delivery not authorized, message refused");
  EXPECT_EQ(enhanced_meaning("2.0.0"), "success: Other undefined status");
  EXPECT_EQ(enhanced_meaning("5.7.8"), "permanent failure: Authentication credentials invalid");
  EXPECT_EQ(enhanced_meaning("5.1.10"), "permanent failure: Recipient address has null MX");
  EXPECT_EQ(enhanced_meaning("5.6.10"),
            "permanent failure: UTF-8 string reply is required, but not permitted by the SMTP client (a duplicate of "
            "X.6.8)");
}

TEST(EnhancedCodeTable, UnlistedDetailFallsBackToItsSubject) {
  auto m = enhanced_meaning("5.7.606");
  ASSERT_TRUE(m);
  EXPECT_NE(m->find("Other or undefined security status"), std::string::npos) << *m;
  EXPECT_NE(m->find("606"), std::string::npos) << *m;
}

TEST(EnhancedCodeTable, NotAnEnhancedCode) {
  EXPECT_FALSE(enhanced_meaning(""));
  EXPECT_FALSE(enhanced_meaning("5.1"));
  EXPECT_FALSE(enhanced_meaning("3.1.1"));
  EXPECT_FALSE(enhanced_meaning("5.x.1"));
  EXPECT_FALSE(enhanced_meaning("5.1.1234"));
}

TEST(BasicCodes, Rfc5321MeaningsAndClassFallback) {
  EXPECT_EQ(basic_meaning(552), "Requested mail action aborted: exceeded storage allocation");
  EXPECT_EQ(basic_meaning(421), "Service not available, closing transmission channel");
  EXPECT_EQ(basic_meaning(535), "Authentication credentials invalid");
  EXPECT_EQ(basic_meaning(559), "permanent negative completion (do not retry as is), mail system");
  EXPECT_EQ(basic_meaning(42), "not a reply code");
  // 551 is RCPT's reply (RFC 5321 3.4, 4.3.2): to another command, no "User not local".
  EXPECT_EQ(basic_meaning(551, phase::rcpt), "User not local");
  for (auto ph : {phase::mail, phase::data, phase::data_end, phase::bdat}) {
    EXPECT_EQ(basic_meaning(551, ph).find("User not local"), std::string::npos) << basic_meaning(551, ph);
    EXPECT_EQ(basic_meaning(551, ph).rfind("permanent negative completion", 0), 0u) << basic_meaning(551, ph);
  }
  EXPECT_EQ(basic_meaning(552, phase::bdat), basic_meaning(552));
}

TEST(Classify, CodeFirst) {
  EXPECT_EQ(classify_by_code(phase::rcpt, 552, "5.2.2").mode, "mailbox_full");
  EXPECT_TRUE(classify_by_code(phase::rcpt, 552, "5.2.2").specific);
  EXPECT_EQ(classify_by_code(phase::rcpt, 550, "5.1.1").mode, "unknown_recipient");
  EXPECT_EQ(classify_by_code(phase::auth, 535, "5.7.8").mode, "smarthost_auth");
  EXPECT_EQ(classify_by_code(phase::mail, 452, "4.5.3").mode, "relay_quota");
  // X.5.3 to RCPT is too many recipients, not a quota (a hostile trial: mailtap's own 452 4.5.3
  // past 1,000 recipients read as "sending quota or rate limit reached").
  EXPECT_EQ(classify_by_code(phase::rcpt, 452, "4.5.3").mode, "too_many_recipients");
  EXPECT_TRUE(classify_by_code(phase::rcpt, 452, "4.5.3").specific);
  // 421 after the greeting closes the session (RFC 5321 3.8), whatever the command: an
  // unsolicited "421 4.3.2 idle shutdown" read as "command refused".
  EXPECT_EQ(classify_by_code(phase::other, 421, "4.3.2").mode, "service_closing");
  EXPECT_EQ(classify_by_code(phase::mail, 421, "4.3.2").mode, "service_closing");
  EXPECT_EQ(classify_by_code(phase::data_end, 421, "").mode, "service_closing");
  EXPECT_FALSE(classify_by_code(phase::mail, 421, "4.7.0").specific);   // its text may say more
  EXPECT_EQ(classify_by_code(phase::data_end, 552, "5.3.4").mode, "message_too_large");
  EXPECT_EQ(classify_by_code(phase::banner, 554, "5.7.1").mode, "reverse_dns_block");
  EXPECT_EQ(classify_by_code(phase::banner, 421, "4.4.1").mode, "destination_unreachable");
  // A destination that greets with 421 was reached: it refuses service (load, a connection
  // limit, a shutdown). Postfix's "421 4.3.2 Service shutting down", its anvil's "421 4.7.0
  // Error: too many connections", and a bare 421.
  EXPECT_EQ(classify_by_code(phase::banner, 421, "4.3.2").mode, "service_unavailable");
  EXPECT_TRUE(classify_by_code(phase::banner, 421, "4.3.2").specific);
  EXPECT_EQ(classify_by_code(phase::banner, 421, "4.7.0").mode, "service_unavailable");
  EXPECT_EQ(classify_by_code(phase::banner, 421, "").mode, "service_unavailable");
  EXPECT_EQ(classify_by_code(phase::banner, 554, "5.7.1").mode, "reverse_dns_block");
  EXPECT_EQ(classify_by_code(phase::rcpt, 451, "4.7.1").mode, "greylisting");
  EXPECT_EQ(classify_by_code(phase::mail, 550, "5.7.1").mode, "sender_blocked");
  EXPECT_EQ(classify_by_code(phase::rcpt, 550, "5.7.23").mode, "sender_authentication");
  EXPECT_EQ(classify_by_code(phase::rcpt, 451, "4.3.0").mode, "temporary_failure");
  EXPECT_EQ(classify_by_code(phase::ehlo, 500, "5.5.1").mode, "command_rejected");
  EXPECT_EQ(classify_by_code(phase::starttls, 454, "4.7.0").mode, "tls_unavailable");
  EXPECT_EQ(classify_by_code(phase::starttls, 502, "5.5.1").mode, "tls_unavailable");   // not offered
  // A second STARTTLS (503 5.5.1 TLS already active) is the client's mistake, not a lack of TLS.
  EXPECT_EQ(classify_by_code(phase::starttls, 503, "5.5.1").mode, "command_rejected");
  EXPECT_EQ(classify_by_code(phase::starttls, 501, "5.5.4").mode, "command_rejected");
  // No enhanced code: the basic code at its stage.
  EXPECT_EQ(classify_by_code(phase::rcpt, 550, "").mode, "unknown_recipient");
  EXPECT_EQ(classify_by_code(phase::mail, 552, "").mode, "message_too_large");
  EXPECT_EQ(classify_by_code(phase::rcpt, 250, "2.1.5").mode, "");
  // A fifth trial: 450 4.1.8 "Sender address rejected: Domain not found" read as a block list,
  // and 454 4.7.0 at MAIL as a sending quota.
  EXPECT_EQ(classify_by_code(phase::mail, 450, "4.1.8").mode, "sender_address_rejected");
  EXPECT_EQ(classify_by_code(phase::mail, 553, "5.1.7").mode, "sender_address_rejected");
  EXPECT_EQ(classify_by_code(phase::mail, 454, "4.7.0").mode, "temporary_failure");
  EXPECT_FALSE(classify_by_code(phase::mail, 454, "4.7.0").specific);
}

// RFC 3463 3.3, the mailbox status subject, detail by detail. X.2.1 "Mailbox disabled, not
// accepting messages": the mailbox exists (never an unknown recipient, which a tester's
// "450 4.2.1 Mailbox busy, try later" was called, with advice to check the address for typos);
// as a 4xx the mailbox takes no mail for now (Gmail's rate limit per recipient), as a 5xx it
// is disabled. X.2.0 says the mailbox exists too; X.2.4 is a list that could not be expanded.
TEST(Classify, MailboxStatusSubjectFollowsRfc3463) {
  for (phase ph : {phase::rcpt, phase::data_end, phase::mail}) {
    auto busy = classify_by_code(ph, 450, "4.2.1");
    EXPECT_EQ(busy.mode, "mailbox_busy") << protocol::to_string(ph);
    EXPECT_TRUE(busy.specific);
    auto disabled = classify_by_code(ph, 550, "5.2.1");
    EXPECT_EQ(disabled.mode, "mailbox_disabled") << protocol::to_string(ph);
    EXPECT_TRUE(disabled.specific);
  }
  EXPECT_EQ(classify_by_code(phase::rcpt, 451, "4.2.1").mode, "mailbox_busy");
  EXPECT_EQ(classify_by_code(phase::rcpt, 554, "5.2.1").mode, "mailbox_disabled");
  // A specific code: no wording turns it into another mode.
  auto v = classify(phase::rcpt, 450, "4.2.1", "Mailbox busy, try later");
  EXPECT_EQ(v.mode, "mailbox_busy");
  v = classify(phase::rcpt, 450, "4.2.1", "The user you are trying to contact is receiving mail at a rate that "
                                          "prevents additional messages from being delivered. - gsmtp");
  EXPECT_EQ(v.mode, "mailbox_busy");
  EXPECT_EQ(v.vendor, "gmail");
  v = classify(phase::rcpt, 550, "5.2.1", "The email account that you tried to reach is disabled. - gsmtp");
  EXPECT_EQ(v.mode, "mailbox_disabled");
  EXPECT_EQ(v.vendor, "gmail");
  // Gmail's wordings name the condition without an enhanced code too.
  v = classify(phase::rcpt, 450, "", "The user you are trying to contact is receiving mail at a rate that prevents "
                                     "additional messages from being delivered.");
  EXPECT_EQ(v.mode, "mailbox_busy");
  v = classify(phase::rcpt, 550, "", "The email account that you tried to reach is disabled.");
  EXPECT_EQ(v.mode, "mailbox_disabled");
  // X.2.2, X.2.3 unchanged.
  EXPECT_EQ(classify_by_code(phase::rcpt, 452, "4.2.2").mode, "mailbox_full");
  EXPECT_EQ(classify_by_code(phase::data_end, 552, "5.2.3").mode, "message_too_large");
  // X.2.4: the recipient is a mailing list the destination could not expand.
  EXPECT_EQ(classify_by_code(phase::rcpt, 550, "5.2.4").mode, "list_expansion_failed");
  EXPECT_EQ(classify_by_code(phase::rcpt, 450, "4.2.4").mode, "list_expansion_failed");
  EXPECT_TRUE(classify_by_code(phase::rcpt, 550, "5.2.4").specific);
  // X.2.0: "the mailbox exists, but something about it" caused the refusal: no unknown
  // recipient from the basic code. Its wording may still say more; Postgrey's 450 4.2.0
  // deferral stays greylisting.
  EXPECT_EQ(classify_by_code(phase::rcpt, 550, "5.2.0").mode, "permanent_failure");
  EXPECT_FALSE(classify_by_code(phase::rcpt, 550, "5.2.0").specific);
  EXPECT_EQ(classify_by_code(phase::rcpt, 553, "5.2.0").mode, "permanent_failure");
  EXPECT_EQ(classify(phase::rcpt, 550, "5.2.0", "Mailbox full").mode, "mailbox_full");
  EXPECT_EQ(classify_by_code(phase::rcpt, 450, "4.2.0").mode, "greylisting");
  EXPECT_EQ(classify(phase::rcpt, 450, "4.2.0", "Recipient address rejected: Greylisted").mode, "greylisting");
  EXPECT_EQ(classify_by_code(phase::rcpt, 452, "4.2.0").mode, "mailbox_full");
  // The basic code alone is unchanged: 550 at RCPT is an unknown recipient.
  EXPECT_EQ(classify_by_code(phase::rcpt, 550, "").mode, "unknown_recipient");
}

// RFC 3463 3.2, the address status subject, detail by detail (655d93b did X.2.x). X.1.6 (moved,
// no forwarding address) and X.1.10 (null MX, RFC 7505) were unknown_recipient, advising to check
// for typos; X.1.4 (ambiguous) and X.1.0 fell through to the basic code, so a 550 to RCPT was an
// unknown recipient. X.1.7 and X.1.8 are the sender's address wherever the reply comes (Postfix
// delays its sender restrictions to RCPT by default); at MAIL every X.1.x names the sender.
TEST(Classify, AddressStatusSubjectFollowsRfc3463) {
  for (auto [code, enhanced] : {std::pair{550, "5.1.6"}, std::pair{551, "5.1.6"}, std::pair{450, "4.1.6"}}) {
    auto c = classify_by_code(phase::rcpt, code, enhanced);
    EXPECT_EQ(c.mode, "mailbox_moved") << enhanced;
    EXPECT_TRUE(c.specific);
  }
  for (auto [code, enhanced] : {std::pair{556, "5.1.10"}, std::pair{550, "5.1.10"}}) {
    auto c = classify_by_code(phase::rcpt, code, enhanced);
    EXPECT_EQ(c.mode, "null_mx") << code;
    EXPECT_TRUE(c.specific);
  }
  // 556 "Domain does not accept mail" (RFC 7504), the basic code RFC 7505 names for a null MX.
  EXPECT_EQ(classify_by_code(phase::rcpt, 556, "").mode, "null_mx");
  EXPECT_FALSE(classify_by_code(phase::rcpt, 556, "").specific);
  for (auto [code, enhanced] : {std::pair{550, "5.1.4"}, std::pair{553, "5.1.4"}, std::pair{450, "4.1.4"}}) {
    auto c = classify_by_code(phase::rcpt, code, enhanced);
    EXPECT_EQ(c.mode, "ambiguous_recipient") << enhanced;
    EXPECT_TRUE(c.specific);
  }
  for (auto [code, enhanced] : {std::pair{501, "5.1.3"}, std::pair{553, "5.1.3"}}) {
    auto c = classify_by_code(phase::rcpt, code, enhanced);
    EXPECT_EQ(c.mode, "recipient_address_invalid") << code;
    EXPECT_TRUE(c.specific);
  }
  // X.1.0 "Other address status": no unknown recipient from the basic code; generic, its
  // wording may say more (Postfix words a sender it does not know "Sender address rejected:
  // User unknown in ..." with 5.1.0, at RCPT when it delays its restrictions).
  EXPECT_EQ(classify_by_code(phase::rcpt, 550, "5.1.0").mode, "permanent_failure");
  EXPECT_FALSE(classify_by_code(phase::rcpt, 550, "5.1.0").specific);
  EXPECT_EQ(classify_by_code(phase::rcpt, 553, "5.1.0").mode, "permanent_failure");
  EXPECT_EQ(classify_by_code(phase::rcpt, 450, "4.1.0").mode, "temporary_failure");
  EXPECT_EQ(classify_by_code(phase::mail, 550, "5.1.0").mode, "permanent_failure");
  EXPECT_EQ(classify(phase::rcpt, 550, "5.1.0", "<r@example.test>: Recipient address rejected: User unknown in "
                                                "virtual mailbox table").mode,
            "unknown_recipient");
  EXPECT_EQ(classify(phase::rcpt, 550, "5.1.0", "<s@example.test>: Sender address rejected: User unknown in "
                                                "virtual mailbox table").mode,
            "sender_address_rejected");
  EXPECT_EQ(classify(phase::mail, 550, "5.1.0", "<s@example.test>: Sender address rejected: User unknown in local "
                                                "recipient table").mode,
            "sender_address_rejected");
  // X.1.1, X.1.2 stay unknown recipients, deferred or refused.
  EXPECT_EQ(classify_by_code(phase::rcpt, 550, "5.1.1").mode, "unknown_recipient");
  EXPECT_EQ(classify_by_code(phase::rcpt, 450, "4.1.1").mode, "unknown_recipient");
  EXPECT_EQ(classify_by_code(phase::rcpt, 550, "5.1.2").mode, "unknown_recipient");
  // The sender's address: X.1.7, X.1.8, X.7.27 (RFC 7505 3: the sender's domain has a null MX),
  // at MAIL or at a delayed RCPT; at MAIL any X.1.x detail is about the only address there.
  for (phase ph : {phase::mail, phase::rcpt}) {
    for (auto [code, enhanced] : {std::pair{553, "5.1.7"}, std::pair{501, "5.1.7"}, std::pair{450, "4.1.8"},
                                  std::pair{550, "5.1.8"}, std::pair{550, "5.7.27"}}) {
      auto c = classify_by_code(ph, code, enhanced);
      EXPECT_EQ(c.mode, "sender_address_rejected") << protocol::to_string(ph) << " " << enhanced;
      EXPECT_TRUE(c.specific);
    }
  }
  for (auto enhanced : {"5.1.1", "5.1.2", "5.1.3", "5.1.4", "5.1.6", "5.1.10"})
    EXPECT_EQ(classify_by_code(phase::mail, 550, enhanced).mode, "sender_address_rejected") << enhanced;
}

TEST(Classify, PhrasingsRefineGenericCodes) {
  auto v = classify(phase::rcpt, 554, "5.7.1", "<x@example.test>: Relay access denied");
  EXPECT_EQ(v.mode, "tenant_propagation");
  EXPECT_EQ(v.vendor, "postfix");
  EXPECT_TRUE(v.refined);
  v = classify(phase::mail, 450, "4.7.1", "Error: too much mail from 127.0.0.1");
  EXPECT_EQ(v.mode, "relay_quota");
  v = classify(phase::rcpt, 554, "5.7.1", "<bad@example.test>: Sender address rejected: Access denied");
  EXPECT_EQ(v.mode, "sender_blocked");
  v = classify(phase::rcpt, 550, "5.7.64", "TenantAttribution; Relay Access Denied");
  EXPECT_EQ(v.mode, "tenant_propagation");
  EXPECT_EQ(v.vendor, "microsoft");
  v = classify(phase::rcpt, 451, "", "Internal resource temporarily unavailable - https://community.mimecast.com");
  EXPECT_EQ(v.mode, "greylisting");
  EXPECT_EQ(v.vendor, "mimecast");
  v = classify(phase::mail, 550, "5.7.1", "Email blocked by proofpoint");
  EXPECT_EQ(v.mode, "sender_blocked");
  EXPECT_EQ(v.vendor, "proofpoint");
  v = classify(phase::mail, 550, "5.4.5", "Daily user sending limit exceeded");
  EXPECT_EQ(v.mode, "relay_quota");
  EXPECT_EQ(v.vendor, "gmail");
  // "Quota exceeded" at MAIL, or with a 421, is a sending quota: a full mailbox refuses a
  // recipient or a message and never closes the session (mailtap's own quota fault's text).
  EXPECT_EQ(classify(phase::mail, 421, "4.7.0", "Quota exceeded, closing connection").mode, "relay_quota");
  EXPECT_EQ(classify(phase::rcpt, 421, "4.7.0", "Quota exceeded, closing connection").mode, "relay_quota");
  EXPECT_EQ(classify(phase::mail, 451, "4.3.0", "Quota exceeded, please try again later").mode, "relay_quota");
  EXPECT_EQ(classify(phase::rcpt, 452, "", "Quota exceeded").mode, "mailbox_full");
  // "Over quota" is many servers' wording (Postfix's access maps, Dovecot's LMTP): it names a full
  // mailbox, not Gmail (a trial with Postfix read "server gmail").
  v = classify(phase::rcpt, 452, "", "<x@example.test>: Recipient address rejected: Over quota");
  EXPECT_EQ(v.mode, "mailbox_full");
  EXPECT_EQ(v.vendor, "");
  EXPECT_EQ(classify(phase::mail, 454, "4.7.1", "<x@example.test>: Relay access denied").mode, "tenant_propagation");
}

TEST(Classify, PhrasingNeverOverridesASpecificCode) {
  // A 5.1.1 is an unknown recipient whatever the text says.
  auto v = classify(phase::rcpt, 550, "5.1.1", "Mailbox full");
  EXPECT_EQ(v.mode, "unknown_recipient");
  EXPECT_FALSE(v.refined);
  // A greylisting wording does not turn a permanent refusal into a deferral.
  v = classify(phase::rcpt, 550, "5.7.1", "greylisted");
  EXPECT_EQ(v.mode, "policy_rejection");
  // A greeting's refusal stays about the connection.
  v = classify(phase::banner, 554, "", "Mailbox full");
  EXPECT_EQ(v.mode, "reverse_dns_block");
}

TEST(Classify, EveryModeClassifyCanNameHasItsText) {
  for (auto id : {"mailbox_full", "unknown_recipient", "sender_blocked", "tenant_propagation", "smarthost_auth",
                  "relay_quota", "message_too_large", "reverse_dns_block", "greylisting", "destination_unreachable",
                  "service_unavailable", "policy_rejection", "sender_authentication", "temporary_failure", "permanent_failure",
                  "command_rejected", "tls_unavailable", "blackhole", "firewall_fixup", "content_scan_delay",
                  "slow_destination", "service_closing", "too_many_recipients", "auth_cancelled",
                  "auth_response_refused", "sender_address_rejected", "mailbox_busy", "mailbox_disabled",
                  "list_expansion_failed", "mailbox_moved", "null_mx", "ambiguous_recipient",
                  "recipient_address_invalid"}) {
    EXPECT_TRUE(is_mode(id)) << id;
    EXPECT_FALSE(mode(id).explanation.empty()) << id;
    EXPECT_FALSE(mode(id).action.empty()) << id;
  }
}

TEST(QueueId, CommonPhrasings) {
  auto q = parse_queue_id("2.0.0 Ok: queued as 4F2A1C3B9");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->id, "4F2A1C3B9");
  EXPECT_EQ(q->vendor, "postfix");
  q = parse_queue_id("OK id=1qAbCd-0001Xy-Ab");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->id, "1qAbCd-0001Xy-Ab");
  EXPECT_EQ(q->vendor, "exim");
  q = parse_queue_id("2.6.0 <m1@example.org> [InternalId=12884901890, Hostname=AM0PR01MB1234.eurprd01.prod.outlook.com] "
                     "Queued mail for delivery");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->id, "12884901890");
  EXPECT_EQ(q->vendor, "microsoft");
  q = parse_queue_id("2.0.0 OK  1700000000 a1-20020a05600c3b0100b0040b3d3d2b1esi123456wmb.12 - gsmtp");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->id, "a1-20020a05600c3b0100b0040b3d3d2b1esi123456wmb.12");
  EXPECT_EQ(q->vendor, "gmail");
  q = parse_queue_id("2.0.0 3AB1cD2e012345 Message accepted for delivery");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->id, "3AB1cD2e012345");
  EXPECT_FALSE(parse_queue_id("2.0.0 Ok"));
  EXPECT_FALSE(parse_queue_id("Message accepted for delivery"));
}

}  // namespace
}  // namespace mailtap::diagnose
