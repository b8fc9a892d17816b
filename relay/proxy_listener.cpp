// Reading a load balancer's PROXY header before a session starts (see proxy_listener.hpp).
#include "relay/proxy_listener.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <array>

#include "protocol/proxy_protocol.hpp"

namespace mailtap {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
namespace proxy = protocol::proxy;

namespace {

// After the 421, how long the peer has to read it and close before the socket is closed
// (closing with its bytes unread would send a reset that can destroy the reply).
constexpr std::chrono::seconds refusal_linger{1};

struct header_read {
  std::optional<proxy::header> header;
  std::string problem;   // why not, when there is no header
};

// Reads what has come, at most as many bytes as the parser says cannot pass the header's end,
// and parses again, until the header is complete or refused, all within proxy_header_timeout.
// What has come is parsed at once: a client that speaks SMTP first ("EHLO x", shorter than
// any header) is refused as soon as its bytes are not a header's, not after the timeout.
asio::awaitable<header_read> read_header(tcp::socket& socket) {
  asio::steady_timer deadline(socket.get_executor());
  deadline.expires_after(proxy_header_timeout);
  std::string got;
  for (;;) {
    auto r = proxy::parse(got);
    if (r.status == proxy::parse_status::complete) co_return header_read{r.value, {}};
    if (r.status == proxy::parse_status::invalid) co_return header_read{std::nullopt, r.error};
    const std::size_t before = got.size();
    got.resize(before + r.more);
    auto result = co_await (socket.async_read_some(asio::buffer(got.data() + before, r.more), as_tuple(use_awaitable)) ||
                            deadline.async_wait(as_tuple(use_awaitable)));
    if (result.index() == 1)
      co_return header_read{std::nullopt, "no PROXY protocol header within " +
                                              std::to_string(proxy_header_timeout.count()) + " s"};
    auto [ec, n] = std::get<0>(result);
    got.resize(before + n);
    if (ec)
      co_return header_read{std::nullopt, got.empty() ? "the connection closed before a PROXY protocol header"
                                                      : "the connection closed inside the PROXY protocol header"};
  }
}

asio::awaitable<void> refuse(tcp::socket& socket, const std::string& relay_name, const std::string& problem) {
  const std::string reply = "421 4.7.0 " + relay_name + " expects a PROXY protocol header: " + problem + "\r\n";
  asio::steady_timer limit(socket.get_executor());
  limit.expires_after(refusal_linger);
  co_await (asio::async_write(socket, asio::buffer(reply), as_tuple(use_awaitable)) ||
            limit.async_wait(as_tuple(use_awaitable)));
  boost::system::error_code ig;
  socket.shutdown(tcp::socket::shutdown_send, ig);
  // Read and drop whatever the peer still sends until it closes (or the linger ends).
  std::array<char, 512> sink;
  for (;;) {
    auto r = co_await (socket.async_read_some(asio::buffer(sink), as_tuple(use_awaitable)) ||
                       limit.async_wait(as_tuple(use_awaitable)));
    if (r.index() == 1 || std::get<0>(std::get<0>(r))) break;   // the linger ended, or EOF/error
  }
  socket.close(ig);
}

}  // namespace

asio::awaitable<void> admit_behind_proxy(tcp::socket socket, std::string connection, std::string relay_name,
                                         relay_metrics& metrics, std::function<void(tcp::socket, client_identity)> start) {
  // Counted toward max_sessions from accept until the session is made (it counts itself from
  // then on) or the refused connection is closed.
  struct pending_guard {
    std::atomic<std::uint64_t>& pending;
    ~pending_guard() { --pending; }
  } guard{metrics.proxy_headers_pending};
  auto read = co_await read_header(socket);
  if (read.header) {
    auto who = identity_behind_proxy(socket, read.header->addresses);
    start(std::move(socket), std::move(who));
    co_return;
  }
  ++metrics.proxy_header_refused;
  warn_limited(metrics.warnings, warn_kind::proxy_header_refused,
               connection + ": connection from " + identity_of(socket).client_label() + " refused with 421: " +
                   read.problem + " (listen_proxy_protocol = true)");
  co_await refuse(socket, relay_name, read.problem);
}

}  // namespace mailtap
