// One relayed SMTP session: a coroutine tree on one io_context thread (its implicit
// strand) that owns both sockets, their outboxes, the relay_fsm and the capture handle.
// Coroutines: a reader per leg, a writer per leg, a watchdog for the fsm's timers. The
// one dispatch point (execute) turns fsm actions into outbox writes, closes and deadlines.
// Threading: everything runs on the session's executor; drain() may be called from any thread.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "captures/writer.hpp"
#include "protocol/relay_fsm.hpp"
#include "relay/config.hpp"
#include "relay/metrics.hpp"

namespace boost::asio::ssl {
class context;
template <typename Stream>
class stream;
}  // namespace boost::asio::ssl

namespace mailtap::policies {
class engine;
}  // namespace mailtap::policies

namespace mailtap {

struct server_tls;

// "20260102-150405-1a2b3c4d-000042": UTC start time, a per-process nonce, the session number.
// Capture files are named by it; the listener names connections it refuses by it too.
std::string make_session_id(std::uint64_t number);

// What every session shares: immutable config and process-wide services.
struct relay_context {
  const config& cfg;
  captures::store* captures;           // may be null (tests)
  relay_metrics& metrics;
  endpoint upstream;                   // resolved target (the built-in sink's port when builtin)
  std::string upstream_label;          // "builtin" or "host:port", for captures
  std::string listen_label;
  std::uint64_t master_seed = 0;
  server_tls* client_tls = nullptr;                       // null: no TLS on the client leg
  boost::asio::ssl::context* upstream_tls = nullptr;      // null: the upstream leg stays plaintext
  bool upstream_is_builtin = false;                       // verify the chain only (our own cert)
  policies::engine* faults = nullptr;                     // null: no fault injection (tests)
};

class session : public std::enable_shared_from_this<session> {
 public:
  // `implicit_tls`: the client connected to the SMTPS listener; TLS starts before the banner.
  session(boost::asio::ip::tcp::socket client, const relay_context& ctx, std::uint64_t number,
          bool implicit_tls = false);
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

  using tls_stream = boost::asio::ssl::stream<tcp::socket&>;

  // One leg's output queue and TLS state. The writer coroutine owns the socket's writes and
  // performs a requested handshake once everything queued before it is written.
  struct outbox {
    std::string pending;
    std::string inflight;
    bool close_requested = false;
    bool reset_requested = false;     // close with RST once what is queued is written
    bool closed = false;
    bool eof_seen = false;            // the peer finished sending (for lingering close)
    bool tls_requested = false;       // start_tls executed; the writer performs it
    bool tls_busy = false;            // a handshake (or a reconnect) owns the socket: readers stay away
    bool reconnect_requested = false; // reconnect_upstream executed; the writer performs it
    std::unique_ptr<tls_stream> tls;
    std::unique_ptr<std::array<char, 16 * 1024>> tls_buffer;   // only TLS legs have their own
    // Faults: write shaping (throttle, slice) and segment breaks (offset into pending, pause).
    protocol::leg_shaping shaping;
    std::vector<std::pair<std::size_t, std::chrono::microseconds>> breaks;
    std::vector<std::pair<std::size_t, std::chrono::microseconds>> inflight_breaks;
    std::size_t size() const { return pending.size() + inflight.size(); }
    ~outbox();
  };

  void spawn(boost::asio::awaitable<void> work);
  boost::asio::awaitable<void> run();
  boost::asio::awaitable<void> connect_upstream();
  void upstream_unreachable(const std::string& why);
  // Opens upstream_ to the upstream (resolve, connect, deadline). Empty on success, else why.
  boost::asio::awaitable<std::string> dial_upstream();
  // The plaintext fall-back after a failed upstream handshake: drop the connection, dial again.
  boost::asio::awaitable<void> reconnect_upstream();
  boost::asio::awaitable<void> read_leg(protocol::leg l);
  boost::asio::awaitable<void> write_leg(protocol::leg l);
  boost::asio::awaitable<void> watchdog();
  boost::asio::awaitable<void> handshake(protocol::leg l);
  boost::asio::awaitable<void> write_bytes(protocol::leg l, boost::system::error_code& ec);
  boost::asio::awaitable<void> write_shaped(protocol::leg l, boost::system::error_code& ec);
  boost::asio::awaitable<void> wait_for_change(clock::duration at_most);

  // The one way the shell tells the machine something: the event, stamped with the session's
  // clock, then always the dispatch of the actions it asked for. No call of the machine is
  // followed by a dispatch the caller has to remember.
  template <typename... Params, typename... Args>
  void feed(void (protocol::relay_fsm::*event)(std::uint64_t, Params...), Args&&... args) {
    (fsm_.*event)(now_us(), std::forward<Args>(args)...);
    dispatch();
  }
  // Takes the machine's actions and carries them out (execute); what follows a capture barrier
  // waits for the recorder.
  void dispatch();
  void hold_until_recorded(std::vector<protocol::action>& actions, std::size_t from);
  void hold_input_while_capture_backlogged();
  void execute(std::vector<protocol::action>& actions);
  void notify();
  void wake_writer(protocol::leg l) { (l == protocol::leg::client ? client_writer_wake_ : upstream_writer_wake_).cancel(); }
  std::uint64_t now_us() const;
  tcp::socket& socket_of(protocol::leg l) { return l == protocol::leg::client ? client_ : upstream_; }
  outbox& outbox_of(protocol::leg l) { return l == protocol::leg::client ? client_out_ : upstream_out_; }
  bool reading_paused(protocol::leg l) const;

  tcp::socket client_;
  tcp::socket upstream_;
  const relay_context& ctx_;
  std::uint64_t number_;
  std::string id_;
  clock::time_point start_;
  std::unique_ptr<captures::session_capture> capture_;
  std::unique_ptr<protocol::fault_advisor> advisor_;   // before fsm_: the machine holds a pointer to it
  protocol::relay_fsm fsm_;
  outbox client_out_;
  outbox upstream_out_;
  timer changed_;                       // broadcast wake-up for paused readers and lingering writers
  // Each writer's own wake-up, cancelled only when its leg has bytes, a close or a handshake
  // to do: the per-command path wakes one coroutine, not every waiter.
  timer client_writer_wake_;
  timer upstream_writer_wake_;
  timer watchdog_timer_;
  clock::time_point client_deadline_ = clock::time_point::max();
  clock::time_point upstream_deadline_ = clock::time_point::max();
  clock::time_point fault_deadline_ = clock::time_point::max();
  std::vector<protocol::action> held_;  // actions waiting for a capture barrier
  int barriers_pending_ = 0;
  bool upstream_connected_ = false;
  bool upstream_wanted_ = false;        // the machine asked for connect_upstream
  bool machine_paused_client_ = false;  // the machine's last pause_reading for the client
  bool implicit_tls_ = false;
  bool input_held_ = false;             // the machine is holding client input for the recorder
  bool counted_active_ = true;
};


}  // namespace mailtap
