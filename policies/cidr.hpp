// IPv4/IPv6 addresses and CIDR blocks for the `client` matcher. A v4-mapped IPv6 client
// (::ffff:192.0.2.1, as a dual-stack listener reports it) matches IPv4 blocks.
// Pure value types, thread-safe.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::policies {

struct ip_address {
  bool v4 = false;
  std::array<std::uint8_t, 16> bytes{};   // v4 uses the first 4
  bool operator==(const ip_address&) const = default;
};

struct cidr {
  ip_address network;
  unsigned prefix = 0;   // 0-32 for IPv4, 0-128 for IPv6
  bool operator==(const cidr&) const = default;
  bool contains(const ip_address& a) const;
  std::string to_string() const;
};

// "192.0.2.0/24", "2001:db8::/32"; a bare address is a single host (/32, /128). Host bits
// set beyond the prefix are an error (like Python's ip_network), since they usually mean a typo.
// On failure returns nullopt and sets `problem`.
std::optional<cidr> parse_cidr(std::string_view text, std::string& problem);

// A client address as the relay reports it: "192.0.2.1", "::1", "fe80::1%eth0", or with a
// port: "192.0.2.1:4711", "[::1]:4711". nullopt when it is none of these.
std::optional<ip_address> parse_client_address(std::string_view text);

// "192.0.2.1", "2001:db8::1": the canonical text (state keys use it, so a client's port or
// its v4-mapped form never splits its greylist triples or quota windows).
std::string to_string(const ip_address& a);

}  // namespace mailtap::policies
