// One relayed SMTP session: a coroutine tree on one io_context thread (its implicit
// strand) that owns both legs (leg_stream: connection, TLS, outbox), the relay_fsm and the
// capture handle. Coroutines: open_upstream, a reader per leg, a writer per leg, a watchdog
// for the fsm's timers; each holds the session, so its destructor is their join. The one
// dispatch point (carry_out, a std::visit) turns fsm actions into outbox writes, closes,
// deadlines and waits.
// Threading: everything runs on the session's executor; drain() may be called from any thread.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "captures/writer.hpp"
#include "protocol/relay_fsm.hpp"
#include "relay/client_identity.hpp"
#include "relay/event_hub.hpp"
#include "relay/config.hpp"
#include "relay/leg_stream.hpp"
#include "relay/metrics.hpp"
#include "relay/own_connections.hpp"
#include "relay/session_id.hpp"
#include "relay/session_tally.hpp"
#include "relay/upstream_lookup.hpp"
#include "relay/wake_signal.hpp"

namespace mailtap::policies {
class engine;
}  // namespace mailtap::policies

namespace mailtap {

struct server_tls;


// Where a session's upstream leg goes: the configured upstream (relay_context::default_target),
// or, under transparent interception, the connection's original destination.
struct upstream_target {
  endpoint where;
  std::string label;     // "builtin" or "host:port", for captures
  bool builtin = false;  // the built-in sink: verify the chain only (our own cert)
};

// What every session shares: immutable config and process-wide services.
struct relay_context {
  const config& cfg;
  captures::store* captures;           // may be null (tests)
  relay_metrics& metrics;
  upstream_target upstream;            // the configured one (the built-in sink's port when builtin)
  std::string listen_label;
  std::uint64_t master_seed = 0;
  server_tls* client_tls = nullptr;                       // null: no TLS on the client leg
  boost::asio::ssl::context* upstream_tls = nullptr;      // null: the upstream leg stays plaintext
  policies::engine* faults = nullptr;                     // null: no fault injection (tests)
  // Opens the upstream leg (resolve, connect, deadline): empty on success, else why. Empty
  // function: TCP to `upstream` (tests give an in-memory pipe to the leg instead).
  std::function<boost::asio::awaitable<std::string>(leg_stream& upstream)> dial_upstream;
  // Called as each session ends (its coroutines are done), after sessions_active is lowered:
  // the server's drain waits on it. Any thread. Empty: nobody waits (tests).
  std::function<void()> session_closed;
  event_hub* events = nullptr;                            // live events (admin API); null: none
  // mailtap's own addresses, never dialled as an upstream whatever names them (a config, a name
  // that resolves to one, a transparent redirect): the admin API's (admin/README.md, "Trust
  // boundary"), so SMTP bytes never reach the control plane, and its SMTP listeners', so a
  // session never relays to mailtap itself, which would open sessions until max_sessions.
  // Set before the server runs.
  struct refused_upstream {
    boost::asio::ip::tcp::endpoint at;
    std::string what;   // "admin API", "SMTP listener": for the session's 421 and the start-up error
    std::string flag;   // what sets that address: its flag and its config key ("--listen, or listen in the config file")
  };
  std::vector<refused_upstream> refused_upstreams;
  // mailtap's own upstream connections by local endpoint, for the listeners to know one that
  // comes back (own_connections.hpp). Null: not tracked (tests).
  own_connections* own_upstream_connections = nullptr;
  // Looks up a named upstream with a deadline (upstream_lookup.hpp). Null: only literal
  // addresses are dialled (tests).
  name_lookups* lookups = nullptr;
  // The entry that refuses e: its endpoint, or the same port of a refused wildcard address on
  // any of this machine's own addresses (loopback or an interface's: is_own_address). Null
  // when e may be dialled.
  const refused_upstream* refusal_of(const boost::asio::ip::tcp::endpoint& e) const;
};

class session : public std::enable_shared_from_this<session> {
 public:
  // `implicit_tls`: the client connected to the SMTPS listener; TLS starts before the banner.
  // `client`: the accepted connection (a tcp_pipe; tests give an in-memory one), whose
  // completions run on `executor`, the session's strand.
  // `who`: the client as captures, fault rules and the upstream see it (client_identity.hpp).
  // `target`: where the upstream leg goes (ctx.upstream unless intercepted transparently).
  session(boost::asio::any_io_executor executor, std::unique_ptr<byte_pipe> client, const relay_context& ctx,
          std::uint64_t number, const client_identity& who, bool implicit_tls = false,
          std::optional<upstream_target> target = std::nullopt);
  ~session();

  void start();
  // Stop accepting new transactions: 421 now if idle, after the current one otherwise.
  void drain();
  // Close both sockets at once (drain deadline passed).
  void abort();

 private:
  using tcp = boost::asio::ip::tcp;
  using clock = std::chrono::steady_clock;
  using timer = boost::asio::steady_timer;

