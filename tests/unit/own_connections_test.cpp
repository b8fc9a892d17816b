// relay/own_connections: the registry the listeners ask whether an accepted connection is one
// of mailtap's own upstream connections, redirected back to it (a mail loop).
#include "relay/own_connections.hpp"

#include <gtest/gtest.h>

namespace mailtap {
namespace {

using boost::asio::ip::make_address;
using endpoint = boost::asio::ip::tcp::endpoint;

TEST(OwnConnections, OursIsTheLocalEndpointAndTheDestinationItDialled) {
  own_connections own;
  const endpoint local(make_address("10.231.0.2"), 40001);
  const endpoint dialled(make_address("10.231.0.2"), 25);
  EXPECT_FALSE(own.is_ours(local, dialled));
  own.add(local, dialled);
  EXPECT_TRUE(own.is_ours(local, dialled));
  EXPECT_TRUE(own.left_from(local));
  // connect(2) shares source ports between destinations: a client of the listener with the
  // same source endpoint, headed elsewhere, is not ours.
  EXPECT_FALSE(own.is_ours(local, endpoint(make_address("10.231.0.2"), 10025)));
  EXPECT_FALSE(own.is_ours(endpoint(make_address("10.231.0.2"), 40002), dialled));   // another port
  EXPECT_FALSE(own.is_ours(endpoint(make_address("10.231.0.1"), 40001), dialled));   // another address
  own.remove(local);
  EXPECT_FALSE(own.is_ours(local, dialled));
  EXPECT_FALSE(own.left_from(local));
}

TEST(OwnConnections, AnIpv4MappedAddressIsItsIpv4Address) {
  // A dual-stack listener ([::]) sees an IPv4 connection as ::ffff:a.b.c.d.
  own_connections own;
  const endpoint dialled(make_address("192.0.2.5"), 25);
  own.add(endpoint(make_address("127.0.0.1"), 50000), dialled);
  EXPECT_TRUE(own.is_ours(endpoint(make_address("::ffff:127.0.0.1"), 50000), endpoint(make_address("::ffff:192.0.2.5"), 25)));
  own.add(endpoint(make_address("::ffff:10.0.0.7"), 50001), endpoint(make_address("::ffff:192.0.2.5"), 25));
  EXPECT_TRUE(own.is_ours(endpoint(make_address("10.0.0.7"), 50001), dialled));
  own.remove(endpoint(make_address("10.0.0.7"), 50001));
  EXPECT_FALSE(own.is_ours(endpoint(make_address("::ffff:10.0.0.7"), 50001), dialled));
  EXPECT_FALSE(own.is_ours(endpoint(make_address("::1"), 50000), dialled));
}

}  // namespace
}  // namespace mailtap
