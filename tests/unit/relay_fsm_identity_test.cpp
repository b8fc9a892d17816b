// The relay machine telling the upstream who the client is (issue 13): the PROXY header
// (relay_options::upstream_preamble) is the first thing on every new upstream connection,
// including the plaintext fall-back's, and is recorded like any other bytes; XCLIENT
// (relay_options::xclient) is sent when the upstream's EHLO reply offers it, once, and the
// client gets the reply to its EHLO said again after it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "protocol/ip_address.hpp"
#include "protocol/relay_fsm.hpp"
#include "relay_playbook.hpp"

namespace mailtap::protocol {
namespace {

using testing::ElementsAre;
using namespace playbook;

const std::string proxy_header = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n";
const std::string tls_ehlo_reply = "250-mx.example.org\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n";

class RelayIdentityTest : public testing::Test {
 protected:
  void make(relay_options o) {
    obs_ = std::make_unique<recording_observer>();
    fsm_ = std::make_unique<relay_fsm>(std::move(o), obs_.get());
  }
  void TearDown() override {
    if (fsm_) check_session_end(*fsm_, *obs_, [this] { return tick(); }, [this] { return take(); });
  }
  std::uint64_t tick() { return now_ += 1000; }
  // The sends, printed (timers and the rest left out).
  std::vector<std::string> take() {
    std::vector<std::string> out;
    for (const auto& a : fsm_->take_actions())
      if (std::holds_alternative<send_bytes>(a) || std::holds_alternative<reconnect_upstream>(a))
        out.push_back(to_string(a));
    return out;
  }
  std::vector<std::string> client(std::string_view b) { fsm_->on_client_bytes(tick(), b); return take(); }
  std::vector<std::string> upstream(std::string_view b) { fsm_->on_upstream_bytes(tick(), b); return take(); }

