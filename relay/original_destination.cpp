// SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST: see original_destination.hpp.
#include "relay/original_destination.hpp"

#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

namespace mailtap {
namespace {

using tcp = boost::asio::ip::tcp;

std::optional<tcp::endpoint> ipv4_original(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sa, &len) != 0 || sa.sin_family != AF_INET) return std::nullopt;
  boost::asio::ip::address_v4::bytes_type bytes;
  std::memcpy(bytes.data(), &sa.sin_addr, bytes.size());
  return tcp::endpoint(boost::asio::ip::address_v4(bytes), ntohs(sa.sin_port));
}

std::optional<tcp::endpoint> ipv6_original(int fd) {
  sockaddr_in6 sa{};
  socklen_t len = sizeof sa;
  if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &sa, &len) != 0 || sa.sin6_family != AF_INET6)
    return std::nullopt;
  boost::asio::ip::address_v6::bytes_type bytes;
  std::memcpy(bytes.data(), &sa.sin6_addr, bytes.size());
  return tcp::endpoint(boost::asio::ip::address_v6(bytes, sa.sin6_scope_id), ntohs(sa.sin6_port));
}

// The same address and port, an IPv4-mapped IPv6 address counting as its IPv4 one.
bool same_endpoint(const tcp::endpoint& a, const tcp::endpoint& b) {
  auto plain = [](const boost::asio::ip::address& x) {
    if (x.is_v6() && x.to_v6().is_v4_mapped())
      return boost::asio::ip::address(boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, x.to_v6()));
    return x;
  };
  return a.port() == b.port() && plain(a.address()) == plain(b.address());
}

}  // namespace

std::optional<tcp::endpoint> original_destination(int fd, const tcp::endpoint& local) {
  // An IPv4 client on a dual-stack IPv6 listener is an IPv4 connection to conntrack.
  const bool v4 = local.address().is_v4() || local.address().to_v6().is_v4_mapped();
  auto original = v4 ? ipv4_original(fd) : ipv6_original(fd);
  // Without a redirect, conntrack reports the address the client used: mailtap's own.
  if (!original || same_endpoint(*original, local)) return std::nullopt;
  return original;
}

}  // namespace mailtap
