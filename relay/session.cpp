// Session coroutines and the dispatch point. Reading order: set-up, run/connect, the leg
// readers and writers, the watchdog, dispatch (feed/dispatch/execute), tear-down.
#include "relay/session.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <ctime>
#include <random>

#include "policies/engine.hpp"
#include "policies/random.hpp"
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

}  // namespace

std::string make_session_id(std::uint64_t number) {
  static const std::uint32_t nonce = std::random_device{}();
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  char id[80];
  std::snprintf(id, sizeof id, "%s-%08x-%06llu", stamp, nonce, static_cast<unsigned long long>(number));
  return id;
}

namespace {

protocol::relay_options relay_options_from(const relay_context& ctx, bool implicit_tls) {
  protocol::relay_options o;
  o.eol = ctx.cfg.bare_eol;
  o.timeouts = ctx.cfg.timeouts;
  o.name = ctx.cfg.relay_name;
  o.upstream = ctx.upstream.to_string();
  o.record_auth_username = ctx.cfg.record_auth_username;
  o.tls.offer_starttls = ctx.client_tls != nullptr && ctx.cfg.tls.offer_starttls;
  o.tls.implicit_client_tls = implicit_tls;
  // Without an upstream TLS context nothing can be secured upstream: only `never` is honest.
  o.tls.upstream = ctx.upstream_tls ? ctx.cfg.tls.upstream : protocol::upstream_tls_mode::never;
  o.tls.upstream_verification_required = !ctx.upstream_is_builtin && upstream_verification_required(ctx.cfg.tls);
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

std::string peer_label(const asio::ip::tcp::socket& s) {
  boost::system::error_code ec;
  auto ep = s.remote_endpoint(ec);
  if (ec) return "unknown";
  return endpoint{ep.address().to_string(), ep.port()}.to_string();
}
}  // namespace

// ---------------------------------------------------------------- set-up

static std::unique_ptr<captures::session_capture> open_capture(const relay_context& ctx, const std::string& id,
                                                               std::uint64_t number,
                                                               const asio::ip::tcp::socket& client) {
  if (!ctx.captures) return nullptr;
  captures::session_info info;
  info.id = id;
  info.seed = policies::session_seed(ctx.master_seed, number);   // the seed of the session's fault generator
  info.client = peer_label(client);
  info.listen = ctx.listen_label;
  info.upstream = ctx.upstream_label;
  info.bare_eol = std::string(protocol::to_string(ctx.cfg.bare_eol));
  info.started_at = std::chrono::system_clock::now();
  info.started_mono_us = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
  return ctx.captures->begin(info);
}

session::outbox::~outbox() = default;

session::session(tcp::socket client, const relay_context& ctx, std::uint64_t number, bool implicit_tls)
    : client_(std::move(client)),
      upstream_(client_.get_executor()),
      ctx_(ctx),
      number_(number),
      id_(make_session_id(number)),
      start_(clock::now()),
      capture_(open_capture(ctx, id_, number, client_)),
      advisor_(ctx.faults ? ctx.faults->open_session(number, peer_label(client_), implicit_tls && ctx.client_tls)
                          : nullptr),
      fsm_(relay_options_from(ctx, implicit_tls && ctx.client_tls), capture_.get(), advisor_.get()),
      changed_(client_.get_executor(), clock::time_point::max()),
      client_writer_wake_(client_.get_executor(), clock::time_point::max()),
      upstream_writer_wake_(client_.get_executor(), clock::time_point::max()),
      watchdog_timer_(client_.get_executor(), clock::time_point::max()) {
  ++ctx_.metrics.sessions_active;
  implicit_tls_ = implicit_tls && ctx.client_tls;
}

session::~session() {
  const auto& s = fsm_.stats();
  ctx_.metrics.transactions += s.transactions;
  ctx_.metrics.messages_delivered += s.delivered;
  ctx_.metrics.refused_commands += s.refused_commands;
  ctx_.metrics.ambiguous_end_of_data += s.ambiguous_end_of_data;
  ctx_.metrics.normalized_line_endings += s.normalized_line_endings;
  ctx_.metrics.long_data_lines += s.long_data_lines;
  ctx_.metrics.faults_injected += s.faults_injected;
  ctx_.metrics.blackholed += s.blackholed;
  ctx_.metrics.client_timeouts += s.client_timeouts;
  ctx_.metrics.upstream_replied_in_data += s.upstream_replied_in_data;
  ctx_.metrics.unacknowledged_end_of_data += s.unacknowledged_end_of_data;
  if (s.blackholed > 0)
    spdlog::warn("session {}: a blackhole fault answered {} message(s) with 250; nothing was delivered", id_, s.blackholed);
  --ctx_.metrics.sessions_active;
  spdlog::debug("session {} closed", id_);
}

// An unexpected error ends the session at its boundary, logged with the
// session id and counted; the capture still gets its end record.
void session::spawn(asio::awaitable<void> work) {
  asio::co_spawn(client_.get_executor(), std::move(work), [self = shared_from_this()](std::exception_ptr e) {
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
  asio::post(client_.get_executor(), [self = shared_from_this()] {
    self->feed(&protocol::relay_fsm::on_drain);
  });
}

void session::abort() {
  // The machine answers 421 4.3.2 and closes both legs; the writers flush that reply first.
  asio::post(client_.get_executor(), [self = shared_from_this()] {
    self->feed(&protocol::relay_fsm::on_drain_deadline);
  });
}

std::uint64_t session::now_us() const {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - start_).count());
}

// ---------------------------------------------------------------- run

asio::awaitable<void> session::run() {
  boost::system::error_code ig;
  client_.set_option(tcp::no_delay(true), ig);
  client_.non_blocking(true, ig);
  feed(&protocol::relay_fsm::on_start);   // a fault decided at connect may answer (or shape the legs) now
  if (implicit_tls_) co_await handshake(leg::client);   // SMTPS: TLS before the banner
  if (!fsm_.finished() && upstream_wanted_) co_await connect_upstream();
  if (upstream_connected_ && ctx_.cfg.tls.upstream_implicit && ctx_.upstream_tls && !fsm_.finished())
    co_await handshake(leg::upstream);
  spawn(write_leg(leg::client));
  if (upstream_connected_) {
    spawn(write_leg(leg::upstream));
    spawn(read_leg(leg::upstream));
    spawn(read_leg(leg::client));
  } else if (!fsm_.finished()) {
    spawn(read_leg(leg::client));   // a fault answers the client without an upstream
  }
  spawn(watchdog());
}

// Counted, logged at warn with the session id (rate-limited: a dead upstream fails every
// session), and handed to the machine, which answers the client.
void session::upstream_unreachable(const std::string& why) {
  ++ctx_.metrics.upstream_unreachable;
  warn_limited(ctx_.metrics.warnings, warn_kind::upstream_unreachable, "session " + id_ + ": upstream " + why);
  feed(&protocol::relay_fsm::on_upstream_unreachable, std::string_view(why));
}

asio::awaitable<void> session::connect_upstream() {
  std::string failed = co_await dial_upstream();
  if (!failed.empty()) {
    upstream_unreachable(failed);
    co_return;
  }
  upstream_connected_ = true;
  feed(&protocol::relay_fsm::on_upstream_connected);
}

asio::awaitable<std::string> session::dial_upstream() {
  auto ex = co_await asio::this_coro::executor;
  // A literal address needs no resolver (async_resolve hands every lookup to a helper thread).
  tcp::resolver::results_type endpoints;
  boost::system::error_code aec;
  auto address = asio::ip::make_address(ctx_.upstream.host, aec);
  if (!aec) {
    endpoints = tcp::resolver::results_type::create(tcp::endpoint(address, ctx_.upstream.port), ctx_.upstream.host,
                                                    std::to_string(ctx_.upstream.port));
  } else {
    tcp::resolver resolver(ex);
    auto [rec, found] = co_await resolver.async_resolve(ctx_.upstream.host, std::to_string(ctx_.upstream.port),
                                                        as_tuple(use_awaitable));
    if (rec) co_return "cannot resolve " + ctx_.upstream.host + ": " + rec.message();
    endpoints = std::move(found);
  }
  timer deadline(ex);
  deadline.expires_after(ctx_.cfg.upstream_connect_timeout);
  auto result = co_await (asio::async_connect(upstream_, endpoints, as_tuple(use_awaitable)) ||
                          deadline.async_wait(as_tuple(use_awaitable)));
  if (result.index() == 1) co_return "connect to " + ctx_.upstream.to_string() + " timed out";
  auto [cec, ep] = std::get<0>(result);
  if (cec) co_return "connect to " + ctx_.upstream.to_string() + ": " + cec.message();
  boost::system::error_code ig;
  upstream_.set_option(tcp::no_delay(true), ig);
  upstream_.non_blocking(true, ig);
  co_return std::string();
}

asio::awaitable<void> session::reconnect_upstream() {
  // The failed handshake left the connection unusable: no close_notify, no QUIT, just close.
  auto& box = upstream_out_;
  boost::system::error_code ig;
  box.tls.reset();
  box.tls_buffer.reset();
  upstream_.close(ig);
  box.eof_seen = false;
  spdlog::info("session {}: upstream TLS failed; new plaintext connection to {}", id_, ctx_.upstream.to_string());
  std::string failed = co_await dial_upstream();
  if (fsm_.finished()) co_return;
  if (!failed.empty()) {
    upstream_unreachable(failed);
    co_return;
  }
  feed(&protocol::relay_fsm::on_upstream_reconnected);
}

// ---------------------------------------------------------------- legs

bool session::reading_paused(leg l) const {
  if (fsm_.finished()) return false;   // lingering: read and discard until the peer's FIN
  if (client_out_.size() > outbox_high_watermark) return true;
  if (l == leg::client)
    return machine_paused_client_ || upstream_out_.size() > outbox_high_watermark ||
           (ctx_.captures && ctx_.captures->backlogged());
  return false;
}

asio::awaitable<void> session::read_leg(leg l) {
  // Wait for readability, then read into a per-thread buffer: an idle session holds no
  // read buffer of its own (PERF W6: memory per idle session).
  // A TLS leg reads through its stream into its own buffer instead.
  static thread_local std::array<char, 64 * 1024> buffer;
  auto& sock = socket_of(l);
  auto& box = outbox_of(l);
  for (;;) {
    // Nothing signals the capture writer catching up, so a paused reader also re-checks on a tick.
    while (reading_paused(l) || box.tls_requested || box.tls_busy || (box.reconnect_requested && !box.close_requested)) {
      if (l == leg::client) hold_input_while_capture_backlogged();
      co_await wait_for_change(10ms);
    }
    if (l == leg::client) hold_input_while_capture_backlogged();
    boost::system::error_code ec;
    std::size_t n = 0;
    char* data = buffer.data();
    if (box.tls) {
      auto [rec, got] = co_await box.tls->async_read_some(asio::buffer(*box.tls_buffer), as_tuple(use_awaitable));
      ec = rec;
      n = got;
      data = box.tls_buffer->data();
    } else {
      auto [wec] = co_await sock.async_wait(tcp::socket::wait_read, as_tuple(use_awaitable));
      // A handshake may have begun (or finished) while we waited: its bytes are not ours.
      if (!wec && (box.tls_requested || box.tls_busy || box.tls)) continue;
      // A reconnect closed the socket under us: the new connection is read from the top.
      if (wec && ((box.reconnect_requested && !box.close_requested) || box.tls_busy)) continue;
      ec = wec;
      if (!ec) n = sock.read_some(asio::buffer(buffer), ec);
    }
    if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
    if (ec) {
      outbox_of(l).eof_seen = true;
      if (!fsm_.finished()) {
        // A FIN (TCP, or TLS without close_notify) ends the client's input, not its ability to
        // read our replies; anything else means it is gone.
        const bool fin = ec == asio::error::eof || ec == asio::ssl::error::stream_truncated;
        if (l == leg::upstream) feed(&protocol::relay_fsm::on_upstream_eof);
        else if (fin) feed(&protocol::relay_fsm::on_client_eof);
        else feed(&protocol::relay_fsm::on_client_gone, std::string_view(ec.message()));
      }
      notify();
      co_return;
    }
    if (fsm_.finished()) continue;
    std::string_view bytes(data, n);
    if (l == leg::client) {
      if (capture_ && capture_->failed()) fsm_.on_capture_failed();   // a flag the next end of data reads
      feed(&protocol::relay_fsm::on_client_bytes, bytes);
    } else {
      feed(&protocol::relay_fsm::on_upstream_bytes, bytes);
    }
  }
}

asio::awaitable<void> session::write_leg(leg l) {
  auto& box = outbox_of(l);
  auto& sock = socket_of(l);
  boost::system::error_code ig;
  for (;;) {
    if (box.pending.empty() && !box.close_requested && !box.tls_requested && !box.reconnect_requested) {
      auto& wake = l == leg::client ? client_writer_wake_ : upstream_writer_wake_;
      co_await wake.async_wait(as_tuple(use_awaitable));   // never expires: wake_writer cancels it
      continue;
    }
    if (box.reconnect_requested && !box.close_requested) {
      // Nothing is queued for the old connection (the machine sends nothing upstream until
      // the new one greets); the socket is replaced while readers stay away.
      box.reconnect_requested = false;
      box.tls_busy = true;
      co_await reconnect_upstream();
      box.tls_busy = false;
      notify();
      continue;
    }
    if (!box.pending.empty()) {
      std::swap(box.pending, box.inflight);
      std::swap(box.breaks, box.inflight_breaks);
      boost::system::error_code ec;
      if (box.shaping.active() || !box.inflight_breaks.empty()) co_await write_shaped(l, ec);
      else co_await write_bytes(l, ec);
      box.inflight.clear();
      box.inflight_breaks.clear();
      if (ec) {
        box.closed = true;
        box.pending.clear();
        if (!fsm_.finished()) {
          if (l == leg::client) feed(&protocol::relay_fsm::on_client_gone, std::string_view("write failed: " + ec.message()));
          else feed(&protocol::relay_fsm::on_upstream_eof);
        }
        sock.close(ig);
        notify();
        co_return;
      }
      notify();   // room in the outbox: a paused reader may go on
      continue;
    }
    if (box.tls_requested && !box.close_requested) {
      // Everything queued before start_tls (the 220) is out: the handshake owns the socket now.
      box.tls_requested = false;
      box.tls_busy = true;
      co_await handshake(l);
      box.tls_busy = false;
      notify();
      continue;
    }
    if (box.reset_requested) {
      // A reset fault: the replies before it are written; now RST (SO_LINGER 0), no FIN.
      sock.set_option(tcp::socket::linger(true, 0), ig);
      sock.close(ig);
      box.closed = true;
      notify();
      co_return;
    }
    // Everything written and a close was asked for: TLS close_notify (bounded), FIN, then
    // linger for the peer's FIN.
    if (box.tls) {
      timer limit(sock.get_executor());
      limit.expires_after(1s);
      co_await (box.tls->async_shutdown(as_tuple(use_awaitable)) || limit.async_wait(as_tuple(use_awaitable)));
    }
    sock.shutdown(tcp::socket::shutdown_send, ig);
    auto until = clock::now() + linger_after_close;
    while (!box.eof_seen && clock::now() < until && sock.is_open()) co_await wait_for_change(until - clock::now());
    sock.close(ig);
    box.closed = true;
    notify();
    co_return;
  }
}

void session::hold_input_while_capture_backlogged() {
  // Backpressure from the recorder: while it is behind, even input already buffered waits,
  // because every parsed command becomes several queued records (bounded memory).
  bool backlogged = ctx_.captures && ctx_.captures->backlogged();
  if (backlogged == input_held_) return;   // the common case, on every read: nothing to do
  input_held_ = backlogged;
  feed(&protocol::relay_fsm::hold_client_input, backlogged);
}

asio::awaitable<void> session::write_bytes(leg l, boost::system::error_code& ec) {
  auto& box = outbox_of(l);
  if (box.tls) {
    auto [wec, n] = co_await asio::async_write(*box.tls, asio::buffer(box.inflight), as_tuple(use_awaitable));
    ec = wec;
  } else {
    auto [wec, n] = co_await asio::async_write(socket_of(l), asio::buffer(box.inflight), as_tuple(use_awaitable));
    ec = wec;
  }
}

// Faults: the inflight bytes in segments (slice), paced (throttle), with a pause at each
// segment break. TCP_NODELAY is on, so each write leaves as its own segment.
asio::awaitable<void> session::write_shaped(leg l, boost::system::error_code& ec) {
  auto& box = outbox_of(l);
  const auto& shaping = box.shaping;
  timer pause(socket_of(l).get_executor());
  std::size_t off = 0;
  std::size_t next_break = 0;
  const std::string& bytes = box.inflight;
  while (off < bytes.size() || next_break < box.inflight_breaks.size()) {
    std::size_t end = bytes.size();
    if (next_break < box.inflight_breaks.size()) end = std::min(end, box.inflight_breaks[next_break].first);
    std::chrono::microseconds wait{0};
    if (off >= end) {   // at a break: pause before what follows
      wait = box.inflight_breaks[next_break++].second;
    } else {
      std::size_t n = end - off;
      if (shaping.segment_bytes > 0) n = std::min(n, shaping.segment_bytes);
      // Throttled writes go out in slices of about 50 ms worth of bytes.
      if (shaping.bytes_per_second > 0) n = std::min<std::size_t>(n, std::max<std::uint64_t>(1, shaping.bytes_per_second / 20));
      asio::const_buffer chunk(bytes.data() + off, n);
      if (box.tls) {
        auto [wec, w] = co_await asio::async_write(*box.tls, chunk, as_tuple(use_awaitable));
        ec = wec;
      } else {
        auto [wec, w] = co_await asio::async_write(socket_of(l), chunk, as_tuple(use_awaitable));
        ec = wec;
      }
      if (ec) co_return;
      off += n;
      if (shaping.segment_bytes > 0) wait = std::chrono::microseconds(shaping.gap_us);
      if (shaping.bytes_per_second > 0)
        wait = std::max(wait, std::chrono::microseconds(n * 1'000'000 / shaping.bytes_per_second));
    }
    if (wait.count() > 0 && (off < bytes.size() || next_break < box.inflight_breaks.size())) {
      pause.expires_after(wait);
      co_await pause.async_wait(as_tuple(use_awaitable));
    }
  }
}

asio::awaitable<void> session::handshake(leg l) {
  // mailtap is the TLS server on the client leg and the TLS client on the upstream leg.
  auto& box = outbox_of(l);
  auto& sock = socket_of(l);
  const bool upstream = l == leg::upstream;
  // A failed upstream handshake is the relay's problem (or the upstream's), not the client's:
  // counted and logged at warn with the session id. A client's failure is the client's.
  auto failed = [&](const std::string& why) {
    if (upstream) {
      ++ctx_.metrics.upstream_tls_failed;
      warn_limited(ctx_.metrics.warnings, warn_kind::upstream_tls_failed,
                   "session " + id_ + ": upstream TLS with " + ctx_.upstream.to_string() + " failed: " + why);
    }
    feed(&protocol::relay_fsm::on_tls_failed, l, std::string_view(why));
  };
  auto& context = upstream ? *ctx_.upstream_tls : ctx_.client_tls->ctx;
  box.tls = std::make_unique<tls_stream>(sock, context);
  std::string error;
  const peer_verification check = upstream_check_for(ctx_.cfg.tls);
  if (upstream && !ctx_.upstream_is_builtin &&
      !prepare_client_ssl(box.tls->native_handle(), ctx_.upstream.host, check, error)) {
    box.tls.reset();
    failed(error);
    co_return;
  }
  auto started = clock::now();
  timer limit(sock.get_executor());
  limit.expires_after(ctx_.cfg.tls.handshake_timeout);
  auto kind = upstream ? asio::ssl::stream_base::client : asio::ssl::stream_base::server;
  auto result = co_await (box.tls->async_handshake(kind, as_tuple(use_awaitable)) ||
                          limit.async_wait(as_tuple(use_awaitable)));
  if (result.index() == 1) {
    box.tls.reset();
    failed("TLS handshake timed out");
    co_return;
  }
  if (auto [ec] = std::get<0>(result); ec) {
    // OpenSSL's own reason says more than Asio's ("certificate verify failed" -> which check).
    long verify_result = SSL_get_verify_result(box.tls->native_handle());
    std::string reason = ec.message();
    if (upstream && verify_result != X509_V_OK) reason += std::string(": ") + X509_verify_cert_error_string(verify_result);
    box.tls.reset();
    failed(reason);
    co_return;
  }
  tls_info info = describe(box.tls->native_handle());
  const bool insecure = upstream && !ctx_.upstream_is_builtin && check == peer_verification::off &&
                        ctx_.cfg.tls.upstream_fingerprint.empty();
  if (upstream) {
    // The built-in sink presents our own certificate, which the context trusts exactly.
    static const std::string no_pin;
    assess_upstream(box.tls->native_handle(), ctx_.upstream_is_builtin ? peer_verification::enforce : check,
                    ctx_.upstream_is_builtin ? no_pin : ctx_.cfg.tls.upstream_fingerprint, info);
    if (!info.verified && !ctx_.upstream_is_builtin && upstream_verification_required(ctx_.cfg.tls)) {
      // A pin is compared only now (the handshake itself checked nothing): a mismatch fails
      // TLS before a byte of SMTP goes through it.
      box.tls.reset();
      feed(&protocol::relay_fsm::on_tls_failed, l, std::string_view("certificate not accepted: " + info.verification));
      co_return;
    }
    if (!info.verified)
      spdlog::info("session {}: untrusted TLS connection established to {}: {}", id_, ctx_.upstream.to_string(),
                   info.verification);
  }
  box.tls_buffer = std::make_unique<std::array<char, 16 * 1024>>();
  protocol::tls_summary summary{info.version, info.cipher, info.sni, info.peer_subject, info.peer_sha256,
                                info.verified, insecure,
                                static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                               clock::now() - started).count()),
                                info.verification};
  feed(&protocol::relay_fsm::on_tls_ready, l, summary);
}

