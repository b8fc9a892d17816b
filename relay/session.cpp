// Session coroutines and the dispatch point. Reading order: set-up, run/connect, the leg
// readers and writers, the watchdog, dispatch (feed/dispatch/execute), tear-down.
#include "relay/session.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <sstream>
#include <utility>

#include "policies/engine.hpp"
#include "policies/random.hpp"
#include "relay/own_addresses.hpp"
#include "relay/tls_context.hpp"

namespace mailtap {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using protocol::leg;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

namespace {
// Outbox bytes above which the leg feeding it stops being read (a 64 KiB high watermark
// per direction: ARCHITECTURE.md, "Invariants", bounded memory). Writers drain the whole outbox at once, so no low mark is needed.
constexpr std::size_t outbox_high_watermark = 64 * 1024;
// After our FIN, how long we keep reading so unread input does not turn the last reply into a RST.
constexpr auto linger_after_close = 2s;
// How long a TLS close_notify may take before the FIN goes anyway.
constexpr auto tls_close_notify_limit = std::chrono::milliseconds(1000);

// After a failed write's error: how many of the bytes recorded as sent never left.
std::string unwritten_text(std::size_t n) {
  if (n == 0) return {};
  return "; the last " + std::to_string(n) + (n == 1 ? " byte" : " bytes") + " recorded as sent were never written";
}

}  // namespace

namespace {

protocol::relay_options relay_options_from(const relay_context& ctx, const upstream_target& target, bool implicit_tls,
                                           const client_identity& who) {
  protocol::relay_options o;
  o.eol = ctx.cfg.bare_eol;
  o.timeouts = ctx.cfg.timeouts;
  o.name = ctx.cfg.relay_name;
  o.upstream = target.label;
  o.record_auth_username = ctx.cfg.record_auth_username;
  o.upstream_preamble = upstream_preamble(ctx.cfg.identity, who);
  o.xclient = xclient_identity_for(ctx.cfg.identity, who);
  o.end_waits_for_capture = ctx.captures != nullptr;   // open_capture records every session then
  o.tls.offer_starttls = ctx.client_tls != nullptr && ctx.cfg.tls.offer_starttls;
  o.tls.implicit_client_tls = implicit_tls;
  // Without an upstream TLS context nothing can be secured upstream: only `never` is honest.
  o.tls.upstream = ctx.upstream_tls ? ctx.cfg.tls.upstream : protocol::upstream_tls_mode::never;
  o.tls.upstream_verification_required = !target.builtin && upstream_verification_required(ctx.cfg.tls);
  return o;
}

// How this relay checks the upstream's certificate during the handshake (tls_context.hpp).
peer_verification upstream_check_for(const tls_config& t) {
  if (!t.upstream_fingerprint.empty()) return peer_verification::off;   // the pin is compared after it
  switch (effective_upstream_verify(t)) {
    case upstream_verify::none: return peer_verification::off;
    case upstream_verify::record: return peer_verification::record;
    case upstream_verify::require: return peer_verification::enforce;
  }
  return peer_verification::enforce;
}

}  // namespace

// ---------------------------------------------------------------- set-up

static std::unique_ptr<captures::session_capture> open_capture(const relay_context& ctx, const std::string& id,
                                                               std::uint64_t number, const client_identity& who,
                                                               const upstream_target& target) {
  if (!ctx.captures) return nullptr;
  captures::session_info info;
  info.id = id;
  info.seed = policies::session_seed(ctx.master_seed, number);   // the seed of the session's fault generator
  info.master_seed = ctx.master_seed;
  info.number = number;
  info.client = who.client_label();
  info.listen = ctx.listen_label;
  info.upstream = target.label;
  info.bare_eol = std::string(protocol::to_string(ctx.cfg.bare_eol));
  // Says which normalize this is: a capture without it is from when normalize read a bare CR
  // or LF as a line ending (captures/FORMAT.md; replay frames it so).
  if (ctx.cfg.bare_eol == protocol::bare_eol_mode::normalize) info.normalize_to = "space";
  info.started_at = std::chrono::system_clock::now();
  info.started_mono_us = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
  return ctx.captures->begin(info);
}

session::session(asio::any_io_executor executor, std::unique_ptr<byte_pipe> client, const relay_context& ctx,
                 std::uint64_t number, const client_identity& who, bool implicit_tls,
                 std::optional<upstream_target> target)
    : executor_(std::move(executor)),
      client_(std::move(client)),
      upstream_(std::make_unique<tcp_pipe>(tcp::socket(executor_))),
      ctx_(ctx),
      target_(target ? std::move(*target) : ctx.upstream),
      number_(number),
      id_(make_session_id(number)),
      start_(clock::now()),
      capture_(open_capture(ctx, id_, number, who, target_)),
      advisor_(ctx.faults ? ctx.faults->open_session(number, who.client_label(), implicit_tls && ctx.client_tls)
                          : nullptr),
      tally_(capture_.get(), ctx.metrics, ctx.events, id_),
      fsm_(relay_options_from(ctx, target_, implicit_tls && ctx.client_tls, who), &tally_, advisor_.get()),
      state_changed_(executor_),
      client_writer_wake_(executor_, clock::time_point::max()),
      upstream_writer_wake_(executor_, clock::time_point::max()),
      watchdog_timer_(executor_, clock::time_point::max()) {
  ++ctx_.metrics.sessions_active;
  implicit_tls_ = implicit_tls && ctx.client_tls;
  tally_.announce_start(who.client_label(), target_.label);
}

session::~session() {
  forget_own_connection();
  tally_.flush();   // before sessions_active falls: a scrape never sees the session gone and its stages missing
  fold_stats();
  const auto& s = fsm_.stats();
  if (s.blackholed > 0)
    spdlog::warn("session {}: a blackhole fault answered {} message(s) with 250; nothing was delivered", id_, s.blackholed);
  --ctx_.metrics.sessions_active;
  spdlog::debug("session {} closed", id_);
  if (ctx_.session_closed) ctx_.session_closed();
}

// An unexpected error ends the session at its boundary, logged with the
// session id and counted; the capture still gets its end record.
void session::spawn(asio::awaitable<void> work) {
  asio::co_spawn(executor_, std::move(work), [self = shared_from_this()](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      ++self->ctx_.metrics.session_errors;
      spdlog::warn("session {}: unexpected error: {}", self->id_, ex.what());
      self->feed(&protocol::relay_fsm::on_abort, std::string_view(ex.what()));
    }
  });
}

