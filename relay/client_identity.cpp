// The client's identity and how it is written upstream (see client_identity.hpp).
#include "relay/client_identity.hpp"

namespace mailtap {

namespace {

namespace proxy = protocol::proxy;

// An IPv4 client of a dual-stack listener ("[::]:2525") is named by its IPv4 address, as an
// IPv4 listener would name it, so that `client` CIDR matchers and captures see it so.
proxy::socket_address from_asio(const boost::asio::ip::tcp::endpoint& ep) {
  auto address = ep.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    address = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, address.to_v6());
  if (address.is_v4()) return {protocol::ipv4_bytes(address.to_v4().to_bytes()), ep.port()};
  return {protocol::ipv6_bytes(address.to_v6().to_bytes()), ep.port()};
}

// A balancer's PROXY header may name an IPv4 client by its IPv4-mapped IPv6 address
// (`PROXY TCP6 ::ffff:10.9.8.7 ...`, a dual-stack balancer): named by its IPv4 address, as a
// connection from it is (from_asio), so that captures, `search --client` and the admin API show
// one address for one client (a hostile trial: "[::ffff:10.9.8.7]:4242").
proxy::socket_address unmapped(proxy::socket_address a) {
  if (const auto* v6 = std::get_if<protocol::ipv6_bytes>(&a.ip)) {
    const auto as_asio = boost::asio::ip::address_v6(*v6);
    if (as_asio.is_v4_mapped())
      a.ip = protocol::ipv4_bytes(boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, as_asio).to_bytes());
  }
  return a;
}

}  // namespace

std::string client_identity::client_label() const { return known ? proxy::to_string(client) : "unknown"; }

client_identity identity_of(const boost::asio::ip::tcp::socket& socket,
                            const std::optional<boost::asio::ip::tcp::endpoint>& redirected_to,
                            const std::optional<boost::asio::ip::tcp::endpoint>& peer) {
  client_identity who;
  boost::system::error_code remote_ec, local_ec;
  const auto remote = peer ? *peer : socket.remote_endpoint(remote_ec);
  const auto local = socket.local_endpoint(local_ec);
  who.known = !remote_ec && !local_ec;
  if (who.known) {
    who.client = from_asio(remote);
    who.destination = from_asio(redirected_to ? *redirected_to : local);
  }
  return who;
}

client_identity identity_behind_proxy(const boost::asio::ip::tcp::socket& socket,
                                      const std::optional<proxy::endpoints>& named) {
  client_identity who = identity_of(socket);
  if (!named) return who;
  who.client = unmapped(named->source);
  who.destination = unmapped(named->destination);
  who.known = true;
  return who;
}

std::string upstream_preamble(upstream_identity mode, const client_identity& who) {
  if (mode != upstream_identity::proxy_v1 && mode != upstream_identity::proxy_v2) return {};
  const auto version = mode == upstream_identity::proxy_v1 ? proxy::version::v1 : proxy::version::v2;
  std::optional<proxy::endpoints> addresses;
  if (who.known) addresses = proxy::endpoints{who.client, who.destination};
  return proxy::encode(version, addresses);
}

std::optional<protocol::xclient_identity> xclient_identity_for(upstream_identity mode, const client_identity& who) {
  if (mode != upstream_identity::xclient || !who.known) return std::nullopt;
  return protocol::xclient_identity{who.client.ip, who.client.port, {}};
}

}  // namespace mailtap
