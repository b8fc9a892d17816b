// The running relay: a pool of io_contexts (one thread each), the SMTP listener, the
// built-in sink when no upstream is configured, the live-session registry and the
// SIGTERM/SIGINT drain (stop accepting -> 421 to idle sessions -> let in-flight
// transactions finish until the drain deadline -> close what is left), and SIGHUP, handed
// to the reload handler (relay/reload.hpp). The signals are caught from start() on.
// Threading: start() and run() from the main thread; everything else on the pool.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "captures/writer.hpp"
#include "policies/engine.hpp"
#include "relay/config.hpp"
#include "relay/event_hub.hpp"
#include "relay/idle_memory.hpp"
#include "relay/metrics.hpp"
#include "relay/session.hpp"
#include "relay/sink_server.hpp"
#include "relay/tls_context.hpp"
#include "relay/wake_signal.hpp"

namespace mailtap {

class server {
 public:
  server(const config& cfg, captures::store* store);
  ~server();

  // Binds the listener (and starts the built-in sink). One-line error on failure.
  bool start(std::string& error);
  endpoint listen_endpoint() const;
  std::optional<endpoint> listen_tls_endpoint() const;
  const server_tls* client_tls() const { return client_tls_.get(); }
  const std::string& upstream_label() const { return ctx_->upstream.label; }
  std::uint64_t seed() const { return ctx_->master_seed; }
  // Called on the first io_context's thread at each SIGHUP; set before run(). Without one,
  // SIGHUP is logged and ignored.
  void on_reload(std::function<void()> handler) { reload_handler_ = std::move(handler); }
  // The admin API listens at `admin`: no session dials it as its upstream (relay_context::
  // refused_upstreams, which start() fills with the SMTP listeners' addresses). False, with a
  // one-line error, when the configured upstream is that address. Before run().
  bool refuse_as_upstream(const endpoint& admin, std::string& error);
  // Serves until a signal's drain completes.
  void run();
  const relay_metrics& metrics() const { return metrics_; }
  relay_metrics& metrics() { return metrics_; }
  // Live session events (the admin API's WebSocket subscribes).
  event_hub& events() { return events_; }
  // True from the first stop signal on: the relay no longer accepts sessions (/readyz).
  bool draining() const { return draining_.load(); }
  // The io_context the admin API runs its connections on (the last of the pool: the first
  // runs the SMTP accept loops and the signals).
  boost::asio::io_context& control_context() { return *contexts_.back(); }
  // The fault engine: rules may be added, removed or replaced while the relay runs (thread-safe).
  policies::engine& faults() { return *faults_; }

 private:
  boost::asio::awaitable<void> accept_on(boost::asio::ip::tcp::acceptor& acceptor, bool implicit_tls);
  // A new connection: a session (once a PROXY header named the client, with
  // listen_proxy_protocol), or a 421 when max_sessions are open or it is mailtap's own
  // upstream connection come back (own_connections.hpp).
  void admit(boost::asio::ip::tcp::socket socket, bool implicit_tls);
  bool comes_back(boost::asio::ip::tcp::socket& socket, const std::optional<boost::asio::ip::tcp::endpoint>& peer) const;
  // Answers `reply` (a 421) and closes; the rate-limited warning says `why`.
  void refuse(boost::asio::ip::tcp::socket& socket, warn_kind kind, const std::string& why, const std::string& reply);
  // Registers a new session (for the drain) and starts it.
  void launch(std::shared_ptr<session> s);
  std::optional<upstream_target> intercepted_target(const boost::asio::ip::tcp::endpoint& original);
  bool listen_on(boost::asio::ip::tcp::acceptor& acceptor, const endpoint& where, const char* flag, std::string& error);
  // What refuses the configured upstream (a literal address that is mailtap's own: its admin
  // API or a listener), or null.
  const relay_context::refused_upstream* configured_upstream_refusal() const;
  bool start_tls(std::string& error);
  boost::asio::awaitable<void> wait_for_signals();
  boost::asio::awaitable<void> wait_for_reloads();
  boost::asio::awaitable<void> drain();
  void stop_all();

  const config& cfg_;
  captures::store* store_;
  relay_metrics metrics_;
  own_connections own_upstream_connections_;
  event_hub events_;
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> tls_acceptor_;   // implicit TLS (SMTPS)
  std::unique_ptr<server_tls> client_tls_;
  std::unique_ptr<boost::asio::ssl::context> upstream_tls_;
  std::unique_ptr<sink_server> sink_;
  std::unique_ptr<policies::engine> faults_;
  std::unique_ptr<relay_context> ctx_;
  // Destroyed before contexts_ (declared after it): no lookup answer is posted to an
  // io_context that is gone (upstream_lookup.hpp).
  std::unique_ptr<name_lookups> lookups_;
  // Registered in start(), before the listeners are announced: a SIGHUP sent by a service
  // manager right after READY=1 is a reload, never the default action (termination).
  std::unique_ptr<boost::asio::signal_set> stop_signals_;
  std::unique_ptr<boost::asio::signal_set> reload_signals_;
  std::function<void()> reload_handler_;
  std::uint64_t session_number_ = 0;   // accept loops run on contexts_[0] only
  std::mutex sessions_mutex_;
  std::vector<std::weak_ptr<session>> sessions_;
  std::atomic<bool> draining_{false};
  // Accepted connections whose session is still to be built on its own thread (admit): they
  // count toward max_sessions, and a drain waits for them.
  std::atomic<std::size_t> launches_pending_{0};
  // The last session ended during a drain (relay_context::session_closed): the drain's wait.
  std::optional<wake_signal> sessions_closed_;
  // The last session ended: free heap pages go back to the kernel after a moment's idle.
  std::optional<idle_memory> idle_memory_;
};

}  // namespace mailtap