  void spawn(boost::asio::awaitable<void> work);
  boost::asio::awaitable<void> run();
  // The connect_upstream action: dial once the client leg is ready, then start the legs.
  boost::asio::awaitable<void> open_upstream();
  // Spawns the leg readers and writers and the watchdog, once the upstream is open (or not wanted).
  void start_legs();
  void upstream_unreachable(const std::string& why);
  // Opens upstream_ to the upstream (resolve, connect, deadline). Empty on success, else why.
  boost::asio::awaitable<std::string> dial_upstream();
  // Connects `socket` to the first of `to` that answers; the last error when none does, and
  // each address's in `failures`. Each address but the last gets an equal share of the time
  // left before `until`, so that one that drops the SYN leaves time for the next (RFC 5321
  // 5.1: try the addresses in turn). Each connection is in ctx_.own_upstream_connections from
  // its connect(2) on, before the handshake can complete: a listener that accepts it back
  // knows it (own_connections.hpp).
  boost::asio::awaitable<boost::system::error_code> connect_first(boost::asio::ip::tcp::socket& socket,
                                                                  const std::vector<boost::asio::ip::tcp::endpoint>& to,
                                                                  clock::time_point until,
                                                                  std::vector<std::string>& failures);
  static boost::system::error_code forget_write_interest(boost::asio::ip::tcp::socket& socket,
                                                         const boost::asio::ip::tcp& protocol);
  void forget_own_connection();
  // The plaintext fall-back after a failed upstream handshake: drop the connection, dial again.
  boost::asio::awaitable<void> reconnect_upstream();
  boost::asio::awaitable<void> read_leg(protocol::leg l);
  boost::asio::awaitable<void> write_leg(protocol::leg l);
  boost::asio::awaitable<void> watchdog();
  void abort_stalled_write(protocol::leg l, clock::time_point now, std::chrono::milliseconds limit);
  // A leg's outbox is above its high watermark (its peer is slow, or stopped reading).
  bool outbox_full() const;
  boost::asio::awaitable<void> handshake(protocol::leg l);
  bool took_plaintext_before_handshake();

  // The one way the shell tells the machine something: the event, stamped with the session's
  // clock, then always the dispatch of the actions it asked for. No call of the machine is
  // followed by a dispatch the caller has to remember.
  template <typename... Params, typename... Args>
  void feed(void (protocol::relay_fsm::*event)(std::uint64_t, Params...), Args&&... args) {
    fsm_.give_back_actions(borrow_spare_actions());
    (fsm_.*event)(now_us(), std::forward<Args>(args)...);
    dispatch();
  }
  // The I/O thread's spare actions vector, lent to the machine for one event and returned by
  // dispatch with its actions carried out: no vector is allocated per event, and an idle session
  // holds none (its memory is README Performance's W6).
  static std::vector<protocol::action> borrow_spare_actions();
  static void return_spare_actions(std::vector<protocol::action>&& used);
  // Takes the machine's actions and carries them out (execute); what follows a capture barrier
  // waits for the recorder.
  void dispatch();
  void fold_stats();
  void settle_capture();
  void hold_until_recorded(std::vector<protocol::action>& actions, std::size_t from);
  bool carry_out(protocol::action& action);
  void hold_input_while_capture_backlogged();
  void wake_when_recorder_catches_up();
  void execute(std::vector<protocol::action>& actions);
  void report_upstream_backlog();
  void wake_due_writers();
  void wake_writer(protocol::leg l) { (l == protocol::leg::client ? client_writer_wake_ : upstream_writer_wake_).cancel(); }
  std::uint64_t now_us() const;
  leg_stream& leg_of(protocol::leg l) { return l == protocol::leg::client ? client_ : upstream_; }
  bool reading_paused(protocol::leg l) const;
  void restart_after_shaped_write(protocol::leg l);
  bool pacing(protocol::leg l, clock::time_point now) const;

  boost::asio::any_io_executor executor_;
  leg_stream client_;
  leg_stream upstream_;
  const relay_context& ctx_;
  upstream_target target_;
  std::uint64_t number_;
  std::string id_;
  clock::time_point start_;
  std::unique_ptr<captures::session_capture> capture_;
  std::unique_ptr<protocol::fault_advisor> advisor_;   // before fsm_: the machine holds a pointer to it
  session_tally tally_;                                 // before fsm_: its observer, in front of capture_
  protocol::relay_fsm fsm_;
  protocol::relay_stats folded_;   // fsm_'s counters already added to ctx_.metrics (fold_stats)
  // A leg's state changed (an outbox drained, a pause lifted, a handshake done, the recorder
  // caught up, the peer's FIN): paused readers, lingering writers and open_upstream re-check.
  wake_signal state_changed_;
  // Each writer's own wake-up, cancelled only when its leg has bytes, a close or a handshake
  // to do: the per-command path wakes one coroutine, not every waiter.
  timer client_writer_wake_;
  timer upstream_writer_wake_;
  timer watchdog_timer_;
  clock::time_point client_deadline_ = clock::time_point::max();
  clock::time_point upstream_deadline_ = clock::time_point::max();
  clock::time_point fault_deadline_ = clock::time_point::max();
  // Each leg's timer as the machine last armed it (arm_timer's `after`): restarted from the
  // end of a write the relay paced itself (restart_after_shaped_write).
  std::chrono::milliseconds client_timer_after_{0};
  std::chrono::milliseconds upstream_timer_after_{0};
  std::vector<protocol::action> held_;  // actions waiting for a capture barrier
  int barriers_pending_ = 0;
  bool client_write_due_ = false;       // bytes added to the outbox in this execute
  bool upstream_write_due_ = false;
  bool upstream_connected_ = false;
  // The upstream connection's local endpoint while it is in ctx_.own_upstream_connections.
  std::optional<boost::asio::ip::tcp::endpoint> own_local_;
  bool upstream_requested_ = false;     // connect_upstream: open_upstream starts the legs
  bool client_ready_ = false;           // the client leg's implicit-TLS handshake (if any) is done
  bool client_reader_started_ = false;  // read_leg(client) runs (from the dial on, open_upstream)
  bool upstream_backlog_reported_ = false;   // the machine was last told the upstream is backed up
  bool recorder_wake_requested_ = false;   // the store will say when its backlog clears
  bool machine_paused_client_ = false;  // the machine's last pause_reading for the client
  bool implicit_tls_ = false;
  bool input_held_ = false;             // the machine is holding client input for the recorder
  bool counted_active_ = true;
};


}  // namespace mailtap
