// Built-in sink: greeting, EHLO capabilities, a pipelined transaction answered in order,
// distinct queue ids, BDAT, sequencing errors and QUIT. Replies are checked by parsing them.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "protocol/capabilities.hpp"
#include "protocol/limits.hpp"
#include "protocol/reply.hpp"
#include "protocol/sink_fsm.hpp"

namespace mailtap::protocol {
namespace {

std::vector<reply> replies_of(const std::string& bytes) {
  reply_parser p;
  std::vector<reply> out;
  EXPECT_EQ(p.feed(bytes, out), reply_parse_status::ok) << bytes;
  EXPECT_EQ(p.pending_bytes(), 0u) << bytes;
  return out;
}

std::vector<int> codes(const std::vector<reply>& rs) {
  std::vector<int> out;
  for (const auto& r : rs) out.push_back(r.code);
  return out;
}

// What the actions sent to the client, and whether one closed it.
struct carried_out {
  std::string sent;
  bool closed = false;
  bool tls_started = false;
};
carried_out carry_out(std::vector<action> actions) {
  carried_out done;
  for (const auto& a : actions) {
    if (auto* s = std::get_if<send_bytes>(&a)) {
      EXPECT_EQ(s->to, leg::client);
      EXPECT_FALSE(done.closed) << "sent after close";
      done.sent += s->bytes;
    } else if (auto* c = std::get_if<close_leg>(&a)) {
      EXPECT_EQ(c->which, leg::client);
      done.closed = true;
    } else if (auto* t = std::get_if<start_tls>(&a)) {
      EXPECT_EQ(t->which, leg::client);
      done.tls_started = true;
    } else {
      ADD_FAILURE() << "the sink asked for " << to_string(a);
    }
  }
  return done;
}

struct sink_session {
  explicit sink_session(std::uint64_t id = 1, sink_options o = {}) : fsm(std::move(o), id) {}
  // Feeds bytes; returns the replies they produced.
  std::vector<reply> feed(std::string_view bytes) {
    fsm.on_client_bytes(bytes);
    auto done = carry_out(fsm.take_actions());
    open = open && !done.closed;
    return replies_of(done.sent);
  }
  sink_fsm fsm;
  bool open = true;
};

std::string queue_id(const reply& r) {
  const std::string marker = "queued as ";
  auto at = r.raw.find(marker);
  if (at == std::string::npos) return {};
  std::string id = r.raw.substr(at + marker.size());
  while (!id.empty() && (id.back() == '\r' || id.back() == '\n')) id.pop_back();
  return id;
}

TEST(SinkFsm, Greeting) {
  sink_fsm s({}, 1);
  s.on_start();
  auto start = carry_out(s.take_actions());
  EXPECT_EQ(start.sent, s.greeting());
  auto rs = replies_of(start.sent);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].code, 220);
  EXPECT_THAT(rs[0].raw, testing::StartsWith("220 mailtap-sink ESMTP"));

  sink_options named;
  named.hostname = "sink.test";
  sink_fsm t(named, 1);
  EXPECT_THAT(t.greeting(), testing::StartsWith("220 sink.test "));
}

TEST(SinkFsm, EhloListsCapabilities) {
  sink_session s;
  auto rs = s.feed("EHLO client.example\r\n");
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].code, 250);
  auto caps = capabilities::from_reply(rs[0]);
  EXPECT_EQ(caps.greeting(), "mailtap-sink");
  for (const char* kw : {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING", "ENHANCEDSTATUSCODES", "DSN"})
    EXPECT_TRUE(caps.has(kw)) << kw;
  EXPECT_EQ(caps.params("SIZE"), std::to_string(100ull * 1024 * 1024));
  EXPECT_FALSE(caps.has("STARTTLS"));
  EXPECT_TRUE(s.open);
}

TEST(SinkFsm, HeloAnswers250) {
  sink_session s;
  auto rs = s.feed("HELO client.example\r\n");
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].code, 250);
  EXPECT_EQ(rs[0].lines.size(), 1u);
}

