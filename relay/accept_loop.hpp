// The accept loop with backoff, used by the SMTP listeners (relay/server.cpp) and the
// built-in sink (relay/sink_server.cpp): accept until the acceptor is closed, hand each
// connection to its owner, and on an accept error (EMFILE and the like) let the owner count
// it, pause accept_backoff, and keep serving (accept errors never end a listener).
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <functional>

namespace mailtap {

// While accepting fails, it is retried this often: the failure (out of descriptors) usually
// lasts until sessions end, and new connections wait in the listen queue meanwhile.
constexpr std::chrono::milliseconds accept_backoff{100};

struct accept_handlers {
  // The io_context the next connection's socket belongs to (and its session runs on).
  std::function<boost::asio::io_context&()> context_for_next;
  std::function<void(boost::asio::ip::tcp::socket)> serve;
  // An accept failed: the owner counts it and logs it (rate-limited).
  std::function<void(const boost::system::error_code&)> failed;
};

boost::asio::awaitable<void> accept_loop(boost::asio::ip::tcp::acceptor& acceptor, accept_handlers handlers);

}  // namespace mailtap