asio::awaitable<void> session::wait_for_change(clock::duration at_most) {
  // changed_ never expires; notify() cancels it to wake every waiter at once.
  timer limit(co_await asio::this_coro::executor);
  limit.expires_after(at_most);
  co_await (changed_.async_wait(as_tuple(use_awaitable)) || limit.async_wait(as_tuple(use_awaitable)));
}

void session::notify() { changed_.cancel(); }

asio::awaitable<void> session::watchdog() {
  for (;;) {
    if (fsm_.finished()) co_return;
    watchdog_timer_.expires_at(std::min({client_deadline_, upstream_deadline_, fault_deadline_}));
    co_await watchdog_timer_.async_wait(as_tuple(use_awaitable));
    if (fsm_.finished()) co_return;
    auto now = clock::now();
    if (now >= client_deadline_ && reading_paused(leg::client)) {
      // The relay is not reading the client (backpressure): its pace cannot be judged now.
      client_deadline_ = now + 1s;
    } else if (now >= client_deadline_) {
      client_deadline_ = clock::time_point::max();
      feed(&protocol::relay_fsm::on_timeout, leg::client);
    }
    if (now >= upstream_deadline_ && !fsm_.finished()) {
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

void session::dispatch() {
  auto actions = fsm_.take_actions();
  if (barriers_pending_ > 0) {   // everything queues behind a capture barrier still waiting
    held_.insert(held_.end(), std::make_move_iterator(actions.begin()), std::make_move_iterator(actions.end()));
    return;
  }
  execute(actions);
}

// The actions after a capture_barrier wait until the recorder has written every record
// reported before it (ARCHITECTURE.md, "Invariants"); later dispatches queue behind them.
void session::hold_until_recorded(std::vector<protocol::action>& actions, std::size_t from) {
  ++barriers_pending_;
  held_.insert(held_.end(), std::make_move_iterator(actions.begin() + static_cast<std::ptrdiff_t>(from)),
               std::make_move_iterator(actions.end()));
  capture_->when_durable([self = shared_from_this()] {
    asio::post(self->client_.get_executor(), [self] {
      if (--self->barriers_pending_ > 0) return;
      auto held = std::move(self->held_);
      self->held_.clear();
      self->execute(held);
    });
  });
}

void session::execute(std::vector<protocol::action>& actions) {
  for (std::size_t i = 0; i < actions.size(); ++i) {
    auto& a = actions[i];
    if (std::holds_alternative<protocol::capture_barrier>(a)) {
      if (!capture_) continue;
      hold_until_recorded(actions, i + 1);
      return;   // the rest, and the closing below, run once the record is written
    } else if (std::holds_alternative<protocol::connect_upstream>(a)) {
      upstream_wanted_ = true;   // run() dials once an implicit-TLS handshake is done
    } else if (auto* p = std::get_if<protocol::pause_reading>(&a)) {
      if (p->which == leg::client) machine_paused_client_ = p->paused;
    } else if (auto* s = std::get_if<protocol::send_bytes>(&a)) {
      auto& box = outbox_of(s->to);
      if (box.closed || box.close_requested) continue;
      if (box.pending.empty()) box.pending = std::move(s->bytes);   // the common case: no copy
      else box.pending += s->bytes;
      wake_writer(s->to);
    } else if (auto* c = std::get_if<protocol::close_leg>(&a)) {
      if (c->reset) outbox_of(c->which).reset_requested = true;
      outbox_of(c->which).close_requested = true;
      wake_writer(c->which);
      if (c->which == leg::upstream && !upstream_connected_) {
        boost::system::error_code ig;
        upstream_.close(ig);
      }
    } else if (std::holds_alternative<protocol::reconnect_upstream>(a)) {
      upstream_out_.reconnect_requested = true;
      wake_writer(leg::upstream);
    } else if (auto* st = std::get_if<protocol::start_tls>(&a)) {
      outbox_of(st->which).tls_requested = true;
      wake_writer(st->which);
    } else if (auto* t = std::get_if<protocol::arm_timer>(&a)) {
      auto& deadline = t->which == leg::client ? client_deadline_ : upstream_deadline_;
      deadline = t->after.count() == 0 ? clock::time_point::max() : clock::now() + t->after;
      if (deadline < watchdog_timer_.expiry()) watchdog_timer_.cancel();
    } else if (auto* f = std::get_if<protocol::arm_fault_timer>(&a)) {
      fault_deadline_ = f->after.count() == 0 ? clock::time_point::max() : clock::now() + f->after;
      if (fault_deadline_ < watchdog_timer_.expiry()) watchdog_timer_.cancel();
    } else if (auto* sh = std::get_if<protocol::shape_leg>(&a)) {
      outbox_of(sh->which).shaping = sh->shaping;
    } else if (auto* b = std::get_if<protocol::segment_break>(&a)) {
      auto& box = outbox_of(b->which);
      box.breaks.emplace_back(box.pending.size(), b->gap);
    }
  }
  if (fsm_.finished()) {
    // The machine closes the legs it still considers open; a leg whose peer hung up first
    // gets no close action, yet its writer must still finish (or the session never ends).
    client_out_.close_requested = true;
    upstream_out_.close_requested = true;
    wake_writer(leg::client);
    wake_writer(leg::upstream);
    watchdog_timer_.cancel();
  }
  notify();
}

}  // namespace mailtap