TEST(SinkFsm, PipelinedTransactionInOneFeedRepliesInOrder) {
  sink_session s;
  auto rs = s.feed(
      "EHLO c\r\n"
      "MAIL FROM:<a@example.org> SIZE=100\r\n"
      "RCPT TO:<b@example.org>\r\n"
      "RCPT TO:<c@example.org> NOTIFY=NEVER\r\n"
      "DATA\r\n"
      "Subject: hi\r\n\r\nbody\r\n..stuffed\r\n.\r\n"
      "NOOP\r\n"
      "QUIT\r\n");
  EXPECT_THAT(codes(rs), testing::ElementsAre(250, 250, 250, 250, 354, 250, 250, 221));
  EXPECT_EQ(rs[5].enhanced, "2.0.0");
  EXPECT_THAT(rs[5].raw, testing::StartsWith("250 2.0.0 Ok: queued as "));
  EXPECT_FALSE(queue_id(rs[5]).empty());
  EXPECT_EQ(s.fsm.messages_accepted(), 1u);
  EXPECT_FALSE(s.open);   // QUIT
}

TEST(SinkFsm, SameTransactionSplitAtEveryByteGivesSameReplies) {
  const std::string in =
      "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n";
  std::string whole;
  {
    sink_fsm s({}, 7);
    s.on_client_bytes(in);
    whole = carry_out(s.take_actions()).sent;
  }
  for (std::size_t k = 0; k <= in.size(); ++k) {
    sink_fsm s({}, 7);
    s.on_client_bytes(std::string_view(in).substr(0, k));
    auto first = carry_out(s.take_actions());
    EXPECT_EQ(first.closed, k == in.size()) << "split at " << k;   // QUIT closes, once
    s.on_client_bytes(std::string_view(in).substr(k));
    auto second = carry_out(s.take_actions());
    EXPECT_EQ(first.sent + second.sent, whole) << "split at " << k;
    EXPECT_NE(first.closed, second.closed) << "split at " << k;
  }
}

