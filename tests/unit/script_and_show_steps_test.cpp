// captures/client_steps.hpp: the one cutter of a client's recorded bytes, which `mailtap show`
// (the lines the relay recorded and never read) and replay's script both call. Pure: bytes in,
// offsets out.
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "captures/client_steps.hpp"

using namespace mailtap::captures;
using mailtap::protocol::bare_eol_mode;
using mailtap::protocol::phase;

namespace {

// Each step's bytes, for comparing whole cuts at once.
std::vector<std::string> pieces(std::string_view bytes, const std::vector<client_step>& steps) {
  std::vector<std::string> out;
  for (const auto& st : steps) out.emplace_back(bytes.substr(st.begin, st.end - st.begin));
  return out;
}

std::vector<client_step> cut(std::string_view bytes, const std::vector<int>& codes,
                             bare_eol_mode framing = bare_eol_mode::strict) {
  return cut_client_steps(bytes, codes, framing);
}

}  // namespace

TEST(ClientSteps, CommandLinesEndAtCrlfOnlyABareLfIsPartOfTheLine) {
  const std::string in = "EHLO a\r\nMAIL FROM:<a>\nRCPT TO:<b>\r\nNOOP\r\n";
  const auto steps = cut(in, {220, 250, 250, 250});
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(pieces(in, steps), (std::vector<std::string>{"EHLO a\r\n", "MAIL FROM:<a>\nRCPT TO:<b>\r\n", "NOOP\r\n"}));
  for (const auto& st : steps) {
    EXPECT_EQ(st.kind, client_step_kind::line);
    EXPECT_EQ(st.line_end, st.end);
    EXPECT_FALSE(st.unfinished);
  }
  EXPECT_EQ(steps[0].ph, phase::ehlo);
  EXPECT_EQ(steps[1].line(in), "MAIL FROM:<a>\nRCPT TO:<b>");
  EXPECT_EQ(steps[1].ph, phase::mail);   // the relay refuses it (bare_lf); its phase is still read
  EXPECT_EQ(steps[2].line(in), "NOOP");
}

TEST(ClientSteps, ALineWithoutItsCrlfIsUnfinished) {
  const std::string in = "EHLO a\r\nQUIT\n";
  const auto steps = cut(in, {220, 250});
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_FALSE(steps[0].unfinished);
  EXPECT_TRUE(steps[1].unfinished);
  EXPECT_EQ(steps[1].line(in), "QUIT\n");
  EXPECT_EQ(steps[1].end, in.size());
}

TEST(ClientSteps, ADataMessageEndsAtCrlfDotCrlfDotStuffedLinesInside) {
  const std::string message = "Subject: x\r\n\r\n..a stuffed dot\r\n.. \r\nbare\n.\nstays inside\r\n.\r\n";
  const std::string in = "DATA\r\n" + message + "QUIT\r\n";
  const auto steps = cut(in, {220, 354, 250, 221});
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(pieces(in, steps), (std::vector<std::string>{"DATA\r\n", message, "QUIT\r\n"}));
  EXPECT_EQ(steps[0].ph, phase::data);
  EXPECT_EQ(steps[1].kind, client_step_kind::message);
  EXPECT_EQ(steps[1].ph, phase::data_end);
  EXPECT_EQ(steps[1].line_end, steps[1].begin);
  EXPECT_EQ(steps[1].line(in), "");
  EXPECT_FALSE(steps[1].unfinished);
  EXPECT_EQ(steps[2].kind, client_step_kind::line);
  EXPECT_EQ(steps[2].ph, phase::quit);
}

TEST(ClientSteps, OnlyADataAnswered354OpensAMessage) {
  // Refused (554), or no reply recorded: what follows is command lines.
  const std::string in = "DATA\r\nhello\r\n.\r\n";
  for (const std::vector<int>& codes : {std::vector<int>{220, 554}, std::vector<int>{220}}) {
    const auto steps = cut(in, codes);
    ASSERT_EQ(steps.size(), 3u);
    EXPECT_EQ(pieces(in, steps), (std::vector<std::string>{"DATA\r\n", "hello\r\n", ".\r\n"}));
    for (const auto& st : steps) EXPECT_EQ(st.kind, client_step_kind::line);
  }
}

