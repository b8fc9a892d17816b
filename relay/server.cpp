// Listener, session registry, signals and drain.
#include "relay/server.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <random>
#include <thread>

namespace mailtap {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

server::server(const config& cfg, captures::store* store) : cfg_(cfg), store_(store) {
  std::size_t threads = cfg.threads != 0 ? cfg.threads : std::max(1u, std::thread::hardware_concurrency());
  for (std::size_t i = 0; i < threads; ++i) contexts_.push_back(std::make_unique<asio::io_context>(1));
}

server::~server() {
  // Sessions hold capture handles: destroy them (with the io_contexts) before the store goes.
  sink_.reset();
  acceptor_.reset();
  contexts_.clear();
}

bool server::start(std::string& error) {
  ctx_ = std::unique_ptr<relay_context>(new relay_context{cfg_, store_, metrics_, {}, {}, {}, cfg_.seed});
  if (ctx_->master_seed == 0) ctx_->master_seed = std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32);
  if (cfg_.upstream) {
    ctx_->upstream = *cfg_.upstream;
    ctx_->upstream_label = cfg_.upstream->to_string();
  } else {
    sink_ = std::make_unique<sink_server>(*contexts_.front(), protocol::sink_options{});
    auto bound = sink_->start(error);
    if (!bound) return false;
    ctx_->upstream = *bound;
    ctx_->upstream_label = "builtin";
  }
  boost::system::error_code ec;
  auto address = asio::ip::make_address(cfg_.listen.host, ec);
  if (ec) {
    error = "listen address '" + cfg_.listen.host + "' is not an IP address";
    return false;
  }
  tcp::endpoint ep(address, cfg_.listen.port);
  acceptor_ = std::make_unique<tcp::acceptor>(*contexts_.front());
  acceptor_->open(ep.protocol(), ec);
  if (!ec) acceptor_->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_->bind(ep, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error = "cannot listen on " + cfg_.listen.to_string() + ": " + ec.message();
    return false;
  }
  ctx_->listen_label = listen_endpoint().to_string();
  asio::co_spawn(*contexts_.front(), accept_loop(), asio::detached);
  asio::co_spawn(*contexts_.front(), wait_for_signals(), asio::detached);
  return true;
}

endpoint server::listen_endpoint() const {
  boost::system::error_code ec;
  auto ep = acceptor_->local_endpoint(ec);
  return endpoint{ep.address().to_string(), ep.port()};
}

void server::run() {
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < contexts_.size(); ++i)
    threads.emplace_back([io = contexts_[i].get()] {
      auto guard = asio::make_work_guard(*io);
      io->run();
    });
  {
    auto guard = asio::make_work_guard(*contexts_.front());
    contexts_.front()->run();
  }
  for (auto& t : threads) t.join();
}

void server::stop_all() {
  for (auto& io : contexts_) io->stop();
}

asio::awaitable<void> server::accept_loop() {
  std::uint64_t number = 0;
  std::size_t next = 0;
  for (;;) {
    auto& target = *contexts_[next++ % contexts_.size()];
    auto [ec, socket] = co_await acceptor_->async_accept(target, as_tuple(use_awaitable));
    if (!acceptor_->is_open()) co_return;
    if (ec) {
      // EMFILE and the like: count, back off, keep serving (HOUSE_STYLE: never exit on accept errors).
      ++metrics_.accept_errors;
      spdlog::warn("accept failed: {}", ec.message());
      asio::steady_timer pause(*contexts_.front(), 100ms);
      co_await pause.async_wait(as_tuple(use_awaitable));
      continue;
    }
    ++metrics_.sessions_accepted;
    if (metrics_.sessions_active.load() >= cfg_.max_sessions) {
      ++metrics_.sessions_refused_max;
      std::string busy = "421 4.3.2 " + cfg_.relay_name + " too many sessions, try again later\r\n";
      boost::system::error_code ig;
      socket.non_blocking(true, ig);
      socket.write_some(asio::buffer(busy), ig);
      socket.shutdown(tcp::socket::shutdown_send, ig);
      socket.close(ig);
      continue;
    }
    auto s = std::make_shared<session>(std::move(socket), *ctx_, ++number);
    {
      std::lock_guard lock(sessions_mutex_);
      std::erase_if(sessions_, [](const std::weak_ptr<session>& w) { return w.expired(); });
      sessions_.push_back(s);
    }
    s->start();
  }
}

asio::awaitable<void> server::wait_for_signals() {
  asio::signal_set signals(*contexts_.front(), SIGINT, SIGTERM);
  co_await signals.async_wait(as_tuple(use_awaitable));
  spdlog::info("signal received: draining {} session(s), deadline {} s", metrics_.sessions_active.load(),
               std::chrono::duration_cast<std::chrono::seconds>(cfg_.drain_timeout).count());
  asio::co_spawn(*contexts_.front(), drain(), asio::detached);
  co_await signals.async_wait(as_tuple(use_awaitable));
  spdlog::warn("second signal: stopping now");
  stop_all();
}

asio::awaitable<void> server::drain() {
  boost::system::error_code ig;
  acceptor_->close(ig);
  std::vector<std::shared_ptr<session>> live;
  {
    std::lock_guard lock(sessions_mutex_);
    for (auto& w : sessions_)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->drain();
  live.clear();
  auto deadline = std::chrono::steady_clock::now() + cfg_.drain_timeout;
  asio::steady_timer tick(*contexts_.front());
  while (metrics_.sessions_active.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    tick.expires_after(50ms);
    co_await tick.async_wait(as_tuple(use_awaitable));
  }
  if (metrics_.sessions_active.load() > 0) {
    spdlog::warn("drain deadline passed: closing {} session(s)", metrics_.sessions_active.load());
    {
      std::lock_guard lock(sessions_mutex_);
      for (auto& w : sessions_)
        if (auto s = w.lock()) s->abort();
    }
    tick.expires_after(200ms);
    co_await tick.async_wait(as_tuple(use_awaitable));
  }
  if (sink_) sink_->stop();
  stop_all();
}

}  // namespace mailtap
