// Whether an address is this machine's own (own_addresses.hpp), from getifaddrs(3).
#include "relay/own_addresses.hpp"

#include <ifaddrs.h>
#include <netinet/in.h>

#include <cstring>

namespace mailtap {

namespace {

bool interface_has(const ifaddrs& i, const boost::asio::ip::address& a) {
  if (i.ifa_addr == nullptr) return false;
  if (a.is_v4() && i.ifa_addr->sa_family == AF_INET) {
    const auto bytes = a.to_v4().to_bytes();
    const auto& in = reinterpret_cast<const sockaddr_in*>(i.ifa_addr)->sin_addr;
    return std::memcmp(&in, bytes.data(), bytes.size()) == 0;
  }
  if (a.is_v6() && i.ifa_addr->sa_family == AF_INET6) {
    const auto bytes = a.to_v6().to_bytes();
    const auto& in6 = reinterpret_cast<const sockaddr_in6*>(i.ifa_addr)->sin6_addr;
    return std::memcmp(&in6, bytes.data(), bytes.size()) == 0;
  }
  return false;
}

}  // namespace

bool is_own_address(const boost::asio::ip::address& address) {
  auto a = address;
  if (a.is_v6() && a.to_v6().is_v4_mapped()) a = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6());
  if (a.is_loopback()) return true;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return true;   // cannot tell: the guard refuses rather than dial it
  bool found = false;
  for (const ifaddrs* i = list; i != nullptr && !found; i = i->ifa_next) found = interface_has(*i, a);
  ::freeifaddrs(list);
  return found;
}

}  // namespace mailtap