  std::unique_ptr<recording_observer> obs_;
  std::unique_ptr<relay_fsm> fsm_;
  std::uint64_t now_ = 0;
};

TEST_F(RelayIdentityTest, PreambleIsTheFirstUpstreamBytes) {
  relay_options o;
  o.upstream_preamble = proxy_header;
  make(o);
  fsm_->on_start(tick());
  EXPECT_THAT(take(), testing::IsEmpty());
  fsm_->on_upstream_connected(tick());
  EXPECT_THAT(take(), ElementsAre(to_upstream(proxy_header)));
  EXPECT_THAT(upstream(banner), ElementsAre(to_client(banner)));
  EXPECT_THAT(client("EHLO client.example\r\n"), ElementsAre(to_upstream("EHLO client.example\r\n")));
  EXPECT_EQ(obs_->stream(leg::upstream, direction::out), proxy_header + "EHLO client.example\r\n");
  EXPECT_THAT(obs_->commands, ElementsAre("EHLO client.example")) << "the header is bytes, not a command";
}

TEST_F(RelayIdentityTest, NoPreambleByDefault) {
  make({});
  fsm_->on_start(tick());
  fsm_->on_upstream_connected(tick());
  EXPECT_THAT(take(), testing::IsEmpty());
}

TEST_F(RelayIdentityTest, PreambleStartsThePlaintextFallbackConnectionToo) {
  relay_options o;
  o.upstream_preamble = proxy_header;
  o.tls.offer_starttls = true;
  o.tls.upstream = upstream_tls_mode::mirror;
  make(o);
  fsm_->on_start(tick());
  fsm_->on_upstream_connected(tick());
  upstream(banner);
  client("EHLO client.example\r\n");
  upstream(tls_ehlo_reply);
  client("STARTTLS\r\n");
  upstream("220 2.0.0 Ready to start TLS\r\n");
  fsm_->on_tls_failed(tick(), leg::upstream, "handshake refused");
  EXPECT_THAT(take(), testing::Contains(to_string(action{reconnect_upstream{}})));
  const std::string before = obs_->stream(leg::upstream, direction::out);
  fsm_->on_upstream_reconnected(tick());
  EXPECT_THAT(take(), ElementsAre(to_upstream(proxy_header)));
  EXPECT_THAT(upstream("220 mx.example.org ESMTP again\r\n"), ElementsAre(to_upstream("EHLO client.example\r\n")));
  EXPECT_EQ(obs_->stream(leg::upstream, direction::out).substr(before.size()), proxy_header + "EHLO client.example\r\n");
}

// Postfix 3.7's EHLO reply to a host in smtpd_authorized_xclient_hosts.
const std::string xclient_ehlo_reply =
    "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
    "250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT\r\n250 8BITMIME\r\n";
const std::string shown_ehlo_reply = "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n";
const std::string xclient_line = "XCLIENT ADDR=192.0.2.10 PORT=56324 NAME=[UNAVAILABLE] HELO=client.example\r\n";

class RelayXclientTest : public RelayIdentityTest {
 protected:
  void greet(bool with_xclient = true) {
    relay_options o;
    if (with_xclient) o.xclient = xclient_identity{*parse_ip("192.0.2.10"), 56324, {}};
    make(o);
    fsm_->on_start(tick());
    fsm_->on_upstream_connected(tick());
    upstream(banner);
    EXPECT_THAT(client("EHLO client.example\r\n"), ElementsAre(to_upstream("EHLO client.example\r\n")));
  }
};

TEST_F(RelayXclientTest, SentWhenOfferedThenTheClientsEhloAgain) {
  greet();
  EXPECT_THAT(upstream(xclient_ehlo_reply), ElementsAre(to_upstream(xclient_line)))
      << "the client waits; the upstream hears who the client is";
  EXPECT_THAT(client("MAIL FROM:<alice@example.org>\r\n"), testing::IsEmpty()) << "held while XCLIENT runs";
  EXPECT_THAT(upstream("220 mx.example.org ESMTP\r\n"), ElementsAre(to_upstream("EHLO client.example\r\n")));
  EXPECT_THAT(upstream(xclient_ehlo_reply),
              ElementsAre(to_client(shown_ehlo_reply), to_upstream("MAIL FROM:<alice@example.org>\r\n")))
      << "the client gets the reply to the EHLO said again, without XCLIENT; its MAIL goes on";
  EXPECT_THAT(obs_->relay_commands,
              ElementsAre(xclient_line.substr(0, xclient_line.size() - 2), "EHLO client.example"));
  EXPECT_THAT(upstream("250 2.1.0 Ok\r\n"), ElementsAre(to_client("250 2.1.0 Ok\r\n")));
  // Once per connection: a later EHLO (after RSET, say) is relayed as it is.
  client("EHLO client.example\r\n");
  EXPECT_THAT(upstream(xclient_ehlo_reply), ElementsAre(to_client(shown_ehlo_reply)));
  EXPECT_EQ(obs_->relay_commands.size(), 2u);
}

TEST_F(RelayXclientTest, RefusedXclientStillAnswersTheClient) {
  greet();
  upstream(xclient_ehlo_reply);
  EXPECT_THAT(upstream("550 5.7.0 Error: insufficient authorization\r\n"),
              ElementsAre(to_upstream("EHLO client.example\r\n")));
  EXPECT_THAT(upstream(xclient_ehlo_reply), ElementsAre(to_client(shown_ehlo_reply)));
  EXPECT_THAT(obs_->notes, testing::Contains(testing::HasSubstr("upstream refused XCLIENT with 550")));
}

// A hostile trial: a 354 to XCLIENT was noted as a refusal and the relay went on, sending its
// EHLO and the client's commands into what that upstream then read as message data.
TEST_F(RelayXclientTest, AThreeHundredToXclientIsAProtocolError) {
  greet();
  upstream(xclient_ehlo_reply);
  upstream("354 go ahead\r\n");
  EXPECT_THAT(obs_->stream(leg::client, direction::out), testing::HasSubstr("421 4.4.2 "));
  EXPECT_THAT(obs_->stream(leg::upstream, direction::out), testing::EndsWith(xclient_line)) << "no EHLO after it";
  EXPECT_EQ(obs_->ends.at(0).reason, "upstream_protocol_error");
  EXPECT_EQ(obs_->ends.at(0).detail, "upstream answered the relay's XCLIENT with 354: XCLIENT is answered with 220 or a failure");
}

// A hostile trial: "220 again" and "250 extra" in one read; "250 extra" went to the client as
// the reply to its EHLO, and the real one was dropped as unsolicited.
TEST_F(RelayXclientTest, RepliesBehindTheReplyToXclientAreAProtocolError) {
  greet();
  upstream(xclient_ehlo_reply);
  upstream("220 again\r\n250 extra\r\n");
  EXPECT_THAT(obs_->stream(leg::upstream, direction::out), testing::EndsWith(xclient_line)) << "no EHLO after it";
  EXPECT_THAT(obs_->stream(leg::client, direction::out), testing::Not(testing::HasSubstr("extra")));
  EXPECT_THAT(obs_->stream(leg::client, direction::out), testing::HasSubstr("421 4.4.2 "));
  EXPECT_EQ(obs_->ends.at(0).reason, "upstream_protocol_error");
}

TEST_F(RelayXclientTest, NothingSentWhenNotOfferedOrNotConfigured) {
  greet();
  EXPECT_THAT(upstream(shown_ehlo_reply), ElementsAre(to_client(shown_ehlo_reply)));
  EXPECT_TRUE(obs_->relay_commands.empty());
  check_session_end(*fsm_, *obs_, [this] { return tick(); }, [this] { return take(); });
  greet(false);
  EXPECT_THAT(upstream(xclient_ehlo_reply), ElementsAre(to_client(shown_ehlo_reply)));
  EXPECT_TRUE(obs_->relay_commands.empty());
}

TEST_F(RelayXclientTest, NotSentWhenTheClientPipelinedPastItsEhlo) {
  greet();
  EXPECT_THAT(client("NOOP\r\n"), ElementsAre(to_upstream("NOOP\r\n")));
  EXPECT_THAT(upstream(xclient_ehlo_reply), ElementsAre(to_client(shown_ehlo_reply)));
  EXPECT_THAT(upstream("250 2.0.0 Ok\r\n"), ElementsAre(to_client("250 2.0.0 Ok\r\n")));
  EXPECT_TRUE(obs_->relay_commands.empty());
}

TEST_F(RelayXclientTest, Ipv6ClientAndAnUpstreamWithoutPort) {
  relay_options o;
  o.xclient = xclient_identity{*parse_ip("2001:db8::10"), 2525, {}};
  make(o);
  fsm_->on_start(tick());
  fsm_->on_upstream_connected(tick());
  upstream(banner);
  client("EHLO [IPv6:2001:db8::10]\r\n");
  EXPECT_THAT(upstream("250-mx\r\n250 XCLIENT NAME ADDR PROTO HELO\r\n"),
              ElementsAre(to_upstream("XCLIENT ADDR=IPV6:2001:db8::10 NAME=[UNAVAILABLE] HELO=[IPv6:2001:db8::10]\r\n")));
}

}  // namespace
}  // namespace mailtap::protocol