TEST(SinkFsm, QueueIdsAreDistinct) {
  std::set<std::string> ids;
  for (std::uint64_t conn : {1u, 2u, 16u, 255u}) {
    sink_session s(conn);
    s.feed("EHLO c\r\n");
    for (int i = 0; i < 20; ++i) {
      auto rs = s.feed("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
      ASSERT_THAT(codes(rs), testing::ElementsAre(250, 250, 354));
      auto done = s.feed("x\r\n.\r\n");
      ASSERT_EQ(done.size(), 1u);
      EXPECT_THAT(done[0].raw, testing::StartsWith("250 2.0.0 Ok: queued as "));
      std::string id = queue_id(done[0]);
      EXPECT_FALSE(id.empty());
      EXPECT_TRUE(ids.insert(id).second) << "duplicate queue id " << id;
    }
    EXPECT_EQ(s.fsm.messages_accepted(), 20u);
  }
}

TEST(SinkFsm, BdatChunksAndLast) {
  sink_session s;
  s.feed("EHLO c\r\n");
  auto rs = s.feed("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5\r\nhelloBDAT 7 LAST\r\n world\n");
  ASSERT_THAT(codes(rs), testing::ElementsAre(250, 250, 250, 250));
  EXPECT_THAT(rs[3].raw, testing::StartsWith("250 2.0.0 Ok: queued as "));
  EXPECT_EQ(s.fsm.messages_accepted(), 1u);
  // The payload is exactly N octets: what follows is a command again.
  auto more = s.feed("NOOP\r\n");
  EXPECT_THAT(codes(more), testing::ElementsAre(250));
}

// RFC 1870: the sink advertised SIZE and answered 250 to any declaration and any message (a
// hostile trial queued 107 MB past a SIZE of 100 MiB).
TEST(SinkFsm, TheAdvertisedSizeIsEnforced) {
  sink_options o;
  o.max_message_size = 100;
  sink_session s(1, o);
  s.feed("EHLO c\r\n");
  auto rs = s.feed("MAIL FROM:<a@b> SIZE=101\r\nMAIL FROM:<a@b> SIZE=abc\r\nMAIL FROM:<a@b> SIZE=-1\r\n"
                   "MAIL FROM:<a@b> SIZE=99999999999999999999999\r\nMAIL FROM:<a@b> SIZE=100\r\n");
  EXPECT_THAT(codes(rs), testing::ElementsAre(552, 501, 501, 501, 250));
  EXPECT_EQ(rs[0].enhanced, "5.3.4");
  // Sent past the limit without a declaration: refused at its end, by DATA or by BDAT.
  rs = s.feed("RCPT TO:<c@d>\r\nDATA\r\n" + std::string(120, 'x') + "\r\n.\r\n");
  EXPECT_THAT(codes(rs), testing::ElementsAre(250, 354, 552));
  rs = s.feed("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 60\r\n" + std::string(60, 'y') + "BDAT 60 LAST\r\n" +
              std::string(60, 'z'));
  EXPECT_THAT(codes(rs), testing::ElementsAre(250, 250, 250, 552));
  rs = s.feed("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nsmall\r\n.\r\n");
  EXPECT_THAT(codes(rs), testing::ElementsAre(250, 250, 354, 250));
  // Exactly the limit, its CRLFs counted and the terminator not: accepted; one more: refused.
  rs = s.feed("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + std::string(98, 'x') + "\r\n.\r\n");
  EXPECT_THAT(codes(rs), testing::ElementsAre(250, 250, 354, 250));
  rs = s.feed("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + std::string(99, 'x') + "\r\n.\r\n");
  EXPECT_THAT(codes(rs), testing::ElementsAre(250, 250, 354, 552));
  EXPECT_EQ(s.fsm.messages_accepted(), 2u);
}

TEST(SinkFsm, BdatPayloadSplitAcrossFeeds) {
  sink_session s;
  s.feed("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n");
  EXPECT_TRUE(s.feed("BDAT 10 LAST\r\nQUIT").empty());   // "QUIT" is payload, not a command
  auto rs = s.feed("\r\n.\r\nX");   // 4 + 6 = 10 octets
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_THAT(rs[0].raw, testing::StartsWith("250 2.0.0 Ok: queued as "));
  EXPECT_TRUE(s.open);
}

TEST(SinkFsm, BdatZeroLast) {
  sink_session s;
  auto rs = s.feed("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 0 LAST\r\n");
  ASSERT_THAT(codes(rs), testing::ElementsAre(250, 250, 250, 250));
  EXPECT_EQ(s.fsm.messages_accepted(), 1u);
}

TEST(SinkFsm, SequencingErrors) {
  sink_session s;
  s.feed("EHLO c\r\n");
  auto rcpt_first = s.feed("RCPT TO:<b@example.org>\r\n");
  ASSERT_EQ(rcpt_first.size(), 1u);
  EXPECT_EQ(rcpt_first[0].code, 503);
  EXPECT_EQ(rcpt_first[0].enhanced, "5.5.1");

  auto data_first = s.feed("DATA\r\n");
  EXPECT_THAT(codes(data_first), testing::ElementsAre(503));

  auto nested = s.feed("MAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\n");
  EXPECT_THAT(codes(nested), testing::ElementsAre(250, 503));

  auto no_rcpt_data = s.feed("DATA\r\n");
  EXPECT_THAT(codes(no_rcpt_data), testing::ElementsAre(503));

  // BDAT without recipients: the chunk is still consumed by its count, then refused.
  auto bdat = s.feed("BDAT 4 LAST\r\nNOOPNOOP\r\n");
  EXPECT_THAT(codes(bdat), testing::ElementsAre(503, 250));

  // RSET clears the envelope.
  auto rset = s.feed("RSET\r\nRCPT TO:<b@b>\r\n");
  EXPECT_THAT(codes(rset), testing::ElementsAre(250, 503));
  EXPECT_EQ(s.fsm.messages_accepted(), 0u);
  EXPECT_TRUE(s.open);
}

TEST(SinkFsm, OtherCommands) {
  sink_session s;
  auto rs = s.feed("NOOP\r\nVRFY x\r\nHELP\r\nFROB\r\nEXPN list\r\n");
  EXPECT_THAT(codes(rs), testing::ElementsAre(250, 252, 214, 500, 502));
}

std::string repeated(std::string_view line, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += line;
  return out;
}

// Postfix's smtpd_junk_command_limit and smtpd_hard_error_limit: a NOOP flood ends with 421,
// after 121 NOOPs answered as Postfix 3.7 answers them (junk_cmds++ > 100: errors from the 102nd).
TEST(SinkFsm, TooManyJunkCommandsEndTheSessionWith421) {
  sink_session s;
  auto rs = s.feed(repeated("NOOP\r\n", 120));
  EXPECT_EQ(rs.size(), 120u);
  EXPECT_TRUE(s.open);
  auto last = s.feed("NOOP\r\nNOOP\r\n");   // the 121st is answered, then 421; the next is not read
  EXPECT_THAT(codes(last), testing::ElementsAre(250, 421));
  EXPECT_EQ(last.back().enhanced, "4.7.0");
  EXPECT_FALSE(s.open);
  EXPECT_TRUE(s.fsm.finished());
}

TEST(SinkFsm, HelpAndVrfyAreJunkToo) {
  sink_session s;
  auto rs = s.feed(repeated("HELP\r\nVRFY x\r\n", 60) + "HELP\r\n");
  ASSERT_EQ(rs.size(), 122u);
  EXPECT_EQ(rs.back().code, 421);
}

TEST(SinkFsm, TooManyErrorsEndTheSessionWith421) {
  sink_session s;
  auto rs = s.feed(repeated("FROB\r\n", limits::sink_hard_errors - 1));
  EXPECT_EQ(rs.size(), limits::sink_hard_errors - 1);
  EXPECT_TRUE(s.open);
  auto last = s.feed("MAIL FROM:<a@b> SIZE=lots\r\n");
  EXPECT_THAT(codes(last), testing::ElementsAre(501, 421));
  EXPECT_FALSE(s.open);
}

// Behind the relay, RSET and 503 come from its fault rules (an RSET in place of a message a
// rule answered, DATA after recipients a rule refused): a long session of them goes on.
TEST(SinkFsm, RsetAndOutOfSequenceCommandsAreNotCounted) {
  sink_session s;
  auto rs = s.feed("EHLO c\r\n" + repeated("MAIL FROM:<a@b>\r\nDATA\r\nRSET\r\n", 200));
  ASSERT_EQ(rs.size(), 601u);
  EXPECT_THAT(codes(std::vector<reply>(rs.end() - 3, rs.end())), testing::ElementsAre(250, 503, 250));
  EXPECT_TRUE(s.open);
}

TEST(SinkFsm, ADeliveredMessageStartsTheCountsOver) {
  sink_session s;
  s.feed("EHLO c\r\n" + repeated("FROB\r\n", limits::sink_hard_errors - 1) +
         repeated("NOOP\r\n", limits::sink_junk_commands));
  auto sent = s.feed("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
  EXPECT_THAT(codes(sent), testing::ElementsAre(250, 250, 354));
  EXPECT_THAT(codes(s.feed("x\r\n.\r\n")), testing::ElementsAre(250));
  auto again = s.feed(repeated("FROB\r\n", limits::sink_hard_errors - 1) + repeated("NOOP\r\n", limits::sink_junk_commands));
  EXPECT_EQ(again.size(), limits::sink_hard_errors - 1 + limits::sink_junk_commands);
  EXPECT_TRUE(s.open);
  EXPECT_THAT(codes(s.feed("FROB\r\n")), testing::ElementsAre(500, 421));
}

// An AUTH exchange's refusals count as errors too.
TEST(SinkFsm, RefusedAuthResponsesCountAsErrors) {
  sink_session s;
  auto rs = s.feed(repeated("AUTH PLAIN !!!\r\n", limits::sink_hard_errors));
  ASSERT_EQ(rs.size(), limits::sink_hard_errors + 1);
  EXPECT_EQ(rs.back().code, 421);
  EXPECT_FALSE(s.open);
}

TEST(SinkFsm, QuitClosesTheLegAfterItsReply) {
  sink_fsm s({}, 1);
  s.on_client_bytes("NOOP\r\n");
  auto noop = carry_out(s.take_actions());
  EXPECT_FALSE(noop.closed);
  s.on_client_bytes("QUIT\r\nNOOP\r\n");
  auto quit = carry_out(s.take_actions());
  EXPECT_TRUE(quit.closed);
  EXPECT_TRUE(s.finished());
  auto rs = replies_of(noop.sent + quit.sent);
  EXPECT_THAT(codes(rs), testing::ElementsAre(250, 221));   // nothing after QUIT is answered
  s.on_client_bytes("NOOP\r\n");
  EXPECT_TRUE(s.take_actions().empty());
}

sink_options with_starttls() {
  sink_options o;
  o.offer_starttls = true;
  return o;
}

TEST(SinkFsm, StarttlsAsksForTheHandshakeAfterItsReplyAndStartsOver) {
  sink_fsm s(with_starttls(), 1);
  s.on_client_bytes("EHLO c\r\nMAIL FROM:<a@b>\r\n");
  s.take_actions();
  s.on_client_bytes("STARTTLS\r\nNOOP\r\n");   // NOOP is pipelined past STARTTLS: discarded
  auto actions = s.take_actions();
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[0], action(send_bytes{leg::client, "220 2.0.0 Ready to start TLS\r\n"}));
  EXPECT_EQ(actions[1], action(start_tls{leg::client}));
  s.on_tls_ready();
  EXPECT_TRUE(s.take_actions().empty());
  sink_session after{1, with_starttls()};
  after.fsm = std::move(s);
  // The envelope was reset by the handshake; STARTTLS is no longer offered or accepted.
  EXPECT_THAT(codes(after.feed("RCPT TO:<c@d>\r\nSTARTTLS\r\n")), testing::ElementsAre(503, 503));
  auto ehlo = after.feed("EHLO c\r\n");
  ASSERT_EQ(ehlo.size(), 1u);
  EXPECT_FALSE(capabilities::from_reply(ehlo[0]).has("STARTTLS"));
}

TEST(SinkFsm, StarttlsWithAParameterIsASyntaxErrorAndStartsNoHandshake) {
  sink_fsm s(with_starttls(), 1);
  s.on_client_bytes("EHLO c\r\n");
  s.take_actions();
  s.on_client_bytes("STARTTLS x\r\nNOOP\r\n");
  auto actions = s.take_actions();
  ASSERT_EQ(actions.size(), 1u);   // no start_tls; the NOOP after it is answered in plaintext
  EXPECT_EQ(actions[0], action(send_bytes{leg::client, "501 5.5.4 Syntax error (no parameters allowed)\r\n"
                                                       "250 2.0.0 Ok\r\n"}));
}

TEST(SinkFsm, FailedHandshakeClosesTheLeg) {
  sink_fsm s(with_starttls(), 1);
  s.on_client_bytes("STARTTLS\r\n");
  s.take_actions();
  s.on_tls_failed();
  EXPECT_THAT(s.take_actions(), testing::ElementsAre(action(close_leg{leg::client})));
  EXPECT_TRUE(s.finished());
}

TEST(SinkFsm, BadBdatClosesAndOverlongLineCloses) {
  sink_session a;
  auto rs = a.feed("BDAT -1\r\n");
  EXPECT_THAT(codes(rs), testing::ElementsAre(501));
  EXPECT_FALSE(a.open);

  sink_session b;
  auto big = b.feed(std::string(5000, 'A'));
  EXPECT_THAT(codes(big), testing::ElementsAre(500));
  EXPECT_FALSE(b.open);
}

}  // namespace
}  // namespace mailtap::protocol
