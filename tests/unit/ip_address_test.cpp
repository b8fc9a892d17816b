// IP address text and bytes (protocol/ip_address.hpp): strict parsing, RFC 5952 output.
#include <gtest/gtest.h>

#include "protocol/ip_address.hpp"

namespace mailtap::protocol {
namespace {

std::string round_trip(std::string_view text) {
  auto ip = parse_ip(text);
  return ip ? format_ip(*ip) : "<invalid>";
}

TEST(IpAddress, Ipv4DottedQuad) {
  EXPECT_EQ(round_trip("192.0.2.10"), "192.0.2.10");
  EXPECT_EQ(round_trip("0.0.0.0"), "0.0.0.0");
  EXPECT_EQ(round_trip("255.255.255.255"), "255.255.255.255");
}

TEST(IpAddress, Ipv4RefusesWhatIsNotADottedQuad) {
  for (std::string_view bad : {"256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.4 ", "1..3.4", "1.2.3.a",
                               "", "1234.1.1.1", "-1.2.3.4", "1.2.3.4."})
    EXPECT_FALSE(parse_ipv4(bad)) << bad;
}

TEST(IpAddress, Ipv6CanonicalTextPerRfc5952) {
  EXPECT_EQ(round_trip("2001:DB8:0:0:0:0:0:1"), "2001:db8::1");
  EXPECT_EQ(round_trip("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");   // first of equal runs
  EXPECT_EQ(round_trip("2001:0db8:0000:0001:0001:0001:0001:0001"), "2001:db8:0:1:1:1:1:1");   // no single-group ::
  EXPECT_EQ(round_trip("::"), "::");
  EXPECT_EQ(round_trip("::1"), "::1");
  EXPECT_EQ(round_trip("fe80::"), "fe80::");
  EXPECT_EQ(round_trip("::ffff:192.0.2.1"), "::ffff:192.0.2.1");
  EXPECT_EQ(round_trip("::FFFF:c000:0201"), "::ffff:192.0.2.1");
  EXPECT_EQ(round_trip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
}

TEST(IpAddress, Ipv6RefusesMalformedText) {
  for (std::string_view bad : {":::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", "g::",
                               "fe80::1%eth0", "[::1]", ":1:2:3:4:5:6:7", "1:2:3:4:5:6:7:", "::1.2.3.256",
                               "1:2:3:4:5:6:7:8::", "::1.2.3.4:5"})
    EXPECT_FALSE(parse_ipv6(bad)) << bad;
}

TEST(IpAddress, Ipv4MappedIntoIpv6) {
  auto mapped = ipv4_mapped({192, 0, 2, 10});
  EXPECT_TRUE(is_ipv4_mapped(mapped));
  EXPECT_EQ(format_ipv6(mapped), "::ffff:192.0.2.10");
  EXPECT_FALSE(is_ipv4_mapped(*parse_ipv6("::1")));
}

}  // namespace
}  // namespace mailtap::protocol
