// Listener, session registry, signals (SIGTERM/SIGINT: drain; SIGHUP: reload) and the drain.
#include "relay/server.hpp"

#include "relay/accept_loop.hpp"
#include "relay/io_loop.hpp"
#include "relay/original_destination.hpp"
#include "relay/proxy_listener.hpp"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <random>
#include <thread>

#include "relay/notify.hpp"

namespace mailtap {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {
// After the drain deadline's 421, how long sessions get to write it and close their records.
constexpr auto abort_grace = 200ms;
}  // namespace

server::server(const config& cfg, captures::store* store) : cfg_(cfg), store_(store) {
  std::size_t threads = cfg.threads != 0 ? cfg.threads : std::max(1u, std::thread::hardware_concurrency());
  for (std::size_t i = 0; i < threads; ++i) contexts_.push_back(std::make_unique<asio::io_context>(1));
  sessions_closed_.emplace(contexts_.front()->get_executor());
  idle_memory_.emplace(*contexts_.front(), [this] {
    return metrics_.sessions_active.load() == 0 && launches_pending_.load() == 0 &&
           metrics_.proxy_headers_pending.load() == 0;
  });
}

server::~server() {
  // Sessions hold capture handles: destroy them (with the io_contexts) before the store goes.
  sink_.reset();
  sessions_closed_.reset();
  acceptor_.reset();
  tls_acceptor_.reset();
  stop_signals_.reset();
  reload_signals_.reset();
  contexts_.clear();
}

bool server::start_tls(std::string& error) {
  const auto& t = cfg_.tls;
  tls_settings settings;
  settings.cert_file = t.cert_file;
  settings.key_file = t.key_file;
  settings.ca_file = t.ca_file;
  settings.state_dir = t.state_dir.empty() ? default_state_dir() : t.state_dir;
  settings.insecure_upstream = effective_upstream_verify(t) == upstream_verify::none;
  settings.handshake_timeout = t.handshake_timeout;
  client_tls_ = make_server_tls(settings, error);
  if (!client_tls_) return false;
  spdlog::info("TLS certificate {} sha256 {}{}", client_tls_->certificate_subject, client_tls_->certificate_sha256,
               client_tls_->generated ? " (self-signed, in " + settings.state_dir.string() + ")" : "");
  if (cfg_.upstream) {
    upstream_tls_ = make_client_tls(settings, error);
    if (!upstream_tls_) return false;
    if (settings.insecure_upstream) spdlog::warn("upstream TLS certificates are NOT verified (verify_upstream = none)");
  } else {
    // The built-in sink presents our own certificate: trust exactly that one.
    upstream_tls_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    boost::system::error_code ec;
    upstream_tls_->set_options(asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3 |
                               asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1, ec);
    auto cert = t.cert_file.empty() ? settings.state_dir / selfsigned_cert_name : t.cert_file;
    upstream_tls_->load_verify_file(cert.string(), ec);
    if (ec) {
      error = cert.string() + ": cannot load for the built-in sink: " + ec.message();
      return false;
    }
    // The certificate itself is the trust anchor, whoever issued it: without this a certificate
    // a CA signed (not self-signed) failed with "unable to get local issuer certificate", and
    // every STARTTLS got 454 (a newcomer's trial with its own certificate).
    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(upstream_tls_->native_handle()), X509_V_FLAG_PARTIAL_CHAIN);
    upstream_tls_->set_verify_mode(asio::ssl::verify_peer, ec);
  }
  return true;
}

bool server::listen_on(tcp::acceptor& acceptor, const endpoint& where, const char* flag, std::string& error) {
  boost::system::error_code ec;
  auto address = asio::ip::make_address(where.host, ec);
  if (ec) {
    error = "listen address '" + where.host + "' is not an IP address (" + flag + ")";
    return false;
  }
  tcp::endpoint ep(address, where.port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error = "cannot listen on " + where.to_string() + " (" + flag + "): " + ec.message();
    return false;
  }
  return true;
}

