// Built-in sink: accept loop and per-connection coroutine.
#include "relay/sink_server.hpp"

#include "relay/accept_loop.hpp"
#include "relay/leg_stream.hpp"

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

namespace {
// A client that has not finished its TLS handshake by then is dropped.
constexpr std::chrono::seconds handshake_limit{30};
}  // namespace

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
  asio::co_spawn(io_, accept_on(), asio::detached);
  return endpoint{bound.address().to_string(), bound.port()};
}

void sink_server::stop() {
  boost::system::error_code ig;
  acceptor_.close(ig);
}

asio::awaitable<void> sink_server::accept_on() {
  std::uint64_t next_id = 0;
  accept_handlers handlers;
  handlers.context_for_next = [this]() -> asio::io_context& { return io_; };
  handlers.failed = [this](const boost::system::error_code& ec) {
    // Out of descriptors, this repeats every backoff: rate-limited like the listener's.
    if (metrics_) {
      ++metrics_->accept_errors;
      warn_limited(metrics_->warnings, warn_kind::accept_failed, "built-in sink: accept failed: " + ec.message());
    } else {
      spdlog::warn("built-in sink: accept failed: {}", ec.message());
    }
  };
  handlers.serve = [this, &next_id](tcp::socket socket) {
    asio::co_spawn(io_, serve(std::move(socket), ++next_id), asio::detached);
  };
  co_await accept_loop(acceptor_, std::move(handlers));
}

// One connection: the machine's actions are carried out in order (replies queued, then a
// handshake or a close once they are written), then the next read.
asio::awaitable<void> sink_server::serve(tcp::socket socket, std::uint64_t id) {
  using protocol::leg;
  leg_stream client(std::make_unique<tcp_pipe>(std::move(socket)));
  protocol::sink_fsm fsm(options_, id);
  fsm.on_start();
  for (;;) {
    for (auto& a : fsm.take_actions()) {
      std::visit(protocol::overloaded{
                     [&](protocol::send_bytes& b) { client.pending += b.bytes; },
                     [&](const protocol::start_tls&) { client.tls_requested = true; },
                     [&](const protocol::close_leg& c) {
                       client.close_requested = true;
                       client.reset_requested = c.reset;
                     },
                     // The sink has one leg, no timers, no faults and no recorder: it never asks these.
                     [](const protocol::arm_timer&) {}, [](const protocol::arm_fault_timer&) {},
                     [](const protocol::shape_leg&) {}, [](const protocol::segment_break&) {},
                     [](const protocol::reconnect_upstream&) {}, [](const protocol::connect_upstream&) {},
                     [](const protocol::capture_barrier&) {}, [](const protocol::await_capture&) {},
                     [](const protocol::pause_reading&) {},
                 },
                 a);
    }
    if (!client.pending.empty() && co_await client.flush()) co_return;
    if (client.close_requested) break;
    if (std::exchange(client.tls_requested, false)) {   // the 220 is out: handshake as the server
      if (co_await handshake(client)) {
        fsm.on_tls_ready();
      } else {
        spdlog::debug("built-in sink: TLS handshake failed");
        fsm.on_tls_failed();
      }
      continue;
    }
    auto [ec, bytes, again] = co_await client.read_some();
    if (again) continue;
    if (ec) break;
    std::uint64_t before = fsm.messages_accepted();
    fsm.on_client_bytes(bytes);
    accepted_ += fsm.messages_accepted() - before;
  }
  client.shutdown_send();
  client.close(client.reset_requested);
}

asio::awaitable<bool> sink_server::handshake(leg_stream& client) {
  using namespace asio::experimental::awaitable_operators;
  auto* tls = client.begin_tls(*tls_);
  if (!tls) co_return false;
  asio::steady_timer limit(io_, handshake_limit);
  auto r = co_await (tls->async_handshake(asio::ssl::stream_base::server, as_tuple(use_awaitable)) ||
                     limit.async_wait(as_tuple(use_awaitable)));
  if (r.index() == 1 || std::get<0>(std::get<0>(r))) {
    client.drop_tls();
    co_return false;
  }
  client.handshake_done();
  co_return true;
}

}  // namespace mailtap
