// PROXY protocol headers (protocol/proxy_protocol.hpp): the examples of haproxy's
// proxy-protocol.txt, both versions written and read back, incremental reading that never
// asks for a byte past the header, and malformed headers refused with a reason.
#include <gtest/gtest.h>

#include <string>

#include "protocol/proxy_protocol.hpp"

namespace mailtap::protocol::proxy {
namespace {

using namespace std::string_literals;

socket_address at(std::string_view ip, std::uint16_t port) { return {*parse_ip(ip), port}; }

parse_result complete_header(std::string_view bytes) {
  auto r = parse(bytes);
  EXPECT_EQ(r.status, parse_status::complete) << r.error;
  return r;
}

std::string error_of(std::string_view bytes) {
  auto r = parse(bytes);
  EXPECT_EQ(r.status, parse_status::invalid);
  return r.error;
}

// The v2 header of proxy-protocol.txt 2.2 for TCP over IPv4: 192.0.2.10:56324 -> 198.51.100.1:25.
const std::string v2_tcp4 = "\r\n\r\n\0\r\nQUIT\n"s + "\x21\x11\x00\x0c"s + "\xc0\x00\x02\x0a"s + "\xc6\x33\x64\x01"s +
                            "\xdc\x04\x00\x19"s;

TEST(ProxyV1, SpecificationExamples) {
  auto r = complete_header("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n");
  EXPECT_EQ(r.value.ver, version::v1);
  EXPECT_EQ(r.value.length, 47u);
  ASSERT_TRUE(r.value.addresses);
  EXPECT_EQ(r.value.addresses->source, at("192.168.0.1", 56324));
  EXPECT_EQ(r.value.addresses->destination, at("192.168.0.11", 443));

  const std::string tcp4_worst = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
  EXPECT_EQ(tcp4_worst.size(), 56u);
  EXPECT_EQ(complete_header(tcp4_worst).value.addresses->source, at("255.255.255.255", 65535));
  EXPECT_EQ(complete_header("PROXY TCP4 192.0.2.10 198.51.100.1 0 25\r\n").value.addresses->source, at("192.0.2.10", 0));

  const std::string all_f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const std::string tcp6_worst = "PROXY TCP6 " + all_f + " " + all_f + " 65535 65535\r\n";
  EXPECT_EQ(tcp6_worst.size(), 104u);
  EXPECT_EQ(complete_header(tcp6_worst).value.addresses->destination, at(all_f, 65535));

  auto unknown = complete_header("PROXY UNKNOWN\r\n");
  EXPECT_FALSE(unknown.value.addresses);
  EXPECT_EQ(unknown.value.length, 15u);
  // The longest line of all: UNKNOWN with the optional fields, which are ignored.
  const std::string unknown_worst = "PROXY UNKNOWN " + all_f + " " + all_f + " 65535 65535\r\n";
  EXPECT_EQ(unknown_worst.size(), v1_max_line);
  EXPECT_FALSE(complete_header(unknown_worst).value.addresses);
}

TEST(ProxyV1, ReadsOnlyWhatCannotPassTheHeaderEnd) {
  const std::string line = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n";
  const std::string next = "EHLO client.example\r\n";
  std::string got;
  for (int reads = 0; reads < 200; ++reads) {
    auto r = parse(got);
    if (r.status == parse_status::complete) {
      EXPECT_EQ(got, line);
      EXPECT_EQ(r.value.length, line.size());
      return;
    }
    ASSERT_EQ(r.status, parse_status::incomplete) << r.error;
    ASSERT_GE(r.more, 1u);
    const std::string stream = line + next;
    ASSERT_LE(got.size() + r.more, line.size()) << "would read past the header";
    got += stream.substr(got.size(), r.more);
  }
  FAIL() << "never completed";
}

TEST(ProxyV1, FirstReadIsTheShortestHeader) {
  EXPECT_EQ(parse("").more, shortest_header);
  EXPECT_EQ(parse("PROXY").more, shortest_header - 5);
  EXPECT_EQ(parse("PROXY UNKNOWN\r").more, 1u);
}

TEST(ProxyV1, MalformedLinesAreRefused) {
  EXPECT_EQ(error_of("EHLO client.example\r\n"), "not a PROXY protocol header");
  EXPECT_EQ(error_of("proxy TCP4"), "not a PROXY protocol header");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\n"),
            "PROXY v1 header: the line does not end with CRLF");
  EXPECT_EQ(error_of("PROXY TCP5 192.0.2.10 198.51.100.1 56324 25\r\n"),
            "PROXY v1 header: the protocol is not TCP4, TCP6 or UNKNOWN");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.10  198.51.100.1 56324 25\r\n"),
            "PROXY v1 header: expected two addresses and two ports, one space apart");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n"),
            "PROXY v1 header: expected two addresses and two ports, one space apart");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.300 198.51.100.1 56324 25\r\n"),
            "PROXY v1 header: an address is not IPv4 (dotted quad)");
  EXPECT_EQ(error_of("PROXY TCP4 2001:db8::1 198.51.100.1 56324 25\r\n"),
            "PROXY v1 header: an address is not IPv4 (dotted quad)");
  EXPECT_EQ(error_of("PROXY TCP6 192.0.2.10 2001:db8::1 56324 25\r\n"), "PROXY v1 header: an address is not IPv6");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.10 198.51.100.1 65536 25\r\n"),
            "PROXY v1 header: a port is not a number from 0 to 65535 without leading zeros");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.10 198.51.100.1 -1 25\r\n"),
            "PROXY v1 header: a port is not a number from 0 to 65535 without leading zeros");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.10 198.51.100.1 05555 25\r\n"),
            "PROXY v1 header: a port is not a number from 0 to 65535 without leading zeros");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.10 198.51.100.1 56324 025\r\n"),
            "PROXY v1 header: a port is not a number from 0 to 65535 without leading zeros");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.010 198.51.100.1 56324 25\r\n"),
            "PROXY v1 header: an address is not IPv4 (dotted quad)");
}