void session::start() { spawn(run()); }

void session::drain() {
  asio::post(executor_, [self = shared_from_this()] {
    self->feed(&protocol::relay_fsm::on_drain);
  });
}

void session::abort() {
  // The machine answers 421 4.3.2 and closes both legs; the writers flush that reply first.
  asio::post(executor_, [self = shared_from_this()] {
    self->feed(&protocol::relay_fsm::on_drain_deadline);
  });
}

std::uint64_t session::now_us() const {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - start_).count());
}

// ---------------------------------------------------------------- run

asio::awaitable<void> session::run() {
  feed(&protocol::relay_fsm::on_start);   // a fault decided at connect may answer (or shape the legs) now
  if (implicit_tls_) co_await handshake(leg::client);   // SMTPS: TLS before the banner
  client_ready_ = true;
  state_changed_.notify();   // open_upstream waits for the client leg
  if (!upstream_requested_) start_legs();   // a fault answers the client without an upstream
}

// The connect_upstream action: dial once the client leg is ready (an implicit-TLS handshake
// is done), then start both legs.
asio::awaitable<void> session::open_upstream() {
  co_await state_changed_.wait_until([this] { return client_ready_; });
  // The client is read during the dial too: one that leaves (a health check's connect and
  // close) ends the session, and with it a lookup or dial nobody waits for any more. What it
  // sends early waits in the machine until the banner.
  if (!fsm_.finished()) {
    client_reader_started_ = true;
    spawn(read_leg(leg::client));
  }
  if (!fsm_.finished()) {
    std::string failed = co_await dial_upstream();
    if (fsm_.finished()) {
      // The session ended while it dialled (a drain, the client gone) and cancelled the dial:
      // the upstream did not fail, and is neither counted nor logged as failing. A connection
      // that completed all the same is closed unused.
      if (failed.empty()) upstream_.close();
    } else if (!failed.empty()) {
      upstream_unreachable(failed);
    } else {
      upstream_connected_ = true;
      feed(&protocol::relay_fsm::on_upstream_connected);
    }
  }
  if (upstream_connected_ && ctx_.cfg.tls.upstream_implicit && ctx_.upstream_tls && !fsm_.finished())
    co_await handshake(leg::upstream);
  start_legs();
}

void session::start_legs() {
  spawn(write_leg(leg::client));
  if (upstream_connected_) {
    spawn(write_leg(leg::upstream));
    spawn(read_leg(leg::upstream));
  }
  // Also when a fault or an unreachable upstream already ended the session: the client
  // leg's lingering close waits for the client's FIN, and only a reader sees it.
  if (!client_reader_started_) spawn(read_leg(leg::client));
  client_reader_started_ = true;
  spawn(watchdog());
}

// Counted, logged at warn with the session id (rate-limited: a dead upstream fails every
// session), and handed to the machine, which answers the client.
void session::upstream_unreachable(const std::string& why) {
  ++ctx_.metrics.upstream_unreachable;
  warn_limited(ctx_.metrics.warnings, warn_kind::upstream_unreachable, "session " + id_ + ": upstream " + why);
  feed(&protocol::relay_fsm::on_upstream_unreachable, std::string_view(why));
}

namespace {
// An IPv4-mapped IPv6 address (::ffff:127.0.0.1) reaches its IPv4 address.
asio::ip::address reached(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  return a;
}
}  // namespace

const relay_context::refused_upstream* relay_context::refusal_of(const asio::ip::tcp::endpoint& e) const {
  const auto target = reached(e.address());
  for (const auto& r : refused_upstreams) {
    if (r.at.port() != e.port()) continue;
    const auto at = reached(r.at.address());
    if (at == target) return &r;
    // A dial to 0.0.0.0 or :: reaches this machine itself (Linux connects it to loopback).
    if (target.is_unspecified()) return &r;
    if (at.is_unspecified() && is_own_address(target)) return &r;
  }
  return nullptr;
}

namespace {
// "30 s", "250 ms": a configured timeout as the 421's text names it.
std::string duration_words(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + " s";
  return std::to_string(d.count()) + " ms";
}
}  // namespace

