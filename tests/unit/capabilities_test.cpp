// EHLO capabilities: parsed from a real 250 reply, queried and edited case-insensitively,
// and written back as a multi-line reply that parses to the same list.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "protocol/capabilities.hpp"
#include "protocol/reply.hpp"

namespace mailtap::protocol {
namespace {

reply parse_one(const std::string& bytes) {
  reply_parser p;
  std::vector<reply> out;
  EXPECT_EQ(p.feed(bytes, out), reply_parse_status::ok);
  EXPECT_EQ(out.size(), 1u);
  EXPECT_EQ(p.pending_bytes(), 0u);
  return out.empty() ? reply{} : out.front();
}

std::vector<std::string> keywords(const capabilities& c) {
  std::vector<std::string> out;
  for (const auto& x : c.list()) out.push_back(x.keyword);
  return out;
}

const std::string postfix_ehlo =
    "250-mx.example.org\r\n"
    "250-PIPELINING\r\n"
    "250-SIZE 10240000\r\n"
    "250-VRFY\r\n"
    "250-ETRN\r\n"
    "250-STARTTLS\r\n"
    "250-AUTH PLAIN LOGIN\r\n"
    "250-ENHANCEDSTATUSCODES\r\n"
    "250-8BITMIME\r\n"
    "250-DSN\r\n"
    "250-SMTPUTF8\r\n"
    "250 CHUNKING\r\n";

TEST(Capabilities, ParseEhloReply) {
  auto caps = capabilities::from_reply(parse_one(postfix_ehlo));
  EXPECT_EQ(caps.greeting(), "mx.example.org");
  EXPECT_THAT(keywords(caps), testing::ElementsAre("PIPELINING", "SIZE", "VRFY", "ETRN", "STARTTLS", "AUTH",
                                                    "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8",
                                                    "CHUNKING"));
  EXPECT_EQ(caps.list()[1].params, "10240000");
  EXPECT_EQ(caps.list()[5].params, "PLAIN LOGIN");
  EXPECT_EQ(caps.list()[0].params, "");
}

TEST(Capabilities, HasAndParamsAreCaseInsensitive) {
  auto caps = capabilities::from_reply(parse_one(postfix_ehlo));
  EXPECT_TRUE(caps.has("PIPELINING"));
  EXPECT_TRUE(caps.has("pipelining"));
  EXPECT_TRUE(caps.has("StartTLS"));
  EXPECT_FALSE(caps.has("XCLIENT"));
  EXPECT_FALSE(caps.has("PIPE"));
  EXPECT_EQ(caps.params("size"), "10240000");
  EXPECT_EQ(caps.params("AUTH"), "PLAIN LOGIN");
  EXPECT_EQ(caps.params("CHUNKING"), "");   // present without parameters
  EXPECT_EQ(caps.params("XFORWARD"), std::nullopt);
}

TEST(Capabilities, Remove) {
  auto caps = capabilities::from_reply(parse_one(postfix_ehlo));
  EXPECT_TRUE(caps.remove("starttls"));
  EXPECT_FALSE(caps.has("STARTTLS"));
  EXPECT_FALSE(caps.remove("STARTTLS"));   // already gone
  EXPECT_FALSE(caps.remove("XCLIENT"));    // never there
  EXPECT_EQ(caps.list().size(), 10u);
  // Order of the others is kept.
  EXPECT_THAT(keywords(caps), testing::ElementsAre("PIPELINING", "SIZE", "VRFY", "ETRN", "AUTH",
                                                    "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8",
                                                    "CHUNKING"));
}

TEST(Capabilities, SetReplacesOrAppends) {
  auto caps = capabilities::from_reply(parse_one(postfix_ehlo));
  caps.set("size", "1000");
  EXPECT_EQ(caps.params("SIZE"), "1000");
  EXPECT_EQ(caps.list()[1].keyword, "SIZE");   // replaced in place, spelling kept
  EXPECT_EQ(caps.list().size(), 11u);

  caps.set("XTEST", "a b");
  EXPECT_EQ(caps.list().size(), 12u);
  EXPECT_EQ(caps.list().back().keyword, "XTEST");
  EXPECT_EQ(caps.params("xtest"), "a b");
}

TEST(Capabilities, RoundTripIsByteForByte) {
  auto caps = capabilities::from_reply(parse_one(postfix_ehlo));
  EXPECT_EQ(caps.to_reply_bytes(), postfix_ehlo);
}

TEST(Capabilities, EditedListSerialisesAsValidReply) {
  auto caps = capabilities::from_reply(parse_one(postfix_ehlo));
  caps.remove("CHUNKING");   // the last line: the new last one must use "250 "
  caps.remove("STARTTLS");
  caps.set("SIZE", "5000");
  std::string bytes = caps.to_reply_bytes();
  EXPECT_EQ(bytes,
            "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 5000\r\n250-VRFY\r\n250-ETRN\r\n"
            "250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
            "250 SMTPUTF8\r\n");
  auto again = capabilities::from_reply(parse_one(bytes));
  EXPECT_EQ(again.greeting(), caps.greeting());
  EXPECT_EQ(keywords(again), keywords(caps));
  EXPECT_EQ(again.to_reply_bytes(), bytes);
}

TEST(Capabilities, GreetingOnly) {
  const std::string single = "250 mx.example.org says hello\r\n";
  auto caps = capabilities::from_reply(parse_one(single));
  EXPECT_EQ(caps.greeting(), "mx.example.org says hello");
  EXPECT_TRUE(caps.list().empty());
  EXPECT_EQ(caps.to_reply_bytes(), single);

  // Removing every extension leaves a single-line reply.
  auto two = capabilities::from_reply(parse_one("250-mx\r\n250 STARTTLS\r\n"));
  EXPECT_TRUE(two.remove("STARTTLS"));
  EXPECT_EQ(two.to_reply_bytes(), "250 mx\r\n");
}

TEST(Capabilities, EmptyReply) {
  auto caps = capabilities::from_reply(reply{});
  EXPECT_EQ(caps.greeting(), "");
  EXPECT_TRUE(caps.list().empty());
  EXPECT_FALSE(caps.has("SIZE"));
}

}  // namespace
}  // namespace mailtap::protocol
