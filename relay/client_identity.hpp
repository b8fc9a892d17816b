// Who the client of a session is, as the relay tells the rest of the world (issue 13, "the
// client's identity reaches the upstream"): the address it connected from and the one it
// connected to, either the connection's own or those a load balancer's PROXY protocol
// header named (listen_proxy_protocol). The capture header, the fault rules' `client`
// matchers and the upstream (upstream_identity) all see this one identity.
#pragma once
#include <boost/asio/ip/tcp.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/proxy_protocol.hpp"
#include "protocol/xclient.hpp"
#include "relay/config.hpp"

namespace mailtap {

struct client_identity {
  protocol::proxy::socket_address client;        // the original client
  protocol::proxy::socket_address destination;   // the address it connected to
  bool known = true;   // false: the socket's addresses could not be read (the peer is gone)

  std::string client_label() const;   // "192.0.2.10:56324", "[2001:db8::1]:25", "unknown"
};

// The connection's own addresses; with transparent interception, `redirected_to` (where the
// client addressed it before netfilter sent it to mailtap) is the destination. `peer`: the
// remote address when the caller has read it already (one getpeername(2) per connection).
client_identity identity_of(const boost::asio::ip::tcp::socket& socket,
                            const std::optional<boost::asio::ip::tcp::endpoint>& redirected_to = std::nullopt,
                            const std::optional<boost::asio::ip::tcp::endpoint>& peer = std::nullopt);
// As a PROXY header named it; a header without addresses (LOCAL, UNKNOWN) leaves the
// connection's own (proxy-protocol.txt 2.1, 2.2).
client_identity identity_behind_proxy(const boost::asio::ip::tcp::socket& socket,
                                      const std::optional<protocol::proxy::endpoints>& named);

// The bytes to send first on each new upstream connection: a PROXY header for proxy_v1 and
// proxy_v2 ("PROXY UNKNOWN" / LOCAL when the client's address is not known), else nothing.
std::string upstream_preamble(upstream_identity mode, const client_identity& who);
// What XCLIENT says (the HELO is filled in by the machine), for mode xclient.
std::optional<protocol::xclient_identity> xclient_identity_for(upstream_identity mode, const client_identity& who);

}  // namespace mailtap
