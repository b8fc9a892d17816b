// Transparent interception (`transparent = true`): where a connection that netfilter
// redirected to mailtap (an nftables or iptables REDIRECT or DNAT rule) was originally headed.
// The kernel's connection tracking keeps it; SO_ORIGINAL_DST (IPv4) and IP6T_SO_ORIGINAL_DST
// (IPv6) read it back. README, "Putting mailtap into a mail path", has the nftables recipe.
#pragma once
#include <boost/asio/ip/tcp.hpp>
#include <optional>

namespace mailtap {

// The original destination of an accepted connection, or nothing when the connection was not
// redirected (it was addressed to mailtap itself, or connection tracking does not know it).
// `fd` is the accepted socket, `local` its local endpoint.
std::optional<boost::asio::ip::tcp::endpoint> original_destination(int fd, const boost::asio::ip::tcp::endpoint& local);

}  // namespace mailtap
