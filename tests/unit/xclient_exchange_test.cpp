// The XCLIENT exchange (protocol/xclient_exchange.hpp) on its own, with a recording host: it
// rides on the client's EHLO slot (XCLIENT, then the EHLO said again), once per upstream
// connection, and only when the upstream offers XCLIENT with ADDR.
#include "protocol/xclient_exchange.hpp"

#include <gtest/gtest.h>

#include "relay_playbook.hpp"

namespace mailtap::protocol {
namespace {
using playbook::recording_observer;

class fake_host : public xclient_host {
 public:
  void arm_upstream_for_head() override { ++armed; }
  int armed = 0;
};

const std::string hello = "EHLO client.example";
// Postfix 3.7's EHLO reply to a host in smtpd_authorized_xclient_hosts.
const std::string offered =
    "250-mx.example.org\r\n250-PIPELINING\r\n250-XCLIENT NAME ADDR PROTO HELO PORT LOGIN\r\n250 8BITMIME\r\n";
const std::string xclient_line = "XCLIENT ADDR=192.0.2.10 PORT=56324 NAME=[UNAVAILABLE] HELO=client.example\r\n";

reply parsed(std::string_view raw) {
  std::vector<reply> got;
  reply_parser().feed(raw, got);
  return got.at(0);
}

struct XclientExchange : testing::Test {
  relay_options options;
  recording_observer obs;
  relay_outbox out{&obs};
  reply_queue owed;
  fake_host host;
  std::unique_ptr<xclient_exchange> ex;

  void make(bool configured = true) {
    if (configured) options.xclient = xclient_identity{*parse_ip("192.0.2.10"), 56324, {}};
    ex = std::make_unique<xclient_exchange>(options, out, owed, &obs, host);
  }
  reply_slot& client_ehlo() { return owed.expect(1, phase::ehlo); }
  std::vector<std::string> actions() {
    std::vector<std::string> printed;
    for (const auto& a : out.take()) printed.push_back(to_string(a));
    return printed;
  }
};

TEST_F(XclientExchange, OfferedXclientHoldsTheEhloReplyAndTheEhloIsSaidAgain) {
  make();
  reply_slot& slot = client_ehlo();
  ASSERT_TRUE(ex->begin(2, slot, parsed(offered), hello)) << "the client's EHLO reply is held";
  EXPECT_TRUE(ex->in_flight()) << "client commands wait";
  EXPECT_EQ(slot.asked.kind, command_kind::internal_xclient) << "the upstream's next reply is the exchange's";
  EXPECT_THAT(actions(), testing::ElementsAre(playbook::to_upstream(xclient_line)));
  EXPECT_EQ(host.armed, 1);

  ex->take_reply(3, slot, parsed("220 mx.example.org ESMTP\r\n"), hello);
  EXPECT_EQ(slot.asked.kind, command_kind::xclient_hello);
  EXPECT_THAT(actions(), testing::ElementsAre(playbook::to_upstream(hello + "\r\n")));
  EXPECT_THAT(obs.notes, testing::Contains(testing::HasSubstr("upstream accepted XCLIENT")));
  EXPECT_TRUE(ex->in_flight());

  ex->hello_answered(slot);
  EXPECT_EQ(slot.asked.kind, command_kind::relayed) << "the reply to the EHLO said again is the client's";
  EXPECT_FALSE(ex->in_flight());
  EXPECT_EQ(obs.relay_commands,
            (std::vector<std::string>{xclient_line.substr(0, xclient_line.size() - 2), hello}));
  EXPECT_TRUE(owed.first_awaited() == &slot) << "no slot of its own: the client's EHLO carries the exchange";
  EXPECT_EQ(owed.size(), 1u);
}

TEST_F(XclientExchange, ARefusalStillSaysTheEhloAgain) {
  make();
  reply_slot& slot = client_ehlo();
  ASSERT_TRUE(ex->begin(2, slot, parsed(offered), hello));
  out.take();
  ex->take_reply(3, slot, parsed("550 5.7.0 Error: insufficient authorization\r\n"), hello);
  EXPECT_THAT(actions(), testing::ElementsAre(playbook::to_upstream(hello + "\r\n")));
  EXPECT_THAT(obs.notes, testing::Contains(testing::HasSubstr("upstream refused XCLIENT with 550")));
}

TEST_F(XclientExchange, OncePerConnectionAndAgainOnANewOne) {
  make();
  reply_slot& first = client_ehlo();
  ASSERT_TRUE(ex->begin(2, first, parsed(offered), hello));
  ex->take_reply(3, first, parsed("220 mx\r\n"), hello);
  ex->hello_answered(first);
  owed.erase(first);
  out.take();
  reply_slot& second = client_ehlo();
  EXPECT_FALSE(ex->begin(4, second, parsed(offered), hello)) << "a later EHLO is relayed as it is";
  EXPECT_TRUE(actions().empty());
  ex->new_connection();
  EXPECT_TRUE(ex->begin(5, second, parsed(offered), hello)) << "the fall-back's new connection hears it again";
}

TEST_F(XclientExchange, NothingWhenNotConfiguredNotOfferedOrRefusedEhlo) {
  make(false);
  reply_slot& slot = client_ehlo();
  EXPECT_FALSE(ex->begin(2, slot, parsed(offered), hello)) << "upstream_identity is not xclient";
  make(true);
  EXPECT_FALSE(ex->begin(2, slot, parsed("250-mx\r\n250 PIPELINING\r\n"), hello)) << "not offered";
  EXPECT_FALSE(ex->begin(2, slot, parsed("550 no\r\n"), hello)) << "the EHLO was refused";
  EXPECT_TRUE(ex->begin(2, slot, parsed(offered), hello)) << "none of the above used up the once per connection";
}

TEST_F(XclientExchange, NotSentWhenCommandsWerePipelinedBehindTheEhlo) {
  make();
  reply_slot& slot = client_ehlo();
  owed.expect(1, phase::mail);
  EXPECT_FALSE(ex->begin(2, slot, parsed(offered), hello)) << "its reply would be taken for the MAIL's";
  EXPECT_FALSE(ex->in_flight());
  EXPECT_TRUE(actions().empty());
  EXPECT_THAT(obs.notes, testing::Contains(testing::HasSubstr("client sent commands before the reply")));
}

TEST_F(XclientExchange, AnUpstreamWhoseXclientDoesNotTakeAddrIsNotSentIt) {
  make();
  reply_slot& slot = client_ehlo();
  EXPECT_FALSE(ex->begin(2, slot, parsed("250-mx\r\n250 XCLIENT NAME HELO\r\n"), hello));
  EXPECT_TRUE(actions().empty());
  EXPECT_THAT(obs.notes, testing::Contains(testing::HasSubstr("does not take ADDR")));
}

}  // namespace
}  // namespace mailtap::protocol