asio::awaitable<std::string> session::dial_upstream() {
  if (ctx_.dial_upstream) co_return co_await ctx_.dial_upstream(upstream_);
  auto& socket = *upstream_.pipe().tcp_socket();   // a close_leg during the dial closes it: the dial ends
  // timeouts.upstream_connect covers the name's lookup and the dial of all its addresses.
  const auto until = clock::now() + ctx_.cfg.upstream_connect_timeout;
  std::vector<tcp::endpoint> endpoints;
  boost::system::error_code aec;
  auto address = asio::ip::make_address(target_.where.host, aec);
  if (!aec) {
    endpoints.emplace_back(address, target_.where.port);   // a literal address needs no lookup
  } else if (ctx_.lookups == nullptr) {
    co_return "cannot resolve " + target_.where.host + ": no resolver";
  } else {
    // Ends at `until`, or as soon as the session does (a drain, the client gone): a lookup that
    // does not answer holds neither the client nor a SIGTERM (upstream_lookup.hpp).
    auto found = co_await (ctx_.lookups->lookup(executor_, target_.where.host, target_.where.port, until) ||
                           state_changed_.wait_until([this] { return fsm_.finished(); }));
    if (found.index() == 1) co_return "cannot resolve " + target_.where.host + ": the session ended";
    auto& looked_up = std::get<0>(found);
    if (looked_up.timed_out)
      co_return "cannot resolve " + target_.where.host + ": no answer within " +
                duration_words(ctx_.cfg.upstream_connect_timeout) + " (timeouts.upstream_connect)";
    if (!looked_up.error.empty()) co_return "cannot resolve " + target_.where.host + ": " + looked_up.error;
    endpoints = std::move(looked_up.addresses);
  }
  std::vector<tcp::endpoint> allowed;
  const relay_context::refused_upstream* refused = nullptr;
  for (const auto& entry : endpoints) {
    if (const auto* r = ctx_.refusal_of(entry)) refused = r;
    else allowed.push_back(entry);
  }
  if (allowed.empty() && refused) co_return target_.where.to_string() + " is mailtap's own " + refused->what + ", never an upstream";
  if (allowed.empty()) co_return "cannot resolve " + target_.where.host + ": no address";
  timer deadline(executor_);
  deadline.expires_at(until);
  std::vector<std::string> failures;
  auto result = co_await (connect_first(socket, allowed, until, failures) || deadline.async_wait(as_tuple(use_awaitable)));
  // With several addresses, each one's failure is named; the one the deadline cut is the next
  // after those that failed (they are tried in order).
  if (result.index() == 1 && failures.size() < allowed.size()) {
    std::ostringstream where;
    where << allowed[failures.size()];
    failures.push_back(where.str() + ": timed out");
  }
  std::string tried;
  for (const auto& f : failures) tried += (tried.empty() ? " (" : "; ") + f;
  if (!tried.empty() && allowed.size() > 1) tried += ")";
  else tried.clear();
  if (result.index() == 1) {
    forget_own_connection();
    co_return "connect to " + target_.where.to_string() + " timed out" + tried;
  }
  if (auto cec = std::get<0>(result))
    co_return "connect to " + target_.where.to_string() + ": " + cec.message() + tried;
  static_cast<tcp_pipe&>(upstream_.pipe()).connected();
  co_return std::string();
}

// asio::async_connect over a range, with the connection recorded as mailtap's own between its
// connect(2) and its completion: on loopback the handshake is done inside connect(2), and the
// listener may accept a redirected connection before this coroutine resumes.
asio::awaitable<boost::system::error_code> session::connect_first(tcp::socket& socket,
                                                                  const std::vector<tcp::endpoint>& to,
                                                                  clock::time_point until,
                                                                  std::vector<std::string>& failures) {
  boost::system::error_code last = asio::error::host_not_found;
  auto failed = [&](const tcp::endpoint& ep, boost::system::error_code why) {
    last = why;
    std::ostringstream where;
    where << ep;
    failures.push_back(where.str() + ": " + why.message());
  };
  for (std::size_t i = 0; i < to.size(); ++i) {
    const auto& ep = to[i];
    boost::system::error_code ec;
    forget_own_connection();
    socket.close(ec);
    socket.open(ep.protocol(), ec);
    if (!ec) socket.non_blocking(true, ec);
    if (ec) {
      failed(ep, ec);
      continue;
    }
    const int r = ::connect(socket.native_handle(), ep.data(), static_cast<socklen_t>(ep.size()));
    if (r != 0 && errno != EINPROGRESS) {
      failed(ep, boost::system::error_code(errno, boost::system::system_category()));
      continue;
    }
    const auto local = socket.local_endpoint(ec);
    if (!ec && ctx_.own_upstream_connections) {
      ctx_.own_upstream_connections->add(local, ep);
      own_local_ = local;
    }
    if (r != 0) {
      // On loopback the handshake is done by the time connect(2) returns EINPROGRESS: a look
      // with poll(2) saves the reactor's wait, and with it the write interest it would leave
      // registered (forget_write_interest). Elsewhere the dial is waited for.
      pollfd done{socket.native_handle(), POLLOUT, 0};
      const bool waited = ::poll(&done, 1, 0) != 1;
      if (waited && i + 1 < to.size()) {
        // Not the last address: this one gets its share of the time left, then the next is tried.
        timer share(executor_);
        share.expires_after((until - clock::now()) / static_cast<int>(to.size() - i));
        auto first = co_await (socket.async_wait(tcp::socket::wait_write, as_tuple(use_awaitable)) ||
                               share.async_wait(as_tuple(use_awaitable)));
        if (first.index() == 1) {
          // Cancelled with the dial (the deadline, or the session ended), or the share ran out.
          auto [sec] = std::get<1>(first);
          if (sec || !socket.is_open()) co_return asio::error::operation_aborted;
          failed(ep, asio::error::timed_out);
          continue;
        }
        auto [wec] = std::get<0>(first);
        if (wec || !socket.is_open()) co_return wec ? wec : asio::error::operation_aborted;
      } else if (waited) {
        auto [wec] = co_await socket.async_wait(tcp::socket::wait_write, as_tuple(use_awaitable));
        // Closed under the dial (close_leg) or cancelled (the deadline): no other address is tried.
        if (wec || !socket.is_open()) co_return wec ? wec : asio::error::operation_aborted;
      }
      int error = 0;
      socklen_t size = sizeof error;
      if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_ERROR, &error, &size) != 0) error = errno;
      if (error != 0) {
        failed(ep, boost::system::error_code(error, boost::system::system_category()));
        continue;
      }
      if (waited) {
        if (const auto rec = forget_write_interest(socket, ep.protocol())) {
          failed(ep, rec);
          continue;
        }
      }
    }
    co_return boost::system::error_code{};
  }
  forget_own_connection();
  co_return last;
}

