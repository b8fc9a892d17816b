// Command-line parser: verbs and phases, MAIL/RCPT paths and ESMTP parameters, BDAT framing
// arguments, and the lines the relay refuses itself (NUL, bare CR/LF, smuggling verbs).
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "protocol/command.hpp"

namespace mailtap::protocol {
namespace {

using namespace std::string_literals;

parsed_command parse(std::string_view line) { return parse_command(line); }

// ---------------------------------------------------------------- verbs and phases

TEST(Command, EveryRfc5321VerbMapsToItsPhase) {
  struct row { std::string_view line; std::string_view verb; phase ph; };
  const row rows[] = {
      {"EHLO client.example", "EHLO", phase::ehlo},
      {"HELO client.example", "HELO", phase::helo},
      {"MAIL FROM:<a@example.org>", "MAIL", phase::mail},
      {"RCPT TO:<b@example.org>", "RCPT", phase::rcpt},
      {"DATA", "DATA", phase::data},
      {"RSET", "RSET", phase::rset},
      {"VRFY postmaster", "VRFY", phase::vrfy},
      {"EXPN staff", "EXPN", phase::expn},
      {"HELP", "HELP", phase::help},
      {"HELP MAIL", "HELP", phase::help},
      {"NOOP", "NOOP", phase::noop},
      {"NOOP anything at all", "NOOP", phase::noop},
      {"QUIT", "QUIT", phase::quit},
      // ESMTP extensions the relay tracks.
      {"STARTTLS", "STARTTLS", phase::starttls},
      {"AUTH PLAIN", "AUTH", phase::auth},
      {"BDAT 10", "BDAT", phase::bdat},
      // Obsolete or unknown verbs are "other" and left to the upstream.
      {"SEND FROM:<a@b>", "SEND", phase::other},
      {"SOML FROM:<a@b>", "SOML", phase::other},
      {"SAML FROM:<a@b>", "SAML", phase::other},
      {"TURN", "TURN", phase::other},
      {"ETRN example.org", "ETRN", phase::other},
      {"FOO bar", "FOO", phase::other},
      {"", "", phase::other},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(std::string(r.line));
    auto p = parse(r.line);
    EXPECT_EQ(p.fault, command_fault::none);
    EXPECT_EQ(p.cmd.verb, r.verb);
    EXPECT_EQ(p.cmd.ph, r.ph);
  }
}

TEST(Command, VerbIsCaseInsensitiveAndArgumentKeptAsSent) {
  auto p = parse("eHlO Client.Example");
  EXPECT_EQ(p.cmd.verb, "EHLO");
  EXPECT_EQ(p.cmd.ph, phase::ehlo);
  EXPECT_EQ(p.cmd.argument, "Client.Example");

  auto q = parse("quit");
  EXPECT_EQ(q.cmd.verb, "QUIT");
  EXPECT_EQ(q.cmd.ph, phase::quit);
  EXPECT_EQ(q.cmd.argument, "");
}

// ---------------------------------------------------------------- MAIL / RCPT

TEST(Command, ATabSeparatesWordsAsPostfixReadsThem) {
  auto p = parse_command("MAIL\tFROM:<a@x>\tSIZE=10");
  EXPECT_EQ(p.cmd.verb, "MAIL");
  EXPECT_EQ(p.cmd.ph, phase::mail);
  EXPECT_EQ(p.cmd.address, "a@x");
  ASSERT_EQ(p.cmd.params.size(), 1u);
  EXPECT_EQ(p.cmd.params[0].keyword, "SIZE");
  // Not BDAT, whose line carries a chunk after it: an upstream that keeps to RFC 3030's SP
  // would take the chunk for commands (BdatRefusals).
  EXPECT_EQ(parse_command("BDAT\t10\tLAST").fault, command_fault::bad_bdat);
  EXPECT_EQ(parse_command("STARTTLS\tx").fault, command_fault::starttls_parameters);
}

TEST(Command, MailFromPathWithoutParams) {
  auto p = parse("MAIL FROM:<alice@example.org>");
  EXPECT_EQ(p.fault, command_fault::none);
  EXPECT_EQ(p.cmd.argument, "FROM:<alice@example.org>");
  ASSERT_TRUE(p.cmd.address);
  EXPECT_EQ(*p.cmd.address, "alice@example.org");
  EXPECT_TRUE(p.cmd.params.empty());
}

TEST(Command, MailFromWithSizeBodyAndSmtputf8) {
  auto p = parse("MAIL FROM:<alice@example.org> SIZE=12345 BODY=8BITMIME SMTPUTF8");
  ASSERT_TRUE(p.cmd.address);
  EXPECT_EQ(*p.cmd.address, "alice@example.org");
  ASSERT_EQ(p.cmd.params.size(), 3u);
  EXPECT_EQ(p.cmd.params[0], (esmtp_param{"SIZE", "12345"}));
  EXPECT_EQ(p.cmd.params[1], (esmtp_param{"BODY", "8BITMIME"}));
  EXPECT_EQ(p.cmd.params[2], (esmtp_param{"SMTPUTF8", std::nullopt}));
}

TEST(Command, DsnParamsOnMailAndRcpt) {
  // RFC 3461: RET= and ENVID= on MAIL, NOTIFY= and ORCPT= on RCPT.
  auto m = parse("MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ314159");
  ASSERT_EQ(m.cmd.params.size(), 2u);
  EXPECT_EQ(m.cmd.params[0], (esmtp_param{"RET", "HDRS"}));
  EXPECT_EQ(m.cmd.params[1], (esmtp_param{"ENVID", "QQ314159"}));

  auto r = parse("RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.org");
  ASSERT_TRUE(r.cmd.address);
  EXPECT_EQ(*r.cmd.address, "b@example.org");
  ASSERT_EQ(r.cmd.params.size(), 2u);
  EXPECT_EQ(r.cmd.params[0], (esmtp_param{"NOTIFY", "SUCCESS,FAILURE"}));
  EXPECT_EQ(r.cmd.params[1], (esmtp_param{"ORCPT", "rfc822;b@example.org"}));

  auto never = parse("RCPT TO:<c@example.org> NOTIFY=NEVER");
  ASSERT_EQ(never.cmd.params.size(), 1u);
  EXPECT_EQ(never.cmd.params[0], (esmtp_param{"NOTIFY", "NEVER"}));
}

TEST(Command, ParamKeywordsUpperCasedValuesKept) {
  auto p = parse("mail from:<a@b> size=10 body=8bitmime");
  ASSERT_TRUE(p.cmd.address);
  EXPECT_EQ(*p.cmd.address, "a@b");
  ASSERT_EQ(p.cmd.params.size(), 2u);
  EXPECT_EQ(p.cmd.params[0], (esmtp_param{"SIZE", "10"}));
  EXPECT_EQ(p.cmd.params[1], (esmtp_param{"BODY", "8bitmime"}));
}

TEST(Command, ExtraSpacesBetweenParamsTolerated) {
  auto p = parse("MAIL FROM:<a@b>  SIZE=10   BODY=7BIT ");
  ASSERT_EQ(p.cmd.params.size(), 2u);
  EXPECT_EQ(p.cmd.params[0], (esmtp_param{"SIZE", "10"}));
  EXPECT_EQ(p.cmd.params[1], (esmtp_param{"BODY", "7BIT"}));
}

TEST(Command, SpaceAfterColonTolerated) {
  auto m = parse("MAIL FROM: <alice@example.org> SIZE=1");
  ASSERT_TRUE(m.cmd.address);
  EXPECT_EQ(*m.cmd.address, "alice@example.org");
  ASSERT_EQ(m.cmd.params.size(), 1u);
  EXPECT_EQ(m.cmd.params[0], (esmtp_param{"SIZE", "1"}));

  auto r = parse("RCPT TO:   <bob@example.org>");
  ASSERT_TRUE(r.cmd.address);
  EXPECT_EQ(*r.cmd.address, "bob@example.org");
}

TEST(Command, NullReversePath) {
  auto p = parse("MAIL FROM:<>");
  EXPECT_EQ(p.fault, command_fault::none);
  ASSERT_TRUE(p.cmd.address);
  EXPECT_EQ(*p.cmd.address, "");
  EXPECT_TRUE(p.cmd.params.empty());

  auto q = parse("MAIL FROM:<> BODY=7BIT");
  ASSERT_TRUE(q.cmd.address);
  EXPECT_EQ(*q.cmd.address, "");
  ASSERT_EQ(q.cmd.params.size(), 1u);
  EXPECT_EQ(q.cmd.params[0], (esmtp_param{"BODY", "7BIT"}));
}

TEST(Command, QuotedLocalPartContainingAngleBracket) {
  auto p = parse(R"(MAIL FROM:<"odd>name"@example.org> SIZE=5)");
  ASSERT_TRUE(p.cmd.address);
  EXPECT_EQ(*p.cmd.address, R"("odd>name"@example.org)");
  ASSERT_EQ(p.cmd.params.size(), 1u);
  EXPECT_EQ(p.cmd.params[0], (esmtp_param{"SIZE", "5"}));

  auto r = parse(R"(RCPT TO:<"a > b"@example.org>)");
  ASSERT_TRUE(r.cmd.address);
  EXPECT_EQ(*r.cmd.address, R"("a > b"@example.org)");
}

TEST(Command, QuotedLocalPartWithQuotedPairs) {
  // RFC 5321 4.1.2: quoted-pairSMTP = "\" %d32-126. An escaped quote does not end the string...
  auto p = parse(R"(RCPT TO:<"a\">b"@example.org> NOTIFY=NEVER)");
  ASSERT_TRUE(p.cmd.address);
  EXPECT_EQ(*p.cmd.address, R"("a\">b"@example.org)");
  ASSERT_EQ(p.cmd.params.size(), 1u);
  EXPECT_EQ(p.cmd.params[0], (esmtp_param{"NOTIFY", "NEVER"}));

  // ...but an escaped backslash does not escape the quote that follows it.
  auto q = parse(R"(RCPT TO:<"a\\"@example.org> NOTIFY=NEVER)");
  ASSERT_TRUE(q.cmd.address);
  EXPECT_EQ(*q.cmd.address, R"("a\\"@example.org)");
  ASSERT_EQ(q.cmd.params.size(), 1u);
  EXPECT_EQ(q.cmd.params[0], (esmtp_param{"NOTIFY", "NEVER"}));
}

TEST(Command, PathWithoutAngleBrackets) {
  auto p = parse("MAIL FROM:alice@example.org SIZE=9");
  ASSERT_TRUE(p.cmd.address);
  EXPECT_EQ(*p.cmd.address, "alice@example.org");
  ASSERT_EQ(p.cmd.params.size(), 1u);
  EXPECT_EQ(p.cmd.params[0], (esmtp_param{"SIZE", "9"}));
}

TEST(Command, UnterminatedOrMissingPathRecordsNoAddress) {
  // Syntax is for the upstream to judge: these are forwarded, just not understood.
  auto a = parse("MAIL FROM:<alice@example.org");
  EXPECT_EQ(a.fault, command_fault::none);
  EXPECT_FALSE(a.cmd.address);

  auto b = parse("MAIL TO:<alice@example.org>");
  EXPECT_EQ(b.fault, command_fault::none);
  EXPECT_FALSE(b.cmd.address);

  auto c = parse("RCPT");
  EXPECT_EQ(c.fault, command_fault::none);
  EXPECT_EQ(c.cmd.ph, phase::rcpt);
  EXPECT_FALSE(c.cmd.address);
}

// ---------------------------------------------------------------- BDAT

TEST(Command, BdatSizeAndLast) {
  auto a = parse("BDAT 86");
  EXPECT_EQ(a.fault, command_fault::none);
  EXPECT_EQ(a.cmd.ph, phase::bdat);
  EXPECT_EQ(a.cmd.bdat_size, 86u);
  EXPECT_FALSE(a.cmd.bdat_last);

  auto b = parse("BDAT 1000 LAST");
  EXPECT_EQ(b.fault, command_fault::none);
  EXPECT_EQ(b.cmd.bdat_size, 1000u);
  EXPECT_TRUE(b.cmd.bdat_last);

  auto c = parse("bdat 0 last");
  EXPECT_EQ(c.fault, command_fault::none);
  EXPECT_EQ(c.cmd.bdat_size, 0u);
  EXPECT_TRUE(c.cmd.bdat_last);

  auto d = parse("BDAT 999999999999999999");   // 18 digits still fit
  EXPECT_EQ(d.fault, command_fault::none);
  EXPECT_EQ(d.cmd.bdat_size, 999999999999999999ull);
}

TEST(Command, BdatRefusals) {
  for (std::string_view line : {
           "BDAT",                          // no size
           "BDAT -1",                       // negative
           "BDAT +1",
           "BDAT x",                        // not a number
           "BDAT 1x",
           "BDAT 0x10",
           "BDAT 1 FOO",                    // unknown end marker
           "BDAT 1 LAST FOO",
           "BDAT  1",                       // empty size field
           "BDAT\t18\tLAST",                  // a hostile trial: tabs; RFC 3030 says SP, and a
           "BDAT 18\tLAST",                   // strict upstream reads neither as BDAT, its chunk as commands
           "BDAT\t18",
           "BDAT 18  LAST",
           "BDAT 1234567890123456789",      // 19 digits: could overflow
           "BDAT 18446744073709551616",     // 2^64
           "BDAT 99999999999999999999999",
       }) {
    SCOPED_TRACE(std::string(line));
    auto p = parse(line);
    EXPECT_EQ(p.cmd.ph, phase::bdat);
    EXPECT_EQ(p.fault, command_fault::bad_bdat);
  }
}

// ---------------------------------------------------------------- refusals

TEST(Command, NulByteFlagged) {
  auto p = parse("MAIL FROM:<a@b>\0 SIZE=1"s);
  EXPECT_EQ(p.fault, command_fault::nul_byte);
  EXPECT_EQ(p.cmd.ph, phase::mail);

  auto q = parse("NO\0OP"s);
  EXPECT_EQ(q.fault, command_fault::nul_byte);
}

TEST(Command, BareCrOrLfFlagged) {
  EXPECT_EQ(parse("NOOP\rRSET").fault, command_fault::bare_cr);
  EXPECT_EQ(parse("RCPT TO:<a@b>\r").fault, command_fault::bare_cr);
  EXPECT_EQ(parse("DATA\n.").fault, command_fault::bare_lf);
  EXPECT_EQ(parse("\rQUIT").fault, command_fault::bare_cr);
}

TEST(Command, ForbiddenVerbsFlagged) {
  for (std::string_view line : {
           "XCLIENT ADDR=10.0.0.1 NAME=trusted.example",
           "xclient addr=10.0.0.1",
           "XFORWARD ADDR=10.0.0.1",
           "PROXY TCP4 192.0.2.1 192.0.2.2 5000 25",
       }) {
    SCOPED_TRACE(std::string(line));
    EXPECT_EQ(parse(line).fault, command_fault::forbidden_verb);
  }
  for (std::string_view verb : {"XCLIENT", "XFORWARD", "PROXY"})
    EXPECT_TRUE(is_forbidden_verb(verb)) << verb;
  for (std::string_view verb : {"EHLO", "MAIL", "XCLIENTS", "GETS", "DATA", "AUTH", "GET"})
    EXPECT_FALSE(is_forbidden_verb(verb)) << verb;   // HTTP verbs are http_request: the session closes
}

TEST(Command, ForbiddenVerbNotParsedFurther) {
  auto p = parse("XCLIENT ADDR=10.0.0.1");
  EXPECT_EQ(p.cmd.verb, "XCLIENT");
  EXPECT_EQ(p.cmd.ph, phase::other);
  EXPECT_TRUE(p.cmd.params.empty());
}

TEST(Command, Helpers) {
  EXPECT_EQ(to_upper("Mail From:<a@b>"), "MAIL FROM:<A@B>");
  EXPECT_TRUE(iequals("Message-ID", "message-id"));
  EXPECT_FALSE(iequals("Message-ID", "Message-IDs"));
  EXPECT_FALSE(iequals("a", "b"));
}

// ---------------------------------------------------------------- hostile input (issue 14)

TEST(Command, BareLfAnywhereInTheLineFlagged) {
  // The relay takes a command line to its CRLF, so a bare LF can sit in the middle of one.
  auto p = parse("EHLO x\nMAIL FROM:<y@x>");
  EXPECT_EQ(p.fault, command_fault::bare_lf);
  EXPECT_EQ(parse("EHLO x\n").fault, command_fault::bare_lf);
  EXPECT_EQ(parse("\nQUIT").fault, command_fault::bare_lf);
  // Whichever comes first names the fault.
  EXPECT_EQ(parse("NOOP\r\nRSET").fault, command_fault::bare_cr);
  EXPECT_EQ(parse("NOOP\n\rRSET").fault, command_fault::bare_lf);
}

TEST(Command, HttpRequestLinesFlagged) {
  for (std::string_view line : {
           "GET / HTTP/1.1",
           "POST /submit HTTP/1.1",
           "PUT /x HTTP/1.1",
           "HEAD / HTTP/1.0",
           "CONNECT mail.example:25 HTTP/1.1",
           "OPTIONS * HTTP/1.1",
           "DELETE /x HTTP/1.1",
           "PATCH /x HTTP/1.1",
           "TRACE / HTTP/1.1",
           "get /",
           "GET",
       }) {
    SCOPED_TRACE(std::string(line));
    EXPECT_EQ(parse(line).fault, command_fault::http_request);
  }
  for (std::string_view verb : {"GET", "POST", "PUT", "HEAD", "CONNECT", "OPTIONS", "DELETE", "PATCH", "TRACE"})
    EXPECT_TRUE(is_http_verb(verb)) << verb;
  for (std::string_view verb : {"GETS", "POSTS", "EHLO", "HELP", "XCLIENT", "get"})
    EXPECT_FALSE(is_http_verb(verb)) << verb;   // upper-cased verbs only, like is_forbidden_verb
}

TEST(Command, HeaderShapedLinesFlagged) {
  for (std::string_view line : {
           "Host: mailtap.example:25",
           "Content-Type: application/x-www-form-urlencoded",
           "User-Agent: Mozilla/5.0",
           "Content-Length: 42",
           "X-Anything:no-space",
           "Label:",
           "FROM:<a@b>",
       }) {
    SCOPED_TRACE(std::string(line));
    EXPECT_TRUE(looks_like_header(line));
    EXPECT_EQ(parse(line).fault, command_fault::http_request);
  }
  // SMTP commands put a space (or the line's end) after the verb, before any ':'.
  for (std::string_view line : {
           "MAIL FROM:<a@b>",
           "RCPT TO:<a@b> ORCPT=rfc822;a@b",
           "mail from: <a@b>",
           "EHLO [IPv6:2001:db8::1]",
           "AUTH PLAIN dGVzdA==",
           "NOOP",
           ":",
           ": value",
           " Host: x",
           "\xC3\xA9t\xC3\xA9: x",
           "",
       }) {
    SCOPED_TRACE(std::string(line));
    EXPECT_FALSE(looks_like_header(line));
    EXPECT_NE(parse(line).fault, command_fault::http_request);
  }
}

TEST(Command, StarttlsWithAParameterFlagged) {
  auto p = parse("STARTTLS x");
  EXPECT_EQ(p.cmd.ph, phase::starttls);
  EXPECT_EQ(p.fault, command_fault::starttls_parameters);
  EXPECT_EQ(parse("starttls please now").fault, command_fault::starttls_parameters);
  EXPECT_EQ(parse("STARTTLS").fault, command_fault::none);
  EXPECT_EQ(parse("STARTTLS ").fault, command_fault::none);   // a trailing space is not a parameter
}

}  // namespace
}  // namespace mailtap::protocol
