// The PROXY protocol (haproxy's proxy-protocol.txt): the header a load balancer puts before
// a proxied connection's first byte, naming the original client and destination. Version 1
// is one text line ("PROXY TCP4 192.0.2.10 192.0.2.1 56324 25\r\n"), version 2 a binary
// block behind a 12-byte signature. This file owns reading one (incrementally, never asking
// for a byte past its end) and writing one. Pure functions, standard library only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/ip_address.hpp"

namespace mailtap::protocol::proxy {

// proxy-protocol.txt 2.1: a version 1 line is at most 107 bytes, CRLF included.
inline constexpr std::size_t v1_max_line = 107;
// "PROXY UNKNOWN\r\n" (proxy-protocol.txt 2.1): no version 1 line is shorter, and version 2's
// fixed part is longer, so this much can always be read before knowing which version it is.
inline constexpr std::size_t shortest_header = 15;
// proxy-protocol.txt 2.2: the signature, then version/command, family/transport, length.
inline constexpr std::string_view v2_signature{"\r\n\r\n\0\r\nQUIT\n", 12};
inline constexpr std::size_t v2_fixed_part = 16;
// Both versions are meant to fit the smallest TCP segment every host accepts (576 - 40 =
// 536 bytes); Postfix's haproxy_srvr.c (HAPROXY_HEADER_MAX_LEN) refuses anything longer.
inline constexpr std::size_t max_header = 536;

enum class version : unsigned char { v1, v2 };

struct socket_address {
  ip_bytes ip;
  std::uint16_t port = 0;
  bool operator==(const socket_address&) const = default;
};
// "192.0.2.10:56324", "[2001:db8::1]:25".
std::string to_string(const socket_address& a);

struct endpoints {
  socket_address source;        // the original client
  socket_address destination;   // the address it connected to
  bool operator==(const endpoints&) const = default;
};

struct header {
  version ver = version::v1;
  // Absent for v1 UNKNOWN, v2 LOCAL, and v2 families without IP addresses (UNSPEC, UNIX):
  // the receiver then uses the connection's own addresses (proxy-protocol.txt 2.1, 2.2).
  std::optional<endpoints> addresses;
  std::size_t length = 0;       // bytes the header took on the wire
};

enum class parse_status : unsigned char { complete, incomplete, invalid };

struct parse_result {
  parse_status status = parse_status::incomplete;
  header value;                 // when complete
  // When incomplete: how many more bytes may be read without reading past the header's end,
  // whatever they turn out to be (at least 1).
  std::size_t more = 0;
  // When invalid: one line naming the problem (the input is never echoed).
  std::string error;
};

// Reads a header from the start of `bytes` (the bytes received so far). Only
// `value.length` bytes belong to the header; what follows is the proxied conversation.
parse_result parse(std::string_view bytes);

// The header for `addresses` (nullopt: v1 "PROXY UNKNOWN", v2 LOCAL). When the two addresses
// are of different families, the IPv4 one is written as IPv4-mapped IPv6 (both versions
// carry one family per header). v2 carries PROXY over STREAM, no TLVs.
std::string encode(version v, const std::optional<endpoints>& addresses);

}  // namespace mailtap::protocol::proxy