// Boost's epoll reactor keeps EPOLLOUT in a socket's registration once a write (here the
// connect) has waited, and every later wait for input re-arms it with epoll_ctl(MOD): an
// established socket is writable, so each wait for the upstream's reply woke the thread once
// for nothing. Registered again, the socket waits for input only until a write has to wait.
// An error leaves the socket closed.
boost::system::error_code session::forget_write_interest(tcp::socket& socket, const tcp& protocol) {
  boost::system::error_code ec;
  const auto fd = socket.release(ec);
  if (ec) return ec;
  socket.assign(protocol, fd, ec);
  if (ec) {
    ::close(fd);
    return ec;
  }
  socket.non_blocking(true, ec);
  return ec;
}

void session::forget_own_connection() {
  if (own_local_ && ctx_.own_upstream_connections) ctx_.own_upstream_connections->remove(*own_local_);
  own_local_.reset();
}

asio::awaitable<void> session::reconnect_upstream() {
  // The failed handshake left the connection unusable: no close_notify, no QUIT, just close.
  upstream_.drop_tls();
  upstream_.close();
  upstream_.eof_seen = false;
  spdlog::info("session {}: upstream TLS failed; new plaintext connection to {}", id_, target_.where.to_string());
  std::string failed = co_await dial_upstream();
  if (fsm_.finished()) co_return;
  if (!failed.empty()) {
    upstream_unreachable(failed);
    co_return;
  }
  feed(&protocol::relay_fsm::on_upstream_reconnected);
}

// ---------------------------------------------------------------- legs

bool session::outbox_full() const {
  return client_.size() > outbox_high_watermark || upstream_.size() > outbox_high_watermark;
}

bool session::reading_paused(leg l) const {
  if (fsm_.finished()) return false;   // lingering: read and discard until the peer's FIN
  if (client_.size() > outbox_high_watermark) return true;
  if (l == leg::client)
    return machine_paused_client_ || upstream_.size() > outbox_high_watermark ||
           (ctx_.captures && ctx_.captures->backlogged());
  return false;
}

asio::awaitable<void> session::read_leg(leg l) {
  auto& box = leg_of(l);
  for (;;) {
    // Paused: wait for what paused the leg to change. A write drains an outbox, the machine
    // resumes, a handshake or reconnect finishes, the recorder catches up: each notifies.
    while (reading_paused(l) || box.handshake_due() || box.tls_busy || (box.reconnect_requested && !box.close_requested)) {
      if (l == leg::client) {
        hold_input_while_capture_backlogged();
        wake_when_recorder_catches_up();
      }
      // An outbox is full: the watchdog looks for a peer that stopped reading (every second).
      if (outbox_full() && watchdog_timer_.expiry() > clock::now() + 1s) watchdog_timer_.cancel();
      co_await state_changed_.wait();
    }
    if (l == leg::client) hold_input_while_capture_backlogged();
    auto [ec, bytes, again] = co_await box.read_some();
    if (box.take_renegotiation_refused())
      tally_.on_note(now_us(), std::string(l == leg::client ? "the client" : "the upstream") +
                                   std::string(protocol::note_renegotiation_refused));
    if (again) continue;
    if (ec) {
      box.eof_seen = true;
      if (!fsm_.finished()) {
        // A FIN (TCP, or TLS without close_notify) ends the client's input, not its ability to
        // read our replies; anything else means it is gone.
        const bool fin = ec == asio::error::eof || ec == asio::ssl::error::stream_truncated;
        // A TLS protocol error (OpenSSL's, the SSL category: plaintext after the handshake, a
        // fatal alert) is the upstream breaking the protocol, not a hang-up or a reset.
        const bool tls_error = ec.category() == asio::error::get_ssl_category();
        if (l == leg::upstream && fin) feed(&protocol::relay_fsm::on_upstream_eof);
        else if (l == leg::upstream && tls_error) feed(&protocol::relay_fsm::on_upstream_tls_error, std::string_view(ec.message()));
        else if (l == leg::upstream) feed(&protocol::relay_fsm::on_upstream_gone, std::string_view(ec.message()));
        else if (fin) feed(&protocol::relay_fsm::on_client_eof);
        else feed(&protocol::relay_fsm::on_client_gone, std::string_view(ec.message()));
      }
      state_changed_.notify();
      co_return;
    }
    if (fsm_.finished()) continue;
    if (l == leg::client) feed(&protocol::relay_fsm::on_client_bytes, bytes);
    else feed(&protocol::relay_fsm::on_upstream_bytes, bytes);
  }
}