TEST(ClientSteps, AMessageCutOffBeforeItsEndIsUnfinished) {
  for (const std::string rest : {"body\r\n", "body\r\n.", "body\r\n.\r", ""}) {
    const std::string in = "DATA\r\n" + rest;
    const auto steps = cut(in, {220, 354, 421});
    ASSERT_EQ(steps.size(), rest.empty() ? 1u : 2u) << rest;
    if (rest.empty()) continue;
    EXPECT_EQ(steps[1].kind, client_step_kind::message);
    EXPECT_TRUE(steps[1].unfinished);
    EXPECT_EQ(steps[1].begin, 6u);
    EXPECT_EQ(steps[1].end, in.size());
  }
}

TEST(ClientSteps, BdatChunksAreCutByTheirSizesWhateverTheyHold) {
  // The first chunk holds CRLF.CRLF and a command line: neither ends nor starts anything.
  const std::string chunk = "a\r\n.\r\nRSET\r\n";
  const std::string in = "BDAT " + std::to_string(chunk.size()) + "\r\n" + chunk + "BDAT 0 LAST\r\nQUIT\r\n";
  const auto steps = cut(in, {220, 250, 250, 221});
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(pieces(in, steps),
            (std::vector<std::string>{"BDAT " + std::to_string(chunk.size()) + "\r\n" + chunk, "BDAT 0 LAST\r\n", "QUIT\r\n"}));
  EXPECT_EQ(steps[0].kind, client_step_kind::bdat);
  EXPECT_EQ(steps[0].ph, phase::bdat);
  EXPECT_EQ(steps[0].bdat_size, chunk.size());
  EXPECT_FALSE(steps[0].bdat_last);
  EXPECT_EQ(in.substr(steps[0].line_end, steps[0].end - steps[0].line_end), chunk);
  EXPECT_EQ(steps[0].line(in), "BDAT 12");
  EXPECT_EQ(steps[1].kind, client_step_kind::bdat);
  EXPECT_EQ(steps[1].bdat_size, 0u);
  EXPECT_TRUE(steps[1].bdat_last);
  EXPECT_EQ(steps[1].line_end, steps[1].end);   // BDAT 0 LAST: no chunk
  EXPECT_FALSE(steps[1].unfinished);
  EXPECT_EQ(steps[2].ph, phase::quit);
}

TEST(ClientSteps, CommandsPipelinedRightAfterAChunkAreLines) {
  const std::string in = "BDAT 4 LAST\r\nabcdRSET\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\n";
  const auto steps = cut(in, {220, 250, 250, 250, 250});
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(pieces(in, steps),
            (std::vector<std::string>{"BDAT 4 LAST\r\nabcd", "RSET\r\n", "MAIL FROM:<a>\r\n", "RCPT TO:<b>\r\n"}));
  EXPECT_TRUE(steps[0].bdat_last);
  EXPECT_EQ(steps[1].ph, phase::rset);
  EXPECT_EQ(steps[2].ph, phase::mail);
  EXPECT_EQ(steps[3].ph, phase::rcpt);
}

TEST(ClientSteps, ATruncatedChunkIsUnfinished) {
  const std::string in = "BDAT 10 LAST\r\nabc";
  const auto steps = cut(in, {220});
  ASSERT_EQ(steps.size(), 1u);
  EXPECT_EQ(steps[0].kind, client_step_kind::bdat);
  EXPECT_TRUE(steps[0].unfinished);
  EXPECT_EQ(steps[0].bdat_size, 10u);
  EXPECT_EQ(steps[0].line_end, 14u);
  EXPECT_EQ(steps[0].end, in.size());
  EXPECT_EQ(steps[0].line(in), "BDAT 10 LAST");
  // Its line itself cut off.
  const std::string line_only = "NOOP\r\nBDAT 3";
  const auto short_line = cut(line_only, {220, 250});
  ASSERT_EQ(short_line.size(), 2u);
  EXPECT_EQ(short_line[1].kind, client_step_kind::bdat);
  EXPECT_TRUE(short_line[1].unfinished);
  EXPECT_EQ(short_line[1].line_end, line_only.size());
  EXPECT_EQ(short_line[1].end, line_only.size());
}

