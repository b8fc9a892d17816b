// listen_proxy_protocol (issue 13, "mailtap behind a load balancer"): every accepted
// connection must start with a PROXY protocol header (v1 or v2, haproxy's
// proxy-protocol.txt). This file owns reading it, within a deadline and never a byte past
// it (the SMTP conversation after it stays in the socket for the session), and refusing a
// connection without a valid one: a 421 reply naming the problem, a close, a warning
// (rate-limited) and a count.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <functional>
#include <string>

#include "relay/client_identity.hpp"
#include "relay/metrics.hpp"

namespace mailtap {

// Postfix smtpd_upstream_proxy_timeout's default: a balancer sends its header at once.
inline constexpr std::chrono::seconds proxy_header_timeout{5};

// Reads the header off `socket`; on success calls `start` with the socket and the identity
// the header names, else refuses the connection. `connection` names it in the warning
// ("session ID"); `relay_name` goes into the 421. The caller has counted the connection in
// metrics.proxy_headers_pending; this takes it back when it returns.
boost::asio::awaitable<void> admit_behind_proxy(
    boost::asio::ip::tcp::socket socket, std::string connection, std::string relay_name, relay_metrics& metrics,
    std::function<void(boost::asio::ip::tcp::socket, client_identity)> start);

}  // namespace mailtap