asio::awaitable<void> session::write_leg(leg l) {
  auto& box = leg_of(l);
  for (;;) {
    if (box.pending.empty() && !box.close_requested && !box.tls_requested && !box.reconnect_requested) {
      auto& wake = l == leg::client ? client_writer_wake_ : upstream_writer_wake_;
      box.writer_idle = true;
      co_await wake.async_wait(as_tuple(use_awaitable));   // never expires: wake_writer cancels it
      box.writer_idle = false;
      continue;
    }
    if (box.reconnect_requested && !box.close_requested) {
      // Nothing is queued for the old connection (the machine sends nothing upstream until
      // the new one greets); the connection is replaced while readers stay away.
      box.reconnect_requested = false;
      box.tls_busy = true;
      co_await reconnect_upstream();
      box.tls_busy = false;
      state_changed_.notify();
      continue;
    }
    if (!box.pending.empty()) {
      const bool shaped = box.shapes_its_writes();
      const std::uint64_t began_us = shaped ? now_us() : 0;   // only a paced write reports it
      if (auto ec = co_await box.flush()) {
        box.closed = true;
        // Bytes are recorded as they are queued (relay_outbox::send): the capture says which of
        // the last ones the peer never got, or `show` would read them as delivered.
        const std::size_t unwritten = box.unwritten() + box.pending.size();
        box.discard_pending();
        const std::string failure = "write failed: " + ec.message() + unwritten_text(unwritten);
        if (!fsm_.finished()) {
          if (l == leg::client) feed(&protocol::relay_fsm::on_client_gone, std::string_view(failure));
          else feed(&protocol::relay_fsm::on_upstream_gone, std::string_view(failure));
        }
        box.close();
        state_changed_.notify();
        co_return;
      }
      if (shaped) restart_after_shaped_write(l);
      // The replies to what it carried count from its end: its pacing is the relay's time.
      if (shaped && l == leg::upstream && !fsm_.finished()) fsm_.on_paced_upstream_write(now_us(), began_us);   // no actions
      if (l == leg::upstream) report_upstream_backlog();
      state_changed_.notify();   // room in the outbox: a paused reader may go on
      continue;
    }
    if (box.handshake_due()) {
      // Everything queued before start_tls (the 220) is out: the handshake owns the connection now.
      box.tls_requested = false;
      box.tls_busy = true;
      co_await handshake(l);
      box.tls_busy = false;
      state_changed_.notify();
      continue;
    }
    if (box.reset_requested) {
      // A reset fault: the replies before it are written; now RST (SO_LINGER 0), no FIN.
      box.close(true);
      box.closed = true;
      state_changed_.notify();
      co_return;
    }
    // Everything written and a close was asked for: TLS close_notify (bounded), FIN, then
    // linger for the peer's FIN.
    co_await box.shutdown_tls(tls_close_notify_limit);
    box.shutdown_send();
    co_await state_changed_.wait_until([&] { return box.eof_seen || !box.is_open(); }, clock::now() + linger_after_close);
    box.close();
    box.closed = true;
    state_changed_.notify();
    co_return;
  }
}

// The recorder's backlog pauses the client reader; the store says when it has caught up
// (once per pause: the request stays registered until then).
void session::wake_when_recorder_catches_up() {
  if (!ctx_.captures || recorder_wake_requested_ || !ctx_.captures->backlogged()) return;
  recorder_wake_requested_ = true;
  ctx_.captures->when_caught_up([weak = weak_from_this()] {
    auto self = weak.lock();
    if (!self) return;
    asio::post(self->executor_, [self] {
      self->recorder_wake_requested_ = false;
      self->state_changed_.notify();
    });
  });
}

void session::hold_input_while_capture_backlogged() {
  // Backpressure from the recorder: while it is behind, even input already buffered waits,
  // because every parsed command becomes several queued records (bounded memory).
  bool backlogged = ctx_.captures && ctx_.captures->backlogged();
  if (backlogged == input_held_) return;   // the common case, on every read: nothing to do
  input_held_ = backlogged;
  feed(&protocol::relay_fsm::hold_client_input, backlogged);
}

// After the 220 to the client's STARTTLS, bytes already waiting that are no TLS record (a
// handshake record starts 0x16) were sent before the client could have read the 220: STARTTLS
// injection (CVE-2011-0411), taken as client input, which the machine refuses. A hostile trial:
// sent in a segment of their own while the relay secured the upstream leg, they went to the
// handshake and read as a failed one ("wrong version number"), not as the injection they were.
bool session::took_plaintext_before_handshake() {
  auto* socket = client_.pipe().tcp_socket();
  if (!socket || !fsm_.awaiting_client_starttls_handshake()) return false;
  unsigned char first = 0;
  if (::recv(socket->native_handle(), &first, 1, MSG_PEEK | MSG_DONTWAIT) != 1 || first == 0x16) return false;
  std::string early(4096, '\0');
  boost::system::error_code ec;
  early.resize(client_.pipe().read_now(asio::buffer(early), ec));
  if (early.empty()) return false;
  feed(&protocol::relay_fsm::on_client_bytes, std::string_view(early));
  return true;
}

namespace {
// A TLS record starts with its content type: a handshake message (22) or an alert (21).
bool starts_a_tls_record(std::string_view bytes) { return bytes[0] == 0x16 || bytes[0] == 0x15; }
}  // namespace