TEST(ProxyV1, NoCrlfWithin107BytesIsRefused) {
  const std::string oversize = "PROXY UNKNOWN " + std::string(100, 'x') + "\r\n";
  ASSERT_GT(oversize.size(), v1_max_line);
  EXPECT_EQ(error_of(oversize), "PROXY v1 header: no CRLF within 107 bytes");
  EXPECT_EQ(error_of(oversize.substr(0, v1_max_line)), "PROXY v1 header: no CRLF within 107 bytes");
  // One byte short of the cap is still waiting for its end; the read asked for never passes it.
  auto waiting = parse(oversize.substr(0, v1_max_line - 1));
  EXPECT_EQ(waiting.status, parse_status::incomplete);
  EXPECT_EQ(waiting.more, 1u);
}

TEST(ProxyV2, Tcp4Header) {
  auto r = complete_header(v2_tcp4 + "EHLO x\r\n");
  EXPECT_EQ(r.value.ver, version::v2);
  EXPECT_EQ(r.value.length, 28u);
  ASSERT_TRUE(r.value.addresses);
  EXPECT_EQ(r.value.addresses->source, at("192.0.2.10", 56324));
  EXPECT_EQ(r.value.addresses->destination, at("198.51.100.1", 25));
}

TEST(ProxyV2, IncrementalReadsStopAtTheEndOfTheHeader) {
  EXPECT_EQ(parse(v2_tcp4.substr(0, 1)).more, 15u);
  EXPECT_EQ(parse(v2_tcp4.substr(0, 15)).more, 1u);
  EXPECT_EQ(parse(v2_tcp4.substr(0, 16)).more, 12u);
  EXPECT_EQ(parse(v2_tcp4.substr(0, 27)).more, 1u);
}

TEST(ProxyV2, LocalAndUnspecifiedCarryNoAddresses) {
  auto local = complete_header("\r\n\r\n\0\r\nQUIT\n"s + "\x20\x00\x00\x00"s);
  EXPECT_FALSE(local.value.addresses);
  EXPECT_EQ(local.value.length, 16u);
  // LOCAL ignores whatever address block follows.
  EXPECT_FALSE(complete_header(v2_tcp4.substr(0, 12) + "\x20\x11\x00\x0c"s + v2_tcp4.substr(16)).value.addresses);
  EXPECT_FALSE(complete_header("\r\n\r\n\0\r\nQUIT\n"s + "\x21\x00\x00\x00"s).value.addresses);
  // AF_UNIX: 216 bytes of socket paths, no IP address to use.
  EXPECT_FALSE(complete_header("\r\n\r\n\0\r\nQUIT\n"s + "\x21\x31\x00\xd8"s + std::string(216, '\0')).value.addresses);
}

TEST(ProxyV2, TlvsAfterTheAddressesAreSkipped) {
  // PP2_TYPE_ALPN (0x01) "smtp" after the IPv4 block.
  std::string h = v2_tcp4;
  h[15] = 0x0c + 7;
  h += "\x01\x00\x04smtp"s;
  auto r = complete_header(h + "EHLO x\r\n");
  EXPECT_EQ(r.value.length, 35u);
  EXPECT_EQ(r.value.addresses->source, at("192.0.2.10", 56324));
}

