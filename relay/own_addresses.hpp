// Whether an address is one of this machine's own: what a wildcard listener (0.0.0.0, [::])
// accepts on, besides loopback. The admin API's guard against being dialled as an upstream
// asks it (relay_context::refusal_of).
#pragma once

#include <boost/asio/ip/address.hpp>

namespace mailtap {

// True for a loopback address and for an address of one of this machine's interfaces as
// getifaddrs(3) lists them now; an IPv4-mapped IPv6 address counts as its IPv4 address.
// True as well when the interfaces cannot be listed: its callers guard, and refuse then.
bool is_own_address(const boost::asio::ip::address& a);

}  // namespace mailtap
