// Built-in sink: accept loop and per-connection coroutine.
#include "relay/sink_server.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace mailtap {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

sink_server::sink_server(asio::io_context& io, protocol::sink_options options, asio::ssl::context* tls,
                         relay_metrics* metrics)
    : io_(io), acceptor_(io), options_(std::move(options)), tls_(tls), metrics_(metrics) {
  options_.offer_starttls = options_.offer_starttls && tls_ != nullptr;
}

std::optional<endpoint> sink_server::start(std::string& error) {
  boost::system::error_code ec;
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error = "built-in sink: cannot listen on 127.0.0.1: " + ec.message();
    return std::nullopt;
  }
  auto bound = acceptor_.local_endpoint();
  asio::co_spawn(io_, accept_loop(), asio::detached);
  return endpoint{bound.address().to_string(), bound.port()};
}

void sink_server::stop() {
  boost::system::error_code ig;
  acceptor_.close(ig);
}

asio::awaitable<void> sink_server::accept_loop() {
  std::uint64_t next_id = 0;
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(as_tuple(use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
    if (ec) {
      // EMFILE and friends: back off instead of spinning (accept errors never end the listener).
      // Out of descriptors, this repeats ten times a second: rate-limited like the listener's.
      if (metrics_) {
        ++metrics_->accept_errors;
        warn_limited(metrics_->warnings, warn_kind::accept_failed, "built-in sink: accept failed: " + ec.message());
      } else {
        spdlog::warn("built-in sink: accept failed: {}", ec.message());
      }
      asio::steady_timer pause(io_, std::chrono::milliseconds(100));
      co_await pause.async_wait(as_tuple(use_awaitable));
      continue;
    }
    asio::co_spawn(io_, serve(std::move(socket), ++next_id), asio::detached);
  }
}

asio::awaitable<void> sink_server::serve(tcp::socket socket, std::uint64_t id) {
  using namespace asio::experimental::awaitable_operators;
  static thread_local std::array<char, 64 * 1024> buffer;
  boost::system::error_code ec;
  socket.set_option(tcp::no_delay(true), ec);
  socket.non_blocking(true, ec);
  protocol::sink_fsm fsm(options_, id);
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;
  std::unique_ptr<std::array<char, 16 * 1024>> tls_buffer;
  std::string out = fsm.greeting();
  bool open = true;
  while (open) {
    if (!out.empty()) {
      auto [wec, n] = tls ? co_await asio::async_write(*tls, asio::buffer(out), as_tuple(use_awaitable))
                          : co_await asio::async_write(socket, asio::buffer(out), as_tuple(use_awaitable));
      if (wec) co_return;
      out.clear();
    }
    if (fsm.take_tls_request()) {   // the 220 is out: handshake as the server
      tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket, *tls_);
      asio::steady_timer limit(io_, std::chrono::seconds(30));
      auto r = co_await (tls->async_handshake(asio::ssl::stream_base::server, as_tuple(use_awaitable)) ||
                         limit.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1 || std::get<0>(std::get<0>(r))) {
        spdlog::debug("built-in sink: TLS handshake failed");
        co_return;
      }
      tls_buffer = std::make_unique<std::array<char, 16 * 1024>>();
      fsm.tls_started();
      continue;
    }
    std::size_t n = 0;
    const char* data = buffer.data();
    if (tls) {
      auto [rec, got] = co_await tls->async_read_some(asio::buffer(*tls_buffer), as_tuple(use_awaitable));
      if (rec) break;
      n = got;
      data = tls_buffer->data();
    } else {
      auto [rec] = co_await socket.async_wait(tcp::socket::wait_read, as_tuple(use_awaitable));
      if (rec) co_return;
      n = socket.read_some(asio::buffer(buffer), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
      if (ec) break;
    }
    std::uint64_t before = fsm.messages_accepted();
    open = fsm.feed(std::string_view(data, n), out);
    accepted_ += fsm.messages_accepted() - before;
  }
  if (!out.empty()) {
    if (tls) co_await asio::async_write(*tls, asio::buffer(out), as_tuple(use_awaitable));
    else co_await asio::async_write(socket, asio::buffer(out), as_tuple(use_awaitable));
  }
  socket.shutdown(tcp::socket::shutdown_send, ec);
  socket.close(ec);
}

}  // namespace mailtap