bool server::start(std::string& error) {
  // The listeners first: an address that cannot be bound is the first and only thing said,
  // not a line after the certificate's. Nothing is accepted before run().
  acceptor_ = std::make_unique<tcp::acceptor>(*contexts_.front());
  if (!listen_on(*acceptor_, cfg_.listen, "--listen, or listen in the config file", error)) return false;
  if (cfg_.tls.listen) {
    tls_acceptor_ = std::make_unique<tcp::acceptor>(*contexts_.front());
    if (!listen_on(*tls_acceptor_, *cfg_.tls.listen, "--listen-tls, or [tls] listen in the config file", error)) return false;
  }
  ctx_ = std::unique_ptr<relay_context>(new relay_context{cfg_, store_, metrics_, {}, {}, cfg_.seed, nullptr,
                                                          nullptr, nullptr, {}, {}, &events_, {}});
  ctx_->refused_upstreams.push_back({acceptor_->local_endpoint(), "SMTP listener", "--listen, or listen in the config file"});
  if (tls_acceptor_) {
    ctx_->refused_upstreams.push_back({tls_acceptor_->local_endpoint(), "SMTPS listener", "--listen-tls, or [tls] listen in the config file"});
  }
  // An upstream that is one of those listeners is a usage error, said as the only line too:
  // checked before the certificate is loaded or generated, which logs a line of its own.
  if (cfg_.upstream) {
    ctx_->upstream = {*cfg_.upstream, cfg_.upstream->to_string(), false};
    if (const auto* own = configured_upstream_refusal()) {
      error = "upstream " + ctx_->upstream.where.to_string() + " is mailtap's own " + own->what + " (" + own->flag +
              "): every session would be relayed to mailtap itself";
      return false;
    }
  }
  if (!start_tls(error)) return false;
  ctx_->client_tls = client_tls_.get();
  ctx_->upstream_tls = upstream_tls_.get();
  session_number_ = cfg_.first_session - 1;
  if (ctx_->master_seed == 0) ctx_->master_seed = std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32);
  faults_ = policies::make_engine(ctx_->master_seed);
  if (auto problem = faults_->add_all(cfg_.faults)) {
    error = "faults: " + *problem;
    return false;
  }
  ctx_->faults = faults_.get();
  lookups_ = std::make_unique<name_lookups>();
  ctx_->lookups = lookups_.get();
  ctx_->session_closed = [this] {
    // A drain waits for sessions to end; otherwise the last one arms the idle memory release,
    // at most one cross-thread wake-up per idle_memory's settle time.
    if (metrics_.sessions_active.load() != 0) return;
    if (draining_.load()) asio::post(*contexts_.front(), [this] { sessions_closed_->notify(); });
    else idle_memory_->on_idle();
  };
  if (!cfg_.upstream) {
    protocol::sink_options sink_opts;
    sink_opts.offer_starttls = true;
    sink_opts.auth_user = cfg_.sink.auth_user;
    sink_opts.auth_password = cfg_.sink.auth_password;
    sink_ = std::make_unique<sink_server>(*contexts_.front(), sink_opts, &client_tls_->ctx, &metrics_);
    auto bound = sink_->start(error);
    if (!bound) return false;
    ctx_->upstream = {*bound, "builtin", true};
  }
  ctx_->own_upstream_connections = &own_upstream_connections_;
  ctx_->listen_label = listen_endpoint().to_string();
  asio::co_spawn(*contexts_.front(), accept_on(*acceptor_, false), asio::detached);
  if (tls_acceptor_) asio::co_spawn(*contexts_.front(), accept_on(*tls_acceptor_, true), asio::detached);
  stop_signals_ = std::make_unique<asio::signal_set>(*contexts_.front(), SIGINT, SIGTERM);
  reload_signals_ = std::make_unique<asio::signal_set>(*contexts_.front(), SIGHUP);
  asio::co_spawn(*contexts_.front(), wait_for_signals(), asio::detached);
  asio::co_spawn(*contexts_.front(), wait_for_reloads(), asio::detached);
  return true;
}

std::optional<endpoint> server::listen_tls_endpoint() const {
  if (!tls_acceptor_) return std::nullopt;
  boost::system::error_code ec;
  auto ep = tls_acceptor_->local_endpoint(ec);
  return endpoint{ep.address().to_string(), ep.port()};
}

endpoint server::listen_endpoint() const {
  boost::system::error_code ec;
  auto ep = acceptor_->local_endpoint(ec);
  return endpoint{ep.address().to_string(), ep.port()};
}

bool server::refuse_as_upstream(const endpoint& admin, std::string& error) {
  boost::system::error_code ec;
  const auto admin_address = boost::asio::ip::make_address(admin.host, ec);
  if (ec) return true;   // the admin API binds literal addresses only (admin/README.md)
  ctx_->refused_upstreams.push_back({tcp::endpoint(admin_address, admin.port), "admin API", "--admin, or admin in the config file"});
  if (!configured_upstream_refusal()) return true;
  error = "upstream " + ctx_->upstream.where.to_string() + " is the admin API's own address (--admin): choose another for one of them";
  return false;
}

const relay_context::refused_upstream* server::configured_upstream_refusal() const {
  const auto& where = ctx_->upstream;
  if (where.builtin) return nullptr;
  boost::system::error_code ec;
  const auto address = boost::asio::ip::make_address(where.where.host, ec);
  return ec ? nullptr : ctx_->refusal_of(tcp::endpoint(address, where.where.port));
}

