// The client's STARTTLS in the relay machine, where it meets the commands before it: bytes
// pipelined after STARTTLS (CVE-2011-0411) end the session, but the replies owed to the commands
// before it still go out first, in order (RFC 2920 3.1); after HELO, with no EHLO reply to go by,
// it is put to the destination. The sequencer on its own is starttls_sequencer_test.cpp; the
// STARTTLS order after EHLO, relay_fsm_test.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "protocol/limits.hpp"
#include "protocol/relay_fsm.hpp"
#include "relay_playbook.hpp"

namespace mailtap::protocol {
namespace {

using testing::Contains;
using testing::ElementsAre;
using testing::HasSubstr;
using testing::IsEmpty;
using testing::Not;
using namespace playbook;

const std::string tls_ehlo_reply = "250-mx.example.org\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n";

class RelayStarttlsTest : public testing::Test {
 protected:
  void make(upstream_tls_mode mode = upstream_tls_mode::mirror) {
    relay_options o;
    o.tls.offer_starttls = true;
    o.tls.upstream = mode;
    obs_ = std::make_unique<recording_observer>();
    fsm_ = std::make_unique<relay_fsm>(std::move(o), obs_.get());
    fsm_->on_start(tick());
    fsm_->on_upstream_connected(tick());
    take();
  }
  void TearDown() override {
    if (fsm_) check_session_end(*fsm_, *obs_, [this] { return tick(); }, [this] { return take(); });
  }
  std::uint64_t tick() { return now_ += 1000; }
  // Sends, closes and handshakes, printed; what went to the client is kept in cl_.
  std::vector<std::string> take() {
    std::vector<std::string> out;
    for (const auto& a : fsm_->take_actions()) {
      if (const auto* s = std::get_if<send_bytes>(&a); s && s->to == leg::client) cl_ += s->bytes;
      if (std::holds_alternative<send_bytes>(a) || std::holds_alternative<close_leg>(a) ||
          std::holds_alternative<start_tls>(a))
        out.push_back(to_string(a));
    }
    return out;
  }
  std::vector<std::string> client(std::string_view b) { fsm_->on_client_bytes(tick(), b); return take(); }
  std::vector<std::string> upstream(std::string_view b) { fsm_->on_upstream_bytes(tick(), b); return take(); }
  std::string end_reason() const { return obs_->ends.empty() ? "(no end)" : obs_->ends.front().reason; }