TEST(ClientSteps, ABdatWhoseSizeCannotBeReadHasNoChunk) {
  const std::string in = "BDAT abc LAST\r\nNOOP\r\n";
  const auto steps = cut(in, {220, 501, 250});
  ASSERT_EQ(steps.size(), 2u);
  EXPECT_EQ(steps[0].kind, client_step_kind::line);
  EXPECT_EQ(steps[0].ph, phase::bdat);
  EXPECT_EQ(steps[1].line(in), "NOOP");
}

// The two cutters differed here: replay's opened a message after any line of phase DATA answered
// 354, show's only after one the relay does not refuse. Kept: show's, as the relay reads it (a
// refused line is answered by the relay itself, never 354, and opens nothing): what follows such
// a line is command lines.
TEST(ClientSteps, ARefusedDataLineOpensNoMessageWhateverItsReply) {
  const std::string in = "DATA \nx\r\nhello\r\n.\r\n";   // a bare LF inside: refused
  const auto steps = cut(in, {220, 354, 250, 250});
  ASSERT_EQ(steps.size(), 3u);
  for (const auto& st : steps) EXPECT_EQ(st.kind, client_step_kind::line);
  EXPECT_EQ(steps[0].ph, phase::data);
}

// The two cutters differed here too: replay's read a line after a 334 to AUTH as an AUTH
// response, show's as a command. Kept: replay's, as the relay reads it (RFC 4954 4). In a capture
// a response is masked ('*'s), so show printed the same lines either way.
TEST(ClientSteps, ALineAfterA334ToAuthIsAnAuthResponse) {
  const std::string in = "AUTH LOGIN\r\nBDAT 4\r\n****\r\nBDAT 2 LAST\r\nhi";
  const auto steps = cut(in, {220, 334, 334, 235, 250});
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(pieces(in, steps),
            (std::vector<std::string>{"AUTH LOGIN\r\n", "BDAT 4\r\n", "****\r\n", "BDAT 2 LAST\r\nhi"}));
  EXPECT_EQ(steps[0].kind, client_step_kind::line);
  EXPECT_EQ(steps[0].ph, phase::auth);
  EXPECT_EQ(steps[1].kind, client_step_kind::auth_response);   // not a BDAT: no chunk
  EXPECT_EQ(steps[1].ph, phase::auth);
  EXPECT_EQ(steps[2].kind, client_step_kind::auth_response);
  EXPECT_EQ(steps[3].kind, client_step_kind::bdat);   // 235 ended the exchange
}

TEST(ClientSteps, TheFramingComesFromTheHeader) {
  capture_header h;
  EXPECT_EQ(message_framing(h), bare_eol_mode::strict);
  h.bare_eol = "raw";
  EXPECT_EQ(message_framing(h), bare_eol_mode::raw);
  h.bare_eol = "normalize";
  h.normalize_to = "space";
  EXPECT_EQ(message_framing(h), bare_eol_mode::normalize);
  h.normalize_to = "";   // recorded before normalize_to was: bare CR and LF were line endings
  EXPECT_EQ(message_framing(h), bare_eol_mode::normalize_line_ends);
}

// The third difference: show framed an older normalize capture's messages as today's normalize
// (only CRLF.CRLF ends one), replay as the relay then did ("\n.\n" too). Kept: replay's.
TEST(ClientSteps, AnOlderNormalizeCaptureEndsAMessageAtABareLfDot) {
  const std::string in = "DATA\r\nhi\n.\nQUIT\r\n";
  const auto older = cut(in, {220, 354, 250, 221}, bare_eol_mode::normalize_line_ends);
  ASSERT_EQ(older.size(), 3u);
  EXPECT_EQ(pieces(in, older), (std::vector<std::string>{"DATA\r\n", "hi\n.\n", "QUIT\r\n"}));
  for (auto framing : {bare_eol_mode::normalize, bare_eol_mode::strict}) {
    const auto now = cut(in, {220, 354, 250, 221}, framing);
    ASSERT_EQ(now.size(), 2u);
    EXPECT_TRUE(now[1].unfinished);
  }
}