asio::awaitable<void> session::handshake(leg l) {
  // mailtap is the TLS server on the client leg and the TLS client on the upstream leg.
  auto& box = leg_of(l);
  const bool upstream = l == leg::upstream;
  if (!upstream && took_plaintext_before_handshake()) co_return;
  // A failed upstream handshake is the relay's problem (or the upstream's), not the client's:
  // counted and logged at warn with the session id. A client's failure is the client's.
  auto failed = [&](const std::string& why) {
    if (!upstream) ++ctx_.metrics.client_tls_failed;
    if (upstream) {
      ++ctx_.metrics.upstream_tls_failed;
      tally_.upstream_tls_failure_counted();
      warn_limited(ctx_.metrics.warnings, warn_kind::upstream_tls_failed,
                   "session " + id_ + ": upstream TLS with " + target_.where.to_string() + " failed: " + why);
    }
    feed(&protocol::relay_fsm::on_tls_failed, l, std::string_view(why));
  };
  auto& context = upstream ? *ctx_.upstream_tls : ctx_.client_tls->ctx;
  auto* tls = box.begin_tls(context);
  if (!tls) {
    failed("TLS needs a TCP connection");
    co_return;
  }
  std::string error;
  const peer_verification check = upstream_check_for(ctx_.cfg.tls);
  if (upstream && !target_.builtin &&
      !prepare_client_ssl(tls->native_handle(), target_.where.host, check, error)) {
    box.drop_tls();
    failed(error);
    co_return;
  }
  auto started = clock::now();
  timer limit(executor_);
  limit.expires_after(ctx_.cfg.tls.handshake_timeout);
  auto kind = upstream ? asio::ssl::stream_base::client : asio::ssl::stream_base::server;
  std::string first_bytes;   // what the peer sent in the handshake (tls_transport)
  tls->next_layer().record = &first_bytes;
  auto result = co_await (tls->async_handshake(kind, as_tuple(use_awaitable)) ||
                          limit.async_wait(as_tuple(use_awaitable)));
  tls->next_layer().record = nullptr;
  const bool handshake_failed = result.index() == 1 || std::get<0>(std::get<0>(result));
  if (upstream && handshake_failed && !first_bytes.empty() && !starts_a_tls_record(first_bytes)) {
    // Plaintext where the upstream's handshake should be (a server answering the ClientHello
    // with an error line, or bytes it sent after its 220 in a write of their own): the capture
    // keeps them (a hostile trial: they were lost). The handshake failed all the same; what
    // follows is as for any failed handshake, on a new connection if at all.
    feed(&protocol::relay_fsm::on_upstream_plaintext_in_handshake, std::string_view(first_bytes));
  }
  if (!upstream && handshake_failed && !first_bytes.empty() && !starts_a_tls_record(first_bytes) &&
      fsm_.awaiting_client_starttls_handshake()) {
    // The client's plaintext after its STARTTLS, come once the handshake had begun reading (a
    // write of its own, a millisecond after the command): the same injection as the bytes
    // took_plaintext_before_handshake finds waiting, refused the same way with the bytes
    // recorded (a hostile trial: a failed handshake, "wrong version number", the bytes lost).
    box.drop_tls();
    feed(&protocol::relay_fsm::on_client_bytes, std::string_view(first_bytes));
    co_return;
  }
  if (result.index() == 1) {
    box.drop_tls();
    failed("TLS handshake timed out");
    co_return;
  }
  if (auto [ec] = std::get<0>(result); ec) {
    // OpenSSL's own reason says more than Asio's ("certificate verify failed" -> which check).
    long verify_result = SSL_get_verify_result(tls->native_handle());
    std::string reason = ec.message();
    if (upstream && verify_result != X509_V_OK) reason += std::string(": ") + X509_verify_cert_error_string(verify_result);
    box.drop_tls();
    failed(reason);
    co_return;
  }
  tls_info info = describe(tls->native_handle());
  const bool insecure = upstream && !target_.builtin && check == peer_verification::off &&
                        ctx_.cfg.tls.upstream_fingerprint.empty();
  if (upstream) {
    // The built-in sink presents our own certificate, which the context trusts exactly.
    static const std::string no_pin;
    assess_upstream(tls->native_handle(), target_.builtin ? peer_verification::enforce : check,
                    target_.builtin ? no_pin : ctx_.cfg.tls.upstream_fingerprint, info);
    if (!info.verified && !target_.builtin && upstream_verification_required(ctx_.cfg.tls)) {
      // A pin is compared only now (the handshake itself checked nothing): a mismatch fails
      // TLS before a byte of SMTP goes through it.
      box.drop_tls();
      ++ctx_.metrics.upstream_cert_refused;   // counted apart from failed handshakes; logged as one
      tally_.upstream_tls_failure_counted();
      warn_limited(ctx_.metrics.warnings, warn_kind::upstream_tls_failed,
                   "session " + id_ + ": upstream TLS with " + target_.where.to_string() +
                       " failed: certificate not accepted: " + info.verification);
      feed(&protocol::relay_fsm::on_tls_failed, l, std::string_view("certificate not accepted: " + info.verification));
      co_return;
    }
    if (!info.verified)
      spdlog::info("session {}: untrusted TLS connection established to {}: {}", id_, target_.where.to_string(),
                   info.verification);
  }
  box.handshake_done();
  protocol::tls_summary summary{info.version, info.cipher, info.sni, info.peer_subject, info.peer_sha256,
                                info.verified, insecure,
                                static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                               clock::now() - started).count()),
                                info.verification};
  feed(&protocol::relay_fsm::on_tls_ready, l, summary);
}

// A write the relay paced itself (a throttle, slice or segment-break fault) ended: the leg's
// timer runs from here, where its peer got the last of it, not from when it was queued (RFC
// 5321 4.5.3.2: each timer starts when the command or the data is sent).
void session::restart_after_shaped_write(leg l) {
  auto& deadline = l == leg::client ? client_deadline_ : upstream_deadline_;
  const auto after = l == leg::client ? client_timer_after_ : upstream_timer_after_;
  if (deadline == clock::time_point::max() || after.count() == 0) return;
  deadline = std::max(deadline, clock::now() + after);
}

// A write the relay paces itself is under way on the leg and made progress within the leg's
// own timer: that timer waits for it. A paced write the peer stopped taking does not hold it.
bool session::pacing(leg l, clock::time_point now) const {
  const auto& box = l == leg::client ? client_ : upstream_;
  const auto after = l == leg::client ? client_timer_after_ : upstream_timer_after_;
  return box.shaped_write_in_flight() && box.write_started && now - *box.write_started < std::max(after, std::chrono::milliseconds(1000));
}