  std::unique_ptr<recording_observer> obs_;
  std::unique_ptr<relay_fsm> fsm_;
  std::uint64_t now_ = 0;
  std::string cl_;
};

// A hostile trial on the PROXY listener (its header, then EHLO, STARTTLS and MAIL in one
// write) got the banner and a close: the injection ended the session at once, EHLO's reply
// still owed. The plain listener did the same with the same write; the cause is the machine's.
TEST_F(RelayStarttlsTest, AnInjectionBehindAPipelinedEhloAnswersTheEhloThenCloses) {
  make();
  upstream(banner);
  EXPECT_THAT(client("EHLO x\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\n"), ElementsAre(to_upstream("EHLO x\r\n")))
      << "EHLO goes; nothing of STARTTLS or after it";
  EXPECT_FALSE(fsm_->finished()) << "EHLO's reply is owed";
  EXPECT_THAT(client("RCPT TO:<c@d>\r\n"), IsEmpty()) << "nothing more is read";
  const auto acts = upstream(tls_ehlo_reply);
  EXPECT_THAT(acts, ElementsAre(to_client(tls_ehlo_reply), closes(leg::client), closes(leg::upstream)));
  EXPECT_EQ(end_reason(), "starttls_injection");
  EXPECT_EQ(cl_, banner + tls_ehlo_reply) << "no reply to STARTTLS";
  const std::string up = obs_->stream(leg::upstream, direction::out);
  EXPECT_EQ(up, "EHLO x\r\n");
  EXPECT_THAT(obs_->commands, ElementsAre("EHLO x", "STARTTLS"));
  EXPECT_EQ(obs_->stream(leg::client, direction::in), "EHLO x\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
      << "everything the client sent is recorded";
  EXPECT_THAT(obs_->notes, Contains(HasSubstr("STARTTLS injection on the client leg: 17 bytes pipelined after STARTTLS")));
}

// The same write before the banner (an early talker, as every client of the PROXY listener
// that writes its commands with the header is): EHLO is answered once the banner is out.
TEST_F(RelayStarttlsTest, AnEarlyTalkersInjectionBehindEhloAnswersTheEhloThenCloses) {
  make();
  EXPECT_THAT(client("EHLO x\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\n"), IsEmpty());
  EXPECT_THAT(upstream(banner), ElementsAre(to_client(banner), to_upstream("EHLO x\r\n")));
  EXPECT_THAT(upstream(tls_ehlo_reply),
              ElementsAre(to_client(tls_ehlo_reply), closes(leg::client), closes(leg::upstream)));
  EXPECT_EQ(end_reason(), "starttls_injection");
}

// Nothing owed before it: the session ends at once, as before.
TEST_F(RelayStarttlsTest, AnInjectionWithNothingOwedEndsTheSessionAtOnce) {
  make();
  upstream(banner);
  client("EHLO x\r\n");
  upstream(tls_ehlo_reply);
  EXPECT_THAT(client("STARTTLS\r\nEHLO inj\r\n"), ElementsAre(closes(leg::client), closes(leg::upstream)));
  EXPECT_EQ(end_reason(), "starttls_injection");
}

// The upstream lost while EHLO's reply is owed: the client gets the relay's 421 for EHLO, never a
// 220, and the session ends.
TEST_F(RelayStarttlsTest, AnInjectionBehindEhloWhoseUpstreamIsLostSaysWhyAndEnds) {
  make();
  upstream(banner);
  client("EHLO x\r\nSTARTTLS\r\nNOOP\r\n");
  fsm_->on_upstream_eof(tick());
  take();
  EXPECT_THAT(cl_, HasSubstr("421 4.4.2 "));
  EXPECT_THAT(cl_, Not(HasSubstr("220 2.0.0")));
  EXPECT_TRUE(fsm_->finished());
}

// ---------------------------------------------------------------- STARTTLS after HELO
//
// HELO lists no extensions, so the relay has no EHLO reply to judge STARTTLS by; the destination
// may take it all the same (Postfix's smtpd answers 220 after HELO, and before any hello).
// f6ac0eb answered it 503 "Send EHLO first": mailtap refused what the destination would accept.
// It is put to the destination now, with or without a hello before it.

tls_summary handshake() {
  tls_summary t;
  t.version = "TLSv1.3";
  t.cipher = "TLS_AES_256_GCM_SHA384";
  t.handshake_us = 1500;
  return t;
}

class StarttlsAfterHelo : public RelayStarttlsTest {
 protected:
  void helo(upstream_tls_mode mode) {
    make(mode);
    upstream(banner);
    EXPECT_THAT(client("HELO client.example\r\n"), ElementsAre(to_upstream("HELO client.example\r\n")));
    EXPECT_THAT(upstream("250 mx.example.org\r\n"), ElementsAre(to_client("250 mx.example.org\r\n")));
  }
  std::string starts_tls(leg l) const { return to_string(action{start_tls{l}}); }
};

TEST_F(StarttlsAfterHelo, MirrorAsksTheDestinationAndSecuresBothLegs) {
  helo(upstream_tls_mode::mirror);
  EXPECT_THAT(client("STARTTLS\r\n"), ElementsAre(to_upstream("STARTTLS\r\n")));
  EXPECT_THAT(upstream("220 2.0.0 Ready to start TLS\r\n"), ElementsAre(starts_tls(leg::upstream)));
  fsm_->on_tls_ready(tick(), leg::upstream, handshake());
  EXPECT_THAT(take(), ElementsAre(to_client("220 2.0.0 Ready to start TLS\r\n"), starts_tls(leg::client)));
  fsm_->on_tls_ready(tick(), leg::client, handshake());
  EXPECT_THAT(take(), IsEmpty());
  EXPECT_THAT(client("EHLO client.example\r\n"), ElementsAre(to_upstream("EHLO client.example\r\n")));
  EXPECT_EQ(obs_->tls.size(), 2u);
  EXPECT_THAT(obs_->notes, Contains(HasSubstr("STARTTLS without an EHLO reply")));
  EXPECT_THAT(obs_->notes, Not(Contains(HasSubstr("STARTTLS refused"))));
}

// Asked with no EHLO reply to go by, the destination's refusal is its own to give: the client
// hears it as it is, in mirror and opportunistic alike, and goes on in plaintext (a trial: 454
// in mirror where the destination said 503, and in opportunistic TLS to the client alone over
// a plaintext upstream leg, from a destination that wants EHLO before STARTTLS).
TEST_F(StarttlsAfterHelo, TheDestinationsRefusalReachesTheClientAsItIs) {
  for (const auto mode : {upstream_tls_mode::mirror, upstream_tls_mode::opportunistic}) {
    SCOPED_TRACE(std::string(to_string(mode)));
    helo(mode);
    EXPECT_THAT(client("STARTTLS\r\n"), ElementsAre(to_upstream("STARTTLS\r\n")));
    EXPECT_THAT(upstream("502 5.5.1 Error: command not implemented\r\n"),
                ElementsAre(to_client("502 5.5.1 Error: command not implemented\r\n")));
    EXPECT_THAT(client("MAIL FROM:<a@example.org>\r\n"), ElementsAre(to_upstream("MAIL FROM:<a@example.org>\r\n")))
        << "the session goes on in plaintext";
    EXPECT_THAT(obs_->notes, Contains(HasSubstr("its reply goes to the client as it is")));
  }
}

// A destination that wants EHLO first: its 503 reaches the client, whose EHLO then says STARTTLS
// is offered, and the same STARTTLS asked again secures both legs.
TEST_F(StarttlsAfterHelo, ADestinationThatWantsEhloFirstIsAskedAgainAfterIt) {
  for (const auto mode : {upstream_tls_mode::mirror, upstream_tls_mode::opportunistic}) {
    SCOPED_TRACE(std::string(to_string(mode)));
    make(mode);
    upstream(banner);
    EXPECT_THAT(client("STARTTLS\r\n"), ElementsAre(to_upstream("STARTTLS\r\n")));
    EXPECT_THAT(upstream("503 5.5.1 STARTTLS command used when not advertised\r\n"),
                ElementsAre(to_client("503 5.5.1 STARTTLS command used when not advertised\r\n")));
    client("EHLO client.example\r\n");
    upstream(tls_ehlo_reply);
    EXPECT_THAT(client("STARTTLS\r\n"), ElementsAre(to_upstream("STARTTLS\r\n")));
    EXPECT_THAT(upstream("220 2.0.0 Ready to start TLS\r\n"), ElementsAre(starts_tls(leg::upstream)));
    fsm_->on_tls_ready(tick(), leg::upstream, handshake());
    EXPECT_THAT(take(), ElementsAre(to_client("220 2.0.0 Ready to start TLS\r\n"), starts_tls(leg::client)));
  }
}

TEST_F(StarttlsAfterHelo, NeverGivesTheClientTlsAlone) {
  helo(upstream_tls_mode::never);
  EXPECT_THAT(client("STARTTLS\r\n"), ElementsAre(to_client("220 2.0.0 Ready to start TLS\r\n"), starts_tls(leg::client)));
}

// required: the relay secured the upstream itself after the banner; the client's HELO goes
// inside that TLS, and its STARTTLS is the client leg's alone.
TEST_F(StarttlsAfterHelo, RequiredGivesTheClientTlsOverTheSecuredUpstream) {
  make(upstream_tls_mode::required);
  EXPECT_THAT(upstream(banner), Contains(any_upstream_send())) << "the relay's own EHLO";
  EXPECT_THAT(upstream(tls_ehlo_reply), ElementsAre(to_upstream("STARTTLS\r\n")));
  EXPECT_THAT(upstream("220 2.0.0 Ready to start TLS\r\n"), ElementsAre(starts_tls(leg::upstream)));
  fsm_->on_tls_ready(tick(), leg::upstream, handshake());
  take();
  client("HELO client.example\r\n");
  upstream("250 mx.example.org\r\n");
  EXPECT_THAT(client("STARTTLS\r\n"), ElementsAre(to_client("220 2.0.0 Ready to start TLS\r\n"), starts_tls(leg::client)));
}

// An EHLO reply, when there was one, still decides: HELO after it changes nothing.
TEST_F(StarttlsAfterHelo, AnEhloReplyWithoutStarttlsStillDecides) {
  make();
  upstream(banner);
  client("EHLO client.example\r\n");
  upstream(plain_ehlo_reply);
  client("HELO client.example\r\n");
  upstream("250 mx.example.org\r\n");
  EXPECT_THAT(client("STARTTLS\r\n"),
              ElementsAre(to_client("454 4.7.0 TLS not available: the upstream does not offer STARTTLS\r\n")));
}

// Before any hello, or after a HELO the destination refused, it is put to the destination too
// (and its refusal reaches the client as it is):
// a real Postfix answers it 220 there as well (tests/integration/test_starttls_after_helo.py),
// where f6ac0eb and b82072a still answered 503 "Send EHLO first".
TEST_F(StarttlsAfterHelo, BeforeAnyHelloOrAfterARefusedHeloItIsPutToTheDestinationToo) {
  make();
  upstream(banner);
  EXPECT_THAT(client("STARTTLS\r\n"), ElementsAre(to_upstream("STARTTLS\r\n")));
  EXPECT_THAT(upstream("220 2.0.0 Ready to start TLS\r\n"), ElementsAre(starts_tls(leg::upstream)));
  fsm_->on_tls_ready(tick(), leg::upstream, handshake());
  EXPECT_THAT(take(), ElementsAre(to_client("220 2.0.0 Ready to start TLS\r\n"), starts_tls(leg::client)));
  fsm_->on_tls_ready(tick(), leg::client, handshake());
  EXPECT_THAT(client("EHLO client.example\r\n"), ElementsAre(to_upstream("EHLO client.example\r\n")));

  make();
  upstream(banner);
  client("HELO client.example\r\n");
  upstream("550 5.7.1 No\r\n");
  EXPECT_THAT(client("STARTTLS\r\n"), ElementsAre(to_upstream("STARTTLS\r\n")));
  EXPECT_THAT(upstream("503 5.5.1 Error: send HELO/EHLO first\r\n"),
              ElementsAre(to_client("503 5.5.1 Error: send HELO/EHLO first\r\n")));
}

// A hostile trial: STARTTLS sent 300 times after TLS (or inside a transaction) had 300 answers
// of 503 and never a 421; the destination never sees these lines, so its own limit could not
// end the session either. They count toward the relay's limit of refused commands now: at
// limits::relay_hard_errors the client has 421 4.7.0 and the session closes, as Postfix's
// smtpd does at smtpd_hard_error_limit.
TEST_F(StarttlsAfterHelo, RefusedStarttlsCountsTowardTheRelaysErrorLimit) {
  make();
  upstream(banner);
  client("EHLO client.example\r\n");
  upstream(tls_ehlo_reply);
  client("MAIL FROM:<a@example.org>\r\n");
  upstream("250 2.1.0 Ok\r\n");
  for (int i = 1; i < static_cast<int>(limits::relay_hard_errors); ++i)
    ASSERT_THAT(client("STARTTLS\r\n"), ElementsAre(client_reply("503 5.5.1 STARTTLS not allowed inside a mail transaction")))
        << "refusal " << i;
  const auto last = client("STARTTLS\r\n");
  EXPECT_THAT(last, Contains(client_reply("421 4.7.0")));
  EXPECT_THAT(last, Contains(to_string(action{close_leg{leg::client}}))) << "the session closes";
  EXPECT_EQ(obs_->stream(leg::upstream, direction::out).find("STARTTLS"), std::string::npos)
      << "none went upstream";
}

}  // namespace
}  // namespace mailtap::protocol
