// The XCLIENT command (Postfix's XCLIENT_README): how a trusted proxy tells a Postfix smtpd
// who the real client is. The server advertises it in its EHLO reply with the attributes it
// knows ("250-XCLIENT NAME ADDR PORT PROTO HELO LOGIN"), answers a good command with a new
// 220 greeting, and the proxy then says EHLO again. This file owns building the command
// line; the relay machine decides when to send it. Pure functions.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/ip_address.hpp"

namespace mailtap::protocol {

// XCLIENT_README: "The client must not send XCLIENT commands that exceed the 512 character
// limit for SMTP commands" (RFC 5321 4.5.3.1.4), CRLF included.
inline constexpr std::size_t xclient_line_max = 512;
// XCLIENT_README: NAME and HELO values are at most 255 characters (Postfix smtpd refuses a
// longer HELO with 501).
inline constexpr std::size_t xclient_value_max = 255;

// The original client, as the upstream should see it.
struct xclient_identity {
  ip_bytes address;
  std::uint16_t port = 0;
  std::string helo;   // the client's EHLO/HELO argument; empty: not sent
};

// RFC 3461 section 4 (xtext, which XCLIENT_README names): "!" to "~" except "+" and "=" as
// they are, every other byte as "+XX" (upper-case hex).
std::string xtext_encode(std::string_view value);

// "XCLIENT ADDR=192.0.2.10 PORT=56324 NAME=[UNAVAILABLE] HELO=client.example\r\n", naming
// only the attributes in `advertised` (the parameters of the upstream's XCLIENT keyword;
// older Postfix refuses an attribute it does not know with 501). ADDR is "IPV6:..." for IPv6.
// NAME is [UNAVAILABLE] (mailtap does not look the name up; Postfix then logs
// "unknown[ADDR]", as for an address without reverse DNS). HELO is left out when it is
// empty, longer than xclient_value_max, or would push the line past xclient_line_max.
// nullopt when the upstream does not take ADDR (then XCLIENT cannot carry the identity).
std::optional<std::string> xclient_command(const xclient_identity& who, std::string_view advertised);

}  // namespace mailtap::protocol