void server::run() {
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < contexts_.size(); ++i)
    threads.emplace_back([this, io = contexts_[i].get()] {
      auto guard = asio::make_work_guard(*io);
      run_io_context(*io, metrics_.sessions_active, cfg_.busy_poll);
    });
  {
    auto guard = asio::make_work_guard(*contexts_.front());
    run_io_context(*contexts_.front(), metrics_.sessions_active, cfg_.busy_poll);
  }
  for (auto& t : threads) t.join();
}

void server::stop_all() {
  for (auto& io : contexts_) io->stop();
}

asio::awaitable<void> server::accept_on(tcp::acceptor& acceptor, bool implicit_tls) {
  std::size_t next = implicit_tls ? 1 : 0;
  accept_handlers handlers;
  handlers.context_for_next = [this, next]() mutable -> asio::io_context& { return *contexts_[next++ % contexts_.size()]; };
  handlers.failed = [this](const boost::system::error_code& ec) {
    // The failure repeats every backoff while it lasts, so its warning is rate-limited.
    ++metrics_.accept_errors;
    warn_limited(metrics_.warnings, warn_kind::accept_failed,
                 "accept failed: " + ec.message() + " (" + std::to_string(metrics_.sessions_active.load()) +
                     " sessions open; new connections wait in the listen queue)");
  };
  handlers.serve = [this, implicit_tls](tcp::socket socket) { admit(std::move(socket), implicit_tls); };
  co_await accept_loop(acceptor, std::move(handlers));
}

// Whether an accepted connection is one of mailtap's own upstream connections, redirected back
// to it: from the local endpoint of one of them, and redirected from the destination that one
// dialled (own_connections.hpp). Connection tracking is asked only for a peer that could be
// ours, whether or not `transparent` is set: a redirect rule loops a configured upstream too.
bool server::comes_back(tcp::socket& socket, const std::optional<tcp::endpoint>& peer) const {
  if (!peer || !own_upstream_connections_.left_from(*peer)) return false;
  boost::system::error_code lec;
  const auto local = socket.local_endpoint(lec);
  if (lec) return false;
  const auto original = original_destination(socket.native_handle(), local);
  return original && own_upstream_connections_.is_ours(*peer, *original);
}

// A connection is refused at once, 421 and closed, with `reply` (its warning names it by the
// session id it would have had).
void server::refuse(tcp::socket& socket, warn_kind kind, const std::string& why, const std::string& reply) {
  boost::system::error_code pec;
  const auto peer = socket.remote_endpoint(pec);
  warn_limited(metrics_.warnings, kind,
               "session " + make_session_id(++session_number_) + ": connection from " +
                   (pec ? std::string("unknown") : endpoint{peer.address().to_string(), peer.port()}.to_string()) +
                   " refused with 421: " + why);
  boost::system::error_code ig;
  socket.non_blocking(true, ig);
  socket.write_some(asio::buffer(reply), ig);
  socket.shutdown(tcp::socket::shutdown_send, ig);
  socket.close(ig);
}