TEST(ProxyV2, MalformedHeadersAreRefused) {
  std::string bad_signature = v2_tcp4;
  bad_signature[7] = 'X';
  EXPECT_EQ(error_of(bad_signature), "PROXY v2 header: bad signature");
  EXPECT_EQ(error_of("\r\n\r\nHELO"), "PROXY v2 header: bad signature");
  std::string v1_in_v2 = v2_tcp4;
  v1_in_v2[12] = 0x11;
  EXPECT_EQ(error_of(v1_in_v2), "PROXY v2 header: version 1, expected 2");
  std::string bad_command = v2_tcp4;
  bad_command[12] = 0x22;
  EXPECT_EQ(error_of(bad_command), "PROXY v2 header: unknown command 2");
  std::string bad_family = v2_tcp4;
  bad_family[13] = 0x41;
  EXPECT_EQ(error_of(bad_family), "PROXY v2 header: unknown address family or transport");
  std::string udp = v2_tcp4;
  udp[13] = 0x12;
  EXPECT_EQ(error_of(udp), "PROXY v2 header: a datagram connection, not TCP");
  std::string short_block = v2_tcp4.substr(0, 16 + 8);
  short_block[15] = 8;
  EXPECT_EQ(error_of(short_block), "PROXY v2 header: IPv4 address block shorter than 12 bytes");
  std::string short_v6 = v2_tcp4;
  short_v6[13] = 0x21;
  EXPECT_EQ(error_of(short_v6), "PROXY v2 header: IPv6 address block shorter than 36 bytes");
  // A length the header may not have: refused at once, before waiting for its bytes.
  std::string oversize = v2_tcp4.substr(0, 16);
  oversize[14] = 0x02;
  oversize[15] = 0x09;   // 16 + 521 = 537 bytes
  EXPECT_EQ(error_of(oversize), "PROXY v2 header: 537 bytes, longer than 536");
}

TEST(ProxyV2, TruncatedHeaderIsIncomplete) {
  auto r = parse(v2_tcp4.substr(0, 20));
  EXPECT_EQ(r.status, parse_status::incomplete);
  EXPECT_EQ(r.more, 8u);
}

TEST(ProxyEncode, BothVersionsReadBackAsWritten) {
  const std::vector<endpoints> cases = {
      {at("192.0.2.10", 56324), at("198.51.100.1", 25)},
      {at("2001:db8::10", 1), at("2001:db8::1", 65535)},
      {at("0.0.0.0", 0), at("255.255.255.255", 65535)},
  };
  for (const auto& e : cases)
    for (auto v : {version::v1, version::v2}) {
      const std::string h = encode(v, e);
      auto r = complete_header(h + "EHLO x\r\n");
      EXPECT_EQ(r.value.ver, v);
      EXPECT_EQ(r.value.length, h.size());
      ASSERT_TRUE(r.value.addresses);
      EXPECT_EQ(*r.value.addresses, e);
    }
  EXPECT_EQ(encode(version::v1, endpoints{at("192.0.2.10", 56324), at("198.51.100.1", 25)}),
            "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n");
  EXPECT_EQ(encode(version::v2, endpoints{at("192.0.2.10", 56324), at("198.51.100.1", 25)}), v2_tcp4);
}

TEST(ProxyEncode, UnknownAndLocalWithoutAddresses) {
  EXPECT_EQ(encode(version::v1, std::nullopt), "PROXY UNKNOWN\r\n");
  EXPECT_EQ(encode(version::v2, std::nullopt), "\r\n\r\n\0\r\nQUIT\n"s + "\x20\x00\x00\x00"s);
}

TEST(ProxyEncode, MixedFamiliesBecomeIpv6) {
  const endpoints mixed{at("192.0.2.10", 5000), at("2001:db8::1", 25)};
  EXPECT_EQ(encode(version::v1, mixed), "PROXY TCP6 ::ffff:192.0.2.10 2001:db8::1 5000 25\r\n");
  auto back = complete_header(encode(version::v2, mixed));
  EXPECT_EQ(back.value.addresses->source, at("::ffff:192.0.2.10", 5000));
}

TEST(ProxyAddress, Text) {
  EXPECT_EQ(to_string(at("192.0.2.10", 56324)), "192.0.2.10:56324");
  EXPECT_EQ(to_string(at("2001:db8::1", 25)), "[2001:db8::1]:25");
}

}  // namespace
}  // namespace mailtap::protocol::proxy
