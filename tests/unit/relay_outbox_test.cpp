// The relay machine's outbox (protocol/relay_outbox.hpp) and AUTH redaction
// (protocol/auth_redaction.hpp): what the shell is told and what the recorder sees.
#include "protocol/relay_outbox.hpp"

#include <gtest/gtest.h>

#include "protocol/auth_redaction.hpp"
#include "relay_playbook.hpp"

namespace mailtap::protocol {
namespace {
using namespace std::chrono_literals;
using playbook::recording_observer;

std::vector<std::string> printed(std::vector<action> actions) {
  std::vector<std::string> out;
  for (const auto& a : actions) out.push_back(to_string(a));
  return out;
}

TEST(RelayOutbox, APipelinedGroupIsOneWriteEvenWithTimersBetween) {
  relay_outbox out(nullptr);
  out.send(leg::upstream, "MAIL FROM:<a@x>\r\n", 1);
  out.arm(leg::upstream, 300s);
  out.send(leg::upstream, "RCPT TO:<b@y>\r\n", 1);
  out.arm(leg::upstream, 300s);   // re-armed at once: one timer action
  EXPECT_EQ(printed(out.take()), (std::vector<std::string>{playbook::to_upstream("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"),
                                                           playbook::timer(leg::upstream, 300s)}));
  EXPECT_TRUE(out.take().empty());
}

TEST(RelayOutbox, NothingIsSentOnAClosedLeg) {
  recording_observer obs;
  relay_outbox out(&obs);
  out.close(leg::upstream);
  EXPECT_TRUE(out.closed(leg::upstream));
  out.send(leg::upstream, "QUIT\r\n", 1);
  out.mark_closed(leg::client);
  out.say(2, make_reply(421, "4.4.2", "closing"));
  EXPECT_EQ(printed(out.take()), (std::vector<std::string>{playbook::closes(leg::upstream)}));
  EXPECT_TRUE(obs.bytes.empty());
}

TEST(RelayOutbox, AuthMaterialIsRecordedMaskedAndSentAsItIs) {
  recording_observer obs;
  relay_outbox out(&obs);
  out.send(leg::upstream, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", 1, true);
  out.say(2, make_reply(334, "", ""));
  auto actions = printed(out.take());
  EXPECT_EQ(actions.front(), playbook::to_upstream("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", true));
  EXPECT_EQ(obs.stream(leg::upstream, direction::out), "AUTH PLAIN " + std::string(20, '*') + "\r\n");
  ASSERT_EQ(obs.replies.size(), 1u);
  EXPECT_EQ(obs.replies[0].r.code, 334);
}

TEST(RelayOutbox, TheCaptureBarrierGoesFirstOnce) {
  relay_outbox out(nullptr);
  out.send(leg::client, "250 2.0.0 Ok\r\n", 1);
  out.barrier_first();
  out.barrier_first();
  auto actions = out.take();
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<capture_barrier>(actions[0]));
}

TEST(RelayOutbox, AWithdrawnHandshakeIsNotAsked) {
  relay_outbox out(nullptr);
  out.push(start_tls{leg::upstream});
  out.withdraw_start_tls();
  EXPECT_TRUE(out.take().empty());
}

TEST(AuthRedaction, TheMechanismStaysAndTheResponseGoes) {
  EXPECT_EQ(auth_initial_response_at("AUTH PLAIN abc"), 11u);
  EXPECT_EQ(auth_initial_response_at("AUTH LOGIN"), std::string_view::npos);
  EXPECT_EQ(auth_initial_response_at("MAIL FROM:<a b>"), std::string_view::npos);
  EXPECT_EQ(redacted_auth_command("auth plain abc"), "auth plain [initial response redacted, 3 bytes]");
  EXPECT_EQ(redacted_auth_command("AUTH LOGIN"), "AUTH LOGIN");
  EXPECT_EQ(masked_auth_line("dXNlcg==\r\n"), "********\r\n") << "a response of the exchange is masked whole";
  EXPECT_EQ(stripped_crlf("NOOP\r\n"), "NOOP");
  EXPECT_EQ(stripped_crlf("NOOP\n"), "NOOP");
}

// Postfix's smtpd splits a command at any white space, so "AUTH<TAB>PLAIN x" is AUTH to it:
// the relay must read it so too, or it would record the secret (a hostile client's trial).
TEST(AuthRedaction, ATabSeparatesTheWordsAsASpaceDoes) {
  EXPECT_EQ(auth_initial_response_at("AUTH\tPLAIN abc"), 11u);
  EXPECT_EQ(auth_initial_response_at("AUTH PLAIN\tabc"), 11u);
  EXPECT_EQ(redacted_auth_command("AUTH\tPLAIN\tabc"), "AUTH\tPLAIN [initial response redacted, 3 bytes]");
  EXPECT_EQ(masked_auth_line("AUTH\tPLAIN AHVzZXIAcHc=\r\n"), "AUTH\tPLAIN ************\r\n");
  EXPECT_EQ(parse_command("AUTH\tLOGIN").cmd.ph, phase::auth);
}

}  // namespace
}  // namespace mailtap::protocol