void server::admit(tcp::socket socket, bool implicit_tls) {
  ++metrics_.sessions_accepted;
  std::optional<tcp::endpoint> peer;
  {
    boost::system::error_code pec;
    auto remote = socket.remote_endpoint(pec);
    if (!pec) peer = remote;
  }
  if (comes_back(socket, peer)) {
    ++metrics_.sessions_refused_loop;
    refuse(socket, warn_kind::connection_loop,
           "it is mailtap's own upstream connection, sent back to it (a firewall redirect that catches mailtap's "
           "own connections? README, \"Transparent interception\")",
           "421 4.4.6 " + cfg_.relay_name + " mail loop: this connection is mailtap's own upstream connection\r\n");
    return;
  }
  if (metrics_.sessions_active.load() + metrics_.proxy_headers_pending.load() + launches_pending_.load() >=
      cfg_.max_sessions) {
    ++metrics_.sessions_refused_max;
    refuse(socket, warn_kind::max_sessions, "max_sessions (" + std::to_string(cfg_.max_sessions) + ") reached",
           "421 4.3.2 " + cfg_.relay_name + " too many sessions, try again later\r\n");
    return;
  }
  const auto number = ++session_number_;
  std::optional<tcp::endpoint> redirected_to;
  if (cfg_.transparent) {
    boost::system::error_code lec;
    auto local = socket.local_endpoint(lec);
    if (!lec) redirected_to = original_destination(socket.native_handle(), local);
  }
  std::optional<upstream_target> original;
  if (redirected_to) original = intercepted_target(*redirected_to);
  auto start = [this, number, implicit_tls, original](tcp::socket connection, client_identity who) {
    auto executor = connection.get_executor();
    launch(std::make_shared<session>(executor, std::make_unique<tcp_pipe>(std::move(connection)), *ctx_, number,
                                     who, implicit_tls, original));
  };
  if (cfg_.listen_proxy_protocol) {
    // The session starts once the balancer's header has named the client (proxy_listener.hpp).
    auto executor = socket.get_executor();
    ++metrics_.proxy_headers_pending;   // admit_behind_proxy takes it back when it is done
    asio::co_spawn(executor, admit_behind_proxy(std::move(socket), "session " + make_session_id(number),
                                                cfg_.relay_name, metrics_, start),
                   asio::detached);
    return;
  }
  // The session is built on its own thread: building it creates its capture file, which costs
  // more than the rest of the accept (ext4 allocating an inode), and on the accepting thread it
  // made that thread the busiest (README "Performance", W3).
  auto who = identity_of(socket, redirected_to, peer);
  ++launches_pending_;
  auto executor = socket.get_executor();
  asio::post(executor, [this, start, socket = std::move(socket), who = std::move(who)]() mutable {
    try {
      start(std::move(socket), std::move(who));
    } catch (const std::exception& e) {   // out of memory: this connection closes, the relay goes on
      ++metrics_.session_errors;
      spdlog::warn("a session could not be started: {}", e.what());
    }
    --launches_pending_;
    ctx_->session_closed();   // a drain waiting for it rechecks
  });
}

void server::launch(std::shared_ptr<session> s) {
  {
    std::lock_guard lock(sessions_mutex_);
    std::erase_if(sessions_, [](const std::weak_ptr<session>& w) { return w.expired(); });
    sessions_.push_back(s);
  }
  s->start();
  // Built after a drain collected the sessions to drain (its launch was posted before the
  // listeners closed): drained now. A session drained twice is drained once.
  if (draining_.load()) s->drain();
}

// Transparent interception: a redirected connection goes where its client sent it (one
// addressed to mailtap itself has no original destination and goes to the configured upstream).
std::optional<upstream_target> server::intercepted_target(const tcp::endpoint& original) {
  ++metrics_.sessions_intercepted;
  endpoint where{original.address().to_string(), original.port()};
  return upstream_target{where, where.to_string(), false};
}

asio::awaitable<void> server::wait_for_signals() {
  auto& signals = *stop_signals_;
  co_await signals.async_wait(as_tuple(use_awaitable));
  spdlog::info("signal received: draining {} session(s), deadline {} s", metrics_.sessions_active.load(),
               std::chrono::duration_cast<std::chrono::seconds>(cfg_.drain_timeout).count());
  notify::stopping("draining " + std::to_string(metrics_.sessions_active.load()) + " session(s)");
  reload_signals_->cancel();
  asio::co_spawn(*contexts_.front(), drain(), asio::detached);
  co_await signals.async_wait(as_tuple(use_awaitable));
  spdlog::warn("second signal: stopping now");
  stop_all();
}

asio::awaitable<void> server::wait_for_reloads() {
  for (;;) {
    auto [ec, number] = co_await reload_signals_->async_wait(as_tuple(use_awaitable));
    if (ec) co_return;   // cancelled: the drain has begun
    (void)number;
    if (reload_handler_) reload_handler_();
    else spdlog::warn("SIGHUP: no reload handler, ignored");
  }
}

asio::awaitable<void> server::drain() {
  draining_ = true;   // from now on each session's end tells sessions_closed_
  boost::system::error_code ig;
  acceptor_->close(ig);
  if (tls_acceptor_) tls_acceptor_->close(ig);
  std::vector<std::shared_ptr<session>> live;
  {
    std::lock_guard lock(sessions_mutex_);
    for (auto& w : sessions_)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->drain();
  live.clear();
  auto all_closed = [this] { return metrics_.sessions_active.load() == 0 && launches_pending_.load() == 0; };
  co_await sessions_closed_->wait_until(all_closed, std::chrono::steady_clock::now() + cfg_.drain_timeout);
  if (!all_closed()) {
    spdlog::warn("drain deadline passed: closing {} session(s)", metrics_.sessions_active.load());
    {
      std::lock_guard lock(sessions_mutex_);
      for (auto& w : sessions_)
        if (auto s = w.lock()) s->abort();
    }
    // Their 421 is written and their records closed within this much.
    co_await sessions_closed_->wait_until(all_closed, std::chrono::steady_clock::now() + abort_grace);
  }
  if (sink_) sink_->stop();
  stop_all();
}

}  // namespace mailtap