// A write to l that has not finished in `limit`: its peer stopped reading. The machine is told
// (it ends that leg, or the session), and the connection is closed at once with a reset: its
// writer waits on a write that would never finish, and the close it was asked for waits on
// that writer.
void session::abort_stalled_write(leg l, clock::time_point now, std::chrono::milliseconds limit) {
  auto& box = leg_of(l);
  if (fsm_.finished() || !box.write_started || now - *box.write_started < limit) return;
  feed(&protocol::relay_fsm::on_write_stalled, l, limit);
  box.close(true);
}

asio::awaitable<void> session::watchdog() {
  for (;;) {
    if (fsm_.finished()) co_return;
    auto next = std::min({client_deadline_, upstream_deadline_, fault_deadline_});
    // Under backpressure, a peer that takes nothing is looked for every second.
    if (outbox_full()) next = std::min(next, clock::now() + 1s);
    watchdog_timer_.expires_at(next);
    co_await watchdog_timer_.async_wait(as_tuple(use_awaitable));
    if (fsm_.finished()) co_return;
    auto now = clock::now();
    // A write that has not finished in its time: the upstream stopped reading the message
    // (RFC 5321 4.5.3.2.5), or the client stopped reading its replies.
    if (upstream_.size() > outbox_high_watermark) abort_stalled_write(leg::upstream, now, ctx_.cfg.timeouts.upstream_data_block);
    if (client_.size() > outbox_high_watermark) abort_stalled_write(leg::client, now, ctx_.cfg.timeouts.client_idle);
    if (fsm_.finished()) co_return;
    if (now >= client_deadline_ && (reading_paused(leg::client) || pacing(leg::client, now))) {
      // The relay is not reading the client (backpressure), or is still pacing out what the
      // client is to answer (a throttle or slice fault): its pace cannot be judged now.
      client_deadline_ = now + 1s;
    } else if (now >= client_deadline_) {
      client_deadline_ = clock::time_point::max();
      feed(&protocol::relay_fsm::on_timeout, leg::client);
    }
    if (now >= upstream_deadline_ && !fsm_.finished() &&
        (reading_paused(leg::upstream) || pacing(leg::upstream, now))) {
      // The upstream's reply may be here, unread: the client reads none of what it is sent.
      // Or the relay is still pacing out the command the upstream is to answer.
      upstream_deadline_ = now + 1s;
    } else if (now >= upstream_deadline_ && !fsm_.finished()) {
      upstream_deadline_ = clock::time_point::max();
      feed(&protocol::relay_fsm::on_timeout, leg::upstream);
    }
    if (now >= fault_deadline_ && !fsm_.finished()) {
      fault_deadline_ = clock::time_point::max();
      feed(&protocol::relay_fsm::on_fault_timer);
    }
  }
}

// ---------------------------------------------------------------- dispatch

// The machine's counters go into the relay's metrics as they change, not only when the session
// object goes: a scrape sees a long session's transactions, and the drain's summary counts a
// session it cut at its deadline whose object outlives the summary (a hostile trial: a message
// whose dot went upstream was missing from "ambiguous end-of-data").
void session::fold_stats() {
  const auto& s = fsm_.stats();
  auto add = [](std::atomic<std::uint64_t>& to, std::uint64_t now, std::uint64_t& was) {
    if (now != was) to += now - std::exchange(was, now);
  };
  auto& m = ctx_.metrics;
  add(m.transactions, s.transactions, folded_.transactions);
  add(m.messages_delivered, s.delivered, folded_.delivered);
  add(m.refused_commands, s.refused_commands, folded_.refused_commands);
  add(m.ambiguous_end_of_data, s.ambiguous_end_of_data, folded_.ambiguous_end_of_data);
  add(m.normalized_line_endings, s.normalized_line_endings, folded_.normalized_line_endings);
  add(m.long_data_lines, s.long_data_lines, folded_.long_data_lines);
  add(m.faults_injected, s.faults_injected, folded_.faults_injected);
  add(m.blackholed, s.blackholed, folded_.blackholed);
  add(m.client_timeouts, s.client_timeouts, folded_.client_timeouts);
  add(m.upstream_replied_in_data, s.upstream_replied_in_data, folded_.upstream_replied_in_data);
  add(m.unacknowledged_end_of_data, s.unacknowledged_end_of_data, folded_.unacknowledged_end_of_data);
}

void session::dispatch() {
  fold_stats();
  auto actions = fsm_.take_actions();
  if (barriers_pending_ > 0) {   // everything queues behind a capture barrier still waiting
    held_.insert(held_.end(), std::make_move_iterator(actions.begin()), std::make_move_iterator(actions.end()));
  } else {
    execute(actions);
  }
  return_spare_actions(std::move(actions));
}

namespace {
thread_local std::vector<protocol::action> spare_actions;   // session::borrow_spare_actions
}  // namespace

std::vector<protocol::action> session::borrow_spare_actions() { return std::exchange(spare_actions, {}); }

void session::return_spare_actions(std::vector<protocol::action>&& used) {
  if (spare_actions.capacity() != 0 || used.capacity() > 64) return;
  used.clear();
  spare_actions = std::move(used);
}

