// relay/own_addresses and relay_context::refusal_of: the admin API on a wildcard
// address is never dialled as an upstream by any of this machine's own addresses, and an
// address that is not the machine's own on that port is dialled as usual.
#include <gtest/gtest.h>

#include <net/if.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <boost/asio/ip/tcp.hpp>

#include "relay/config.hpp"
#include "relay/metrics.hpp"
#include "relay/own_addresses.hpp"
#include "relay/session.hpp"

namespace mailtap {
namespace {

using boost::asio::ip::make_address;
using boost::asio::ip::tcp;

// An IPv4 address of one of this machine's interfaces, listed without getifaddrs (the
// SIOCGIFCONF ioctl, netdevice(7)): the first that is not loopback, or 127.0.0.1 on a machine
// that has no other.
boost::asio::ip::address interface_address() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  std::array<ifreq, 64> entries{};
  ifconf conf{};
  conf.ifc_len = static_cast<int>(sizeof entries);
  conf.ifc_req = entries.data();
  boost::asio::ip::address found = make_address("127.0.0.1");
  if (fd >= 0 && ::ioctl(fd, SIOCGIFCONF, &conf) == 0) {
    for (std::size_t i = 0; i < conf.ifc_len / sizeof(ifreq); ++i) {
      const auto& in = reinterpret_cast<const sockaddr_in&>(entries[i].ifr_addr);
      const boost::asio::ip::address_v4 a(ntohl(in.sin_addr.s_addr));
      if (in.sin_family == AF_INET && !a.is_loopback()) {
        found = a;
        break;
      }
    }
  }
  if (fd >= 0) ::close(fd);
  return found;
}

TEST(OwnAddresses, LoopbackInEitherFamilyIsOwn) {
  EXPECT_TRUE(is_own_address(make_address("127.0.0.1")));
  EXPECT_TRUE(is_own_address(make_address("127.4.5.6")));
  EXPECT_TRUE(is_own_address(make_address("::1")));
  EXPECT_TRUE(is_own_address(make_address("::ffff:127.0.0.1")));
}

TEST(OwnAddresses, AnInterfaceAddressIsOwnAndAForeignOneIsNot) {
  // TEST-NET-3 (RFC 5737): no machine this runs on has it.
  EXPECT_FALSE(is_own_address(make_address("203.0.113.77")));
  EXPECT_FALSE(is_own_address(make_address("2001:db8::77")));
  const auto own = interface_address();
  EXPECT_TRUE(is_own_address(own)) << own;
  EXPECT_TRUE(is_own_address(make_address("::ffff:" + own.to_string()))) << own;
}

class RefusedUpstream : public ::testing::Test {
 protected:
  config cfg;
  relay_metrics metrics;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"   // the rest stay as they default
  relay_context ctx{.cfg = cfg, .captures = nullptr, .metrics = metrics};
#pragma GCC diagnostic pop
};

TEST_F(RefusedUpstream, AWildcardAdminAddressIsRefusedOnEveryOwnAddressOfItsPortOnly) {
  ctx.refused_upstreams.push_back({tcp::endpoint(make_address("0.0.0.0"), 8025), "admin API", "--admin"});
  const auto own = interface_address();
  EXPECT_NE(ctx.refusal_of(tcp::endpoint(own, 8025)), nullptr) << own;
  EXPECT_NE(ctx.refusal_of(tcp::endpoint(make_address("127.0.0.1"), 8025)), nullptr);
  EXPECT_NE(ctx.refusal_of(tcp::endpoint(make_address("::1"), 8025)), nullptr);
  EXPECT_EQ(ctx.refusal_of(tcp::endpoint(own, 8026)), nullptr);
  EXPECT_EQ(ctx.refusal_of(tcp::endpoint(make_address("203.0.113.77"), 8025)), nullptr);
}

TEST_F(RefusedUpstream, ALiteralAdminAddressIsRefusedAsItselfOnly) {
  ctx.refused_upstreams.push_back({tcp::endpoint(make_address("127.0.0.1"), 8025), "admin API", "--admin"});
  EXPECT_NE(ctx.refusal_of(tcp::endpoint(make_address("127.0.0.1"), 8025)), nullptr);
  EXPECT_EQ(ctx.refusal_of(tcp::endpoint(make_address("127.0.0.2"), 8025)), nullptr);
  EXPECT_EQ(ctx.refusal_of(tcp::endpoint(make_address("127.0.0.3"), 8025)), nullptr);
}


// A hostile trial: --upstream 0.0.0.0:P and [::ffff:127.0.0.1]:P (or a name resolving to them)
// dialled mailtap's own listener on 127.0.0.1:P, and one client filled max_sessions.
TEST_F(RefusedUpstream, TheUnspecifiedAndIpv4MappedAddressesReachTheListenerToo) {
  ctx.refused_upstreams.push_back({tcp::endpoint(make_address("127.0.0.1"), 2525), "SMTP listener", "--listen"});
  EXPECT_NE(ctx.refusal_of(tcp::endpoint(make_address("0.0.0.0"), 2525)), nullptr);
  EXPECT_NE(ctx.refusal_of(tcp::endpoint(make_address("::"), 2525)), nullptr);
  EXPECT_NE(ctx.refusal_of(tcp::endpoint(make_address("::ffff:127.0.0.1"), 2525)), nullptr);
  EXPECT_EQ(ctx.refusal_of(tcp::endpoint(make_address("0.0.0.0"), 2526)), nullptr);
  EXPECT_EQ(ctx.refusal_of(tcp::endpoint(make_address("::ffff:127.0.0.2"), 2525)), nullptr);
}

TEST_F(RefusedUpstream, AnIpv4MappedListenerAddressIsItsIpv4Address) {
  ctx.refused_upstreams.push_back({tcp::endpoint(make_address("::ffff:127.0.0.1"), 2525), "SMTP listener", "--listen"});
  EXPECT_NE(ctx.refusal_of(tcp::endpoint(make_address("127.0.0.1"), 2525)), nullptr);
}

}  // namespace
}  // namespace mailtap
