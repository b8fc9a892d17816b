// Reply parser: single- and multi-line replies, RFC 3463 enhanced codes, exact raw bytes,
// malformed input and the per-line / per-reply caps. Every input is also fed split at every
// byte boundary and one byte at a time, and must yield the same replies and status.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "protocol/limits.hpp"
#include "protocol/reply.hpp"

namespace mailtap::protocol {
namespace {

struct parsed {
  std::vector<reply> replies;
  reply_parse_status status = reply_parse_status::ok;
  std::size_t pending = 0;
};

bool same_reply(const reply& a, const reply& b) {
  return a.code == b.code && a.enhanced == b.enhanced && a.lines == b.lines && a.raw == b.raw;
}

void expect_same(const parsed& a, const parsed& b, const std::string& how) {
  SCOPED_TRACE(how);
  EXPECT_EQ(a.status, b.status);
  ASSERT_EQ(a.replies.size(), b.replies.size());
  for (std::size_t i = 0; i < a.replies.size(); ++i)
    EXPECT_TRUE(same_reply(a.replies[i], b.replies[i])) << "reply " << i << ": " << a.replies[i].raw
                                                        << " vs " << b.replies[i].raw;
  if (a.status == reply_parse_status::ok) {
    EXPECT_EQ(a.pending, b.pending);
  }
}

parsed feed_pieces(const std::vector<std::string_view>& pieces) {
  parsed out;
  reply_parser p;
  for (auto piece : pieces) {
    auto s = p.feed(piece, out.replies);
    if (s != reply_parse_status::ok) {
      out.status = s;
      // A failed parser keeps refusing.
      std::vector<reply> more;
      EXPECT_EQ(p.feed("250 ok\r\n", more), s);
      EXPECT_TRUE(more.empty());
      break;
    }
  }
  out.pending = p.pending_bytes();
  return out;
}

// Parses `input` whole, then split at every boundary k into [0,k) + [k,n), then one byte at
// a time; all must agree. Returns the whole-input result.
parsed parse(std::string_view input) {
  parsed whole = feed_pieces({input});
  for (std::size_t k = 0; k <= input.size(); ++k)
    expect_same(whole, feed_pieces({input.substr(0, k), input.substr(k)}), "split at " + std::to_string(k));
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < input.size(); ++i) bytes.push_back(input.substr(i, 1));
  expect_same(whole, feed_pieces(bytes), "one byte at a time");
  return whole;
}

// ---------------------------------------------------------------- well-formed replies

TEST(Reply, SingleLine) {
  auto r = parse("250 2.0.0 Ok\r\n");
  ASSERT_EQ(r.status, reply_parse_status::ok);
  ASSERT_EQ(r.replies.size(), 1u);
  const reply& x = r.replies[0];
  EXPECT_EQ(x.code, 250);
  EXPECT_EQ(x.klass(), 2);
  EXPECT_EQ(x.enhanced, "2.0.0");
  EXPECT_THAT(x.lines, testing::ElementsAre("2.0.0 Ok"));
  EXPECT_EQ(x.text(), "Ok");
  EXPECT_EQ(x.raw, "250 2.0.0 Ok\r\n");
  EXPECT_EQ(r.pending, 0u);
}

TEST(Reply, PlainReplyHasNoEnhancedCode) {
  auto r = parse("250 Ok\r\n");
  ASSERT_EQ(r.replies.size(), 1u);
  EXPECT_EQ(r.replies[0].enhanced, "");
  EXPECT_EQ(r.replies[0].text(), "Ok");
}

TEST(Reply, CodeOnly) {
  // RFC 5321 4.2: the text after the code is optional.
  auto r = parse("250\r\n");
  ASSERT_EQ(r.status, reply_parse_status::ok);
  ASSERT_EQ(r.replies.size(), 1u);
  EXPECT_EQ(r.replies[0].code, 250);
  EXPECT_THAT(r.replies[0].lines, testing::ElementsAre(""));
  EXPECT_EQ(r.replies[0].raw, "250\r\n");
}

TEST(Reply, MultiLine) {
  const std::string in = "250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n";
  auto r = parse(in);
  ASSERT_EQ(r.status, reply_parse_status::ok);
  ASSERT_EQ(r.replies.size(), 1u);
  EXPECT_EQ(r.replies[0].code, 250);
  EXPECT_THAT(r.replies[0].lines,
              testing::ElementsAre("mx.example.org Hello", "PIPELINING", "SIZE 10240000", "8BITMIME"));
  EXPECT_EQ(r.replies[0].raw, in);
}

// A transaction's final reply keeps every line (a trial: Postfix-style "250-Ok" then
// "250 queued as ..." was recorded as "Ok"); the enhanced code each line repeats is dropped.
TEST(Reply, FullTextKeepsEveryLineWithoutTheRepeatedEnhancedCode) {
  auto r = parse("250-2.0.0 Ok\r\n250-2.0.0.9 not a code\r\n250 2.0.0 queued as 4F2\r\n");
  ASSERT_EQ(r.replies.size(), 1u);
  EXPECT_EQ(r.replies[0].text(), "Ok");
  EXPECT_EQ(r.replies[0].full_text(), "Ok\n2.0.0.9 not a code\nqueued as 4F2");
  auto plain = parse("250-first\r\n250 second\r\n");
  EXPECT_EQ(plain.replies[0].full_text(), "first\nsecond");
}

TEST(Reply, SeveralRepliesInOneChunkInOrder) {
  const std::string in =
      "220 mx ESMTP\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <x@example.org>: Recipient address rejected\r\n"
      "354 End data with <CR><LF>.<CR><LF>\r\n";
  auto r = parse(in);
  ASSERT_EQ(r.status, reply_parse_status::ok);
  ASSERT_EQ(r.replies.size(), 5u);
  EXPECT_EQ(r.replies[0].code, 220);
  EXPECT_EQ(r.replies[1].enhanced, "2.1.0");
  EXPECT_EQ(r.replies[2].enhanced, "2.1.5");
  EXPECT_EQ(r.replies[3].code, 550);
  EXPECT_EQ(r.replies[3].enhanced, "5.1.1");
  EXPECT_EQ(r.replies[3].text(), "<x@example.org>: Recipient address rejected");
  EXPECT_EQ(r.replies[4].code, 354);
  EXPECT_EQ(r.replies[4].enhanced, "");
  std::string joined;
  for (const auto& x : r.replies) joined += x.raw;
  EXPECT_EQ(joined, in);
}

TEST(Reply, RawBytesPreservedExactly) {
  // Odd spacing, trailing blanks, 8-bit text: kept byte for byte.
  const std::string in = "250-mx  two  spaces \r\n250-\xC3\xA9t\xC3\xA9\r\n250 last\t\r\n";
  auto r = parse(in);
  ASSERT_EQ(r.status, reply_parse_status::ok);
  ASSERT_EQ(r.replies.size(), 1u);
  EXPECT_EQ(r.replies[0].raw, in);
  EXPECT_THAT(r.replies[0].lines, testing::ElementsAre("mx  two  spaces ", "\xC3\xA9t\xC3\xA9", "last\t"));
}

TEST(Reply, IncompleteReplyHeldBack) {
  auto r = parse("250 ok\r\n250-first\r\n250 sec");
  ASSERT_EQ(r.status, reply_parse_status::ok);
  ASSERT_EQ(r.replies.size(), 1u);
  EXPECT_EQ(r.pending, std::string_view("250-first\r\n250 sec").size());
}

// ---------------------------------------------------------------- enhanced codes

TEST(Reply, EnhancedCodes) {
  struct row { std::string_view in; std::string_view enhanced; std::string_view text; };
  const row rows[] = {
      {"250 2.0.0 Ok\r\n", "2.0.0", "Ok"},
      {"550 5.1.1 <nobody@example.org>: User unknown\r\n", "5.1.1", "<nobody@example.org>: User unknown"},
      {"451 4.4.2 Timeout\r\n", "4.4.2", "Timeout"},
      {"250 2.0.0\r\n", "2.0.0", ""},                 // code and nothing else
      {"554 5.123.456 limits\r\n", "5.123.456", "limits"},
      {"250 Ok\r\n", "", "Ok"},
      {"250 5.0.0 wrong class\r\n", "", "5.0.0 wrong class"},   // class must match the first digit
      {"550 2.0.0 wrong class\r\n", "", "2.0.0 wrong class"},
      {"354 3.0.0 no class 3\r\n", "", "3.0.0 no class 3"},
      {"250 2.0.0Ok\r\n", "", "2.0.0Ok"},             // must be followed by SP or end
      {"250 2.0.1000 x\r\n", "", "2.0.1000 x"},       // detail is 1*3DIGIT
      {"250 2.1000.0 x\r\n", "", "2.1000.0 x"},
      {"250 2..0 x\r\n", "", "2..0 x"},
      {"250 2.0. x\r\n", "", "2.0. x"},
      {"250 2.0 x\r\n", "", "2.0 x"},
      {"250 x.0.0 x\r\n", "", "x.0.0 x"},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(std::string(r.in));
    auto p = parse(r.in);
    ASSERT_EQ(p.replies.size(), 1u);
    EXPECT_EQ(p.replies[0].enhanced, r.enhanced);
    EXPECT_EQ(p.replies[0].text(), r.text);
  }
}

TEST(Reply, EnhancedCodeTakenFromFirstLineOnly) {
  auto p = parse("250-mx.example.org\r\n250 2.0.0 Ok\r\n");
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_EQ(p.replies[0].enhanced, "");

  auto q = parse("550-5.7.1 first\r\n550 5.7.1 second\r\n");
  ASSERT_EQ(q.replies.size(), 1u);
  EXPECT_EQ(q.replies[0].enhanced, "5.7.1");
  EXPECT_EQ(q.replies[0].text(), "first");
}

TEST(Reply, ParseEnhancedCodeDirectly) {
  EXPECT_EQ(parse_enhanced_code(250, "2.0.0 Ok"), "2.0.0");
  EXPECT_EQ(parse_enhanced_code(550, "5.1.1"), "5.1.1");
  EXPECT_EQ(parse_enhanced_code(550, "4.1.1 x"), "");
  EXPECT_EQ(parse_enhanced_code(250, "Ok"), "");
  EXPECT_EQ(parse_enhanced_code(250, ""), "");
}

// ---------------------------------------------------------------- malformed input

TEST(Reply, MismatchedCodeInMultiLineRejected) {
  auto r = parse("250-first\r\n251 second\r\n");
  EXPECT_EQ(r.status, reply_parse_status::malformed);
  EXPECT_TRUE(r.replies.empty());

  // A complete reply before the bad one is still delivered.
  auto s = parse("220 hi\r\n250-a\r\n550 b\r\n");
  EXPECT_EQ(s.status, reply_parse_status::malformed);
  ASSERT_EQ(s.replies.size(), 1u);
  EXPECT_EQ(s.replies[0].code, 220);
}

TEST(Reply, MalformedLinesRejected) {
  for (std::string_view in : {
           "hello\r\n",
           "25\r\n",
           "\r\n",
           "2500 ok\r\n",          // fourth character must be SP or '-'
           "250_ok\r\n",
           "199 informational\r\n",  // SMTP codes start with 2..5
           "600 no\r\n",
           "2x0 ok\r\n",
           "25x ok\r\n",
           " 250 ok\r\n",
       }) {
    SCOPED_TRACE(std::string(in));
    auto r = parse(in);
    EXPECT_EQ(r.status, reply_parse_status::malformed);
    EXPECT_TRUE(r.replies.empty());
  }
}

// ---------------------------------------------------------------- caps

TEST(Reply, LineCapEnforced) {
  // Exactly reply_line_cap bytes including CRLF is fine.
  std::string ok = "250 " + std::string(limits::reply_line_cap - 6, 'a') + "\r\n";
  ASSERT_EQ(ok.size(), limits::reply_line_cap);
  auto a = parse(ok);
  EXPECT_EQ(a.status, reply_parse_status::ok);
  ASSERT_EQ(a.replies.size(), 1u);
  EXPECT_EQ(a.replies[0].raw, ok);

  std::string too_long = "250 " + std::string(limits::reply_line_cap - 5, 'a') + "\r\n";
  auto b = parse(too_long);
  EXPECT_EQ(b.status, reply_parse_status::line_too_long);
  EXPECT_TRUE(b.replies.empty());

  // A line that never ends is cut off at the cap, without waiting for its LF.
  auto c = parse(std::string(limits::reply_line_cap + 1, '2'));
  EXPECT_EQ(c.status, reply_parse_status::line_too_long);
}

TEST(Reply, LinesCapEnforced) {
  std::string ok;
  for (std::size_t i = 0; i + 1 < limits::reply_lines_cap; ++i) ok += "250-line\r\n";
  ok += "250 last\r\n";
  auto a = parse(ok);
  EXPECT_EQ(a.status, reply_parse_status::ok);
  ASSERT_EQ(a.replies.size(), 1u);
  EXPECT_EQ(a.replies[0].lines.size(), limits::reply_lines_cap);

  std::string too_many;
  for (std::size_t i = 0; i < limits::reply_lines_cap; ++i) too_many += "250-line\r\n";
  too_many += "250 last\r\n";
  auto b = parse(too_many);
  EXPECT_EQ(b.status, reply_parse_status::too_many_lines);
  EXPECT_TRUE(b.replies.empty());

  // The cap is per reply, not per connection.
  auto c = parse(ok + ok + ok);
  EXPECT_EQ(c.status, reply_parse_status::ok);
  EXPECT_EQ(c.replies.size(), 3u);
}

// ---------------------------------------------------------------- local replies

TEST(Reply, FormatAndMakeReply) {
  EXPECT_EQ(format_reply(250, "2.0.0", "Ok"), "250 2.0.0 Ok\r\n");
  EXPECT_EQ(format_reply(354, "", "Go ahead"), "354 Go ahead\r\n");

  reply r = make_reply(421, "4.4.2", "closing");
  EXPECT_EQ(r.code, 421);
  EXPECT_EQ(r.enhanced, "4.4.2");
  EXPECT_EQ(r.raw, "421 4.4.2 closing\r\n");
  EXPECT_EQ(r.text(), "closing");

  // What we make, we parse back the same.
  auto p = parse(r.raw);
  ASSERT_EQ(p.replies.size(), 1u);
  EXPECT_TRUE(same_reply(p.replies[0], r));
}

TEST(Reply, StatusNames) {
  EXPECT_EQ(to_string(reply_parse_status::ok), "ok");
  EXPECT_NE(to_string(reply_parse_status::malformed), to_string(reply_parse_status::line_too_long));
}

// ---------------------------------------------------------------- bare line endings (issue 14)

TEST(Reply, BareLfEndingIsAnError) {
  // Passed on byte for byte, "250 ok\n" would reach the client with a bare LF.
  auto a = parse("250 ok\n");
  EXPECT_EQ(a.status, reply_parse_status::bare_lf);
  EXPECT_TRUE(a.replies.empty());

  // A lenient client would split this into two replies: nothing of it is yielded.
  auto b = parse("250 ok\n550 5.0.0 smuggled\r\n");
  EXPECT_EQ(b.status, reply_parse_status::bare_lf);
  EXPECT_TRUE(b.replies.empty());

  // Inside a multi-line reply too, and only after the replies before it.
  auto c = parse("220 hi\r\n250-first\n250 last\r\n");
  EXPECT_EQ(c.status, reply_parse_status::bare_lf);
  ASSERT_EQ(c.replies.size(), 1u);
  EXPECT_EQ(c.replies[0].code, 220);

  EXPECT_EQ(parse("\n").status, reply_parse_status::bare_lf);
}

TEST(Reply, BareCrInsideALineIsAnError) {
  auto a = parse("250 ok\r550 5.0.0 smuggled\r\n");
  EXPECT_EQ(a.status, reply_parse_status::bare_cr);
  EXPECT_TRUE(a.replies.empty());
  EXPECT_EQ(parse("250 ok\r\r\n").status, reply_parse_status::bare_cr);
}

// RFC 5321 4.2: a NUL is not reply text. Passed on, "250 o\0k" reached the client unchanged
// (a hostile-upstream trial); a client reading C strings would see "250 o".
TEST(Reply, NulInsideALineIsAnError) {
  auto a = parse(std::string("250 o\0k\r\n", 9));
  EXPECT_EQ(a.status, reply_parse_status::nul);
  EXPECT_TRUE(a.replies.empty());
  EXPECT_EQ(parse(std::string("250-first\r\n250 \0\r\n", 18)).status, reply_parse_status::nul);
  EXPECT_EQ(to_string(reply_parse_status::nul), "NUL in reply line");
}

TEST(Reply, BareLineEndingStatusesNamed) {
  EXPECT_EQ(to_string(reply_parse_status::bare_lf), "reply line ended by a bare LF");
  EXPECT_EQ(to_string(reply_parse_status::bare_cr), "bare CR in reply line");
}

}  // namespace
}  // namespace mailtap::protocol
