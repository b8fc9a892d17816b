// IP addresses as text and as bytes, standard library only (protocol/ does no I/O, so no
// inet_pton): strict dotted-quad IPv4 and RFC 4291 section 2.2 IPv6 parsing, and the
// RFC 5952 canonical IPv6 text. Used by the PROXY protocol (proxy_protocol.hpp) and XCLIENT
// (xclient.hpp). Pure functions.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace mailtap::protocol {

using ipv4_bytes = std::array<std::uint8_t, 4>;
using ipv6_bytes = std::array<std::uint8_t, 16>;
using ip_bytes = std::variant<ipv4_bytes, ipv6_bytes>;

// "192.0.2.1": four decimal parts 0-255, no leading zeros (so "010" is never read as octal).
std::optional<ipv4_bytes> parse_ipv4(std::string_view text);
// "2001:db8::1", "::ffff:192.0.2.1" (hex groups of 1-4 digits, one "::", an IPv4 tail);
// no zone ("%eth0") and no brackets.
std::optional<ipv6_bytes> parse_ipv6(std::string_view text);
// Either family, by its text.
std::optional<ip_bytes> parse_ip(std::string_view text);

std::string format_ipv4(const ipv4_bytes& a);
// RFC 5952 section 4: lower case, no leading zeros, the longest run of two or more zero
// groups (the first of equal runs) as "::"; section 5: an IPv4-mapped address as
// "::ffff:192.0.2.1".
std::string format_ipv6(const ipv6_bytes& a);
std::string format_ip(const ip_bytes& a);

// RFC 4291 2.5.5.2: ::ffff:a.b.c.d.
ipv6_bytes ipv4_mapped(const ipv4_bytes& a);
bool is_ipv4_mapped(const ipv6_bytes& a);

}  // namespace mailtap::protocol