// The actions after a capture_barrier wait until the recorder has written every record
// reported before it (ARCHITECTURE.md, "Invariants"); later dispatches queue behind them.
// One action; false when it is a capture barrier that what follows must wait for.
bool session::carry_out(protocol::action& action) {
  return std::visit(
      protocol::overloaded{
          [&](protocol::send_bytes& s) {
            auto& box = leg_of(s.to);
            if (box.closed || box.close_requested) return true;
            if (box.pending.empty()) box.pending = std::move(s.bytes);   // the common case: no copy
            else box.pending += s.bytes;
            (s.to == leg::client ? client_write_due_ : upstream_write_due_) = true;   // woken as execute ends
            return true;
          },
          [&](const protocol::close_leg& c) {
            if (c.reset) leg_of(c.which).reset_requested = true;
            leg_of(c.which).close_requested = true;
            wake_writer(c.which);
            if (c.which == leg::upstream && !upstream_connected_) upstream_.close();   // a dial in progress ends now
            return true;
          },
          [&](const protocol::arm_timer& t) {
            auto& deadline = t.which == leg::client ? client_deadline_ : upstream_deadline_;
            (t.which == leg::client ? client_timer_after_ : upstream_timer_after_) = t.after;
            deadline = t.after.count() == 0 ? clock::time_point::max() : clock::now() + t.after;
            if (deadline < watchdog_timer_.expiry()) watchdog_timer_.cancel();
            return true;
          },
          [&](const protocol::start_tls& st) {
            leg_of(st.which).tls_requested = true;
            wake_writer(st.which);
            return true;
          },
          [&](const protocol::arm_fault_timer& f) {
            fault_deadline_ = f.after.count() == 0 ? clock::time_point::max() : clock::now() + f.after;
            if (fault_deadline_ < watchdog_timer_.expiry()) watchdog_timer_.cancel();
            return true;
          },
          [&](const protocol::shape_leg& sh) {
            leg_of(sh.which).shaping = sh.shaping;
            return true;
          },
          [&](const protocol::segment_break& b) {
            leg_of(b.which).add_break(b.gap);
            return true;
          },
          [&](const protocol::reconnect_upstream&) {
            upstream_.reconnect_requested = true;
            wake_writer(leg::upstream);
            return true;
          },
          [&](const protocol::connect_upstream&) {
            upstream_requested_ = true;
            spawn(open_upstream());
            return true;
          },
          [&](const protocol::capture_barrier&) {
            // Without a recorder there is nothing to wait for; without fsync the recorder
            // writes here and now (captures/writer.hpp, written_now).
            return capture_ == nullptr || capture_->written_now();
          },
          [&](const protocol::await_capture&) {
            settle_capture();
            return true;
          },
          [&](const protocol::pause_reading& p) {
            if (p.which == leg::client) machine_paused_client_ = p.paused;   // execute's notify wakes the reader
            return true;
          },
      },
      action);
}

// The recorder's answer to await_capture: every record queued so far handled, written or
// failed (captures/writer.hpp, when_written). The machine reads the failure on its own thread.
void session::settle_capture() {
  capture_->when_written([self = shared_from_this()] {
    asio::post(self->executor_, [self] { self->feed(&protocol::relay_fsm::on_capture_settled, self->capture_->failed()); });
  });
}

void session::hold_until_recorded(std::vector<protocol::action>& actions, std::size_t from) {
  ++barriers_pending_;
  held_.insert(held_.end(), std::make_move_iterator(actions.begin() + static_cast<std::ptrdiff_t>(from)),
               std::make_move_iterator(actions.end()));
  capture_->when_written([self = shared_from_this()] {
    asio::post(self->executor_, [self] {
      if (--self->barriers_pending_ > 0) return;
      auto held = std::move(self->held_);
      self->held_.clear();
      self->execute(held);
    });
  });
}

// A leg with new bytes gets them once the whole batch is carried out: one write(2) per leg
// per batch rather than one per action. An idle writer's leg is written here and now
// (leg_stream::write_now); its writer is woken only for what is left. While a message's end
// waits for the recorder (relay_fsm::awaiting_capture, settle_capture), the upstream's bytes
// (the body's last part) wait too: the settle, posted first, adds the end, and both leave in
// one write (one segment, not two, for every message).
void session::wake_due_writers() {
  for (leg l : {leg::client, leg::upstream}) {
    if (!std::exchange(l == leg::client ? client_write_due_ : upstream_write_due_, false)) continue;
    auto& box = leg_of(l);
    if (!(l == leg::upstream && fsm_.awaiting_capture())) box.write_now();
    if (!box.pending.empty()) wake_writer(l);
  }
}

// The upstream's outbox over or under its high watermark, told to the machine as it changes:
// the time the upstream held the sender back within a message is the upstream's (body stage).
void session::report_upstream_backlog() {
  const bool backed_up = upstream_.size() > outbox_high_watermark;
  if (backed_up == upstream_backlog_reported_ || fsm_.finished()) return;
  upstream_backlog_reported_ = backed_up;
  fsm_.on_upstream_backlog(now_us(), backed_up);   // no actions: nothing to dispatch
}

void session::execute(std::vector<protocol::action>& actions) {
  for (std::size_t i = 0; i < actions.size(); ++i) {
    if (!carry_out(actions[i])) {
      hold_until_recorded(actions, i + 1);
      wake_due_writers();
      state_changed_.notify();   // an outbox written now: a reader paused on it may go on
      return;   // the rest, and the closing below, run once the record is written
    }
  }
  wake_due_writers();
  report_upstream_backlog();
  // The capture is written after the bytes it records were handed to the sockets, so that
  // the peer's work and the file's overlap (captures/writer.hpp, write_out_if_due).
  if (capture_) capture_->write_out_if_due();
  if (fsm_.finished()) {
    // The machine closes the legs it still considers open; a leg whose peer hung up first
    // gets no close action, yet its writer must still finish (or the session never ends).
    client_.close_requested = true;
    upstream_.close_requested = true;
    wake_writer(leg::client);
    wake_writer(leg::upstream);
    watchdog_timer_.cancel();
  }
  state_changed_.notify();
}

}  // namespace mailtap
