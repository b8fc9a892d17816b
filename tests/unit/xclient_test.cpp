// The XCLIENT command line (protocol/xclient.hpp): xtext values, only the attributes the
// upstream advertised, IPV6: addresses, the HELO left out rather than a line too long.
#include <gtest/gtest.h>

#include "protocol/xclient.hpp"

namespace mailtap::protocol {
namespace {

// Postfix 3.x's EHLO keyword parameters for an authorized client.
constexpr std::string_view postfix_attributes = "NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT";

xclient_identity client(std::string_view ip, std::uint16_t port, std::string helo) {
  return {*parse_ip(ip), port, std::move(helo)};
}

TEST(Xtext, PrintableAsIsPlusEqualsAndTheRestHexEncoded) {
  EXPECT_EQ(xtext_encode("client.example"), "client.example");
  EXPECT_EQ(xtext_encode("[UNAVAILABLE]"), "[UNAVAILABLE]");
  EXPECT_EQ(xtext_encode("a+b=c"), "a+2Bb+3Dc");
  EXPECT_EQ(xtext_encode("sp ace\x7f\xff"), "sp+20ace+7F+FF");
  EXPECT_EQ(xtext_encode(std::string_view("\0\r\n", 3)), "+00+0D+0A");
}

TEST(Xclient, AllFourAttributesForAPostfixUpstream) {
  EXPECT_EQ(xclient_command(client("192.0.2.10", 56324, "client.example"), postfix_attributes),
            "XCLIENT ADDR=192.0.2.10 PORT=56324 NAME=[UNAVAILABLE] HELO=client.example\r\n");
}

TEST(Xclient, Ipv6AddressCarriesThePrefixPostfixExpects) {
  EXPECT_EQ(xclient_command(client("2001:db8::10", 25, "c"), "ADDR PORT"), "XCLIENT ADDR=IPV6:2001:db8::10 PORT=25\r\n");
}

TEST(Xclient, OnlyAdvertisedAttributesAreSent) {
  // Postfix 2.1 knew NAME ADDR PROTO HELO: a PORT it does not know would get 501.
  EXPECT_EQ(xclient_command(client("192.0.2.10", 1, "h"), "name addr proto helo"),
            "XCLIENT ADDR=192.0.2.10 NAME=[UNAVAILABLE] HELO=h\r\n");
  EXPECT_FALSE(xclient_command(client("192.0.2.10", 1, "h"), "NAME HELO"));
  EXPECT_FALSE(xclient_command(client("192.0.2.10", 1, "h"), ""));
  EXPECT_FALSE(xclient_command(client("192.0.2.10", 1, "h"), "ADDRESS"));
}

TEST(Xclient, HeloIsEncodedAndLeftOutWhenEmptyOrTooLong) {
  EXPECT_EQ(xclient_command(client("192.0.2.10", 1, "a b+c"), "ADDR HELO"), "XCLIENT ADDR=192.0.2.10 HELO=a+20b+2Bc\r\n");
  EXPECT_EQ(xclient_command(client("192.0.2.10", 1, ""), "ADDR HELO"), "XCLIENT ADDR=192.0.2.10\r\n");
  EXPECT_EQ(xclient_command(client("192.0.2.10", 1, std::string(256, 'h')), "ADDR HELO"), "XCLIENT ADDR=192.0.2.10\r\n");
  // 255 characters that each take three as xtext: past 512 bytes, so left out.
  auto line = xclient_command(client("192.0.2.10", 1, std::string(255, ' ')), postfix_attributes);
  ASSERT_TRUE(line);
  EXPECT_EQ(*line, "XCLIENT ADDR=192.0.2.10 PORT=1 NAME=[UNAVAILABLE]\r\n");
  auto longest = xclient_command(client("192.0.2.10", 1, std::string(255, 'h')), postfix_attributes);
  ASSERT_TRUE(longest);
  EXPECT_LE(longest->size(), xclient_line_max);
  EXPECT_NE(longest->find("HELO="), std::string::npos);
}

}  // namespace
}  // namespace mailtap::protocol
