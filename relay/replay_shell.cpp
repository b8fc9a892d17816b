// `mailtap replay`'s I/O: the listener and sessions of the replay server, the connections of
// the replay client, both driving their machine with one loop (drive()).
#include "relay/replay_shell.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <functional>
#include <list>
#include <optional>

#include "relay/accept_loop.hpp"
#include "relay/leg_stream.hpp"
#include "relay/tls_context.hpp"

namespace mailtap {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;

namespace {

// A TLS handshake or a connection that has not completed by then has failed.
constexpr std::chrono::seconds handshake_limit{30};
constexpr std::chrono::seconds connect_limit{30};

std::uint64_t since(clock::time_point t0) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - t0).count());
}

// A handshake on `leg`: as the TLS server (the replay server), or as the client that does not
// verify the peer (the replay client; SNI is `host` when it is a name).
asio::awaitable<bool> handshake(leg_stream& leg, asio::ssl::context& context, bool as_client, const std::string& host) {
  using namespace asio::experimental::awaitable_operators;
  auto* tls = leg.begin_tls(context);
  if (!tls) co_return false;
  std::string error;
  if (as_client && !prepare_client_ssl(tls->native_handle(), host, peer_verification::off, error)) {
    leg.drop_tls();
    co_return false;
  }
  asio::steady_timer limit(co_await asio::this_coro::executor, handshake_limit);
  auto r = co_await (tls->async_handshake(as_client ? asio::ssl::stream_base::client : asio::ssl::stream_base::server,
                                          as_tuple(use_awaitable)) ||
                     limit.async_wait(as_tuple(use_awaitable)));
  if (r.index() == 1 || std::get<0>(std::get<0>(r))) {
    leg.drop_tls();
    co_return false;
  }
  leg.handshake_done();
  co_return true;
}

// One read whose bytes are copied out into `into`: leg_stream::read_some's bytes live in a
// buffer shared by every plain leg of the thread, and `||` below resumes only once the timer it
// cancelled has completed, by when another connection may have read into that buffer. Left in
// `into` rather than returned: when the timer wins, `||` still waits for the read it cancelled,
// which may have taken bytes by then (its wait completed in the same round), and gives only the
// timer's result.
struct owned_read {
  boost::system::error_code error;
  std::string bytes;
  bool again = false;
};
asio::awaitable<void> read_into(leg_stream& leg, std::optional<owned_read>& into) {
  auto r = co_await leg.read_some();
  into.emplace(owned_read{r.error, std::string(r.bytes), r.again});
}

// One connection driven by a replay machine until it finishes: its actions carried out in
// order (bytes queued and written, a handshake once they are out, the one timer re-armed),
// then the next read or the timer, whichever comes first. Cancelling `timer` from outside
// wakes the loop to carry out what the machine was told meanwhile (the server's on_stop).
template <typename Machine, typename OnBytes, typename OnClosed>
asio::awaitable<void> drive(leg_stream& leg, Machine& fsm, asio::steady_timer& timer, asio::ssl::context* tls,
                            bool as_client, const std::string& host, clock::time_point t0, OnBytes on_bytes,
                            OnClosed on_closed) {
  using namespace asio::experimental::awaitable_operators;
  timer.expires_at(clock::time_point::max());
  std::optional<owned_read> read;   // what the last race's read took, not yet the machine's
  for (;;) {
    for (auto& a : fsm.take_actions()) {
      std::visit(protocol::overloaded{
                     [&](protocol::send_bytes& b) { leg.pending += b.bytes; },
                     [&](const protocol::start_tls&) { leg.tls_requested = true; },
                     [&](const protocol::close_leg& c) {
                       leg.close_requested = true;
                       leg.reset_requested = c.reset;
                     },
                     [&](const protocol::arm_timer& t) {
                       if (t.after.count() == 0) timer.expires_at(clock::time_point::max());
                       else timer.expires_after(t.after);
                     },
                     // The replay machines have one leg, no faults and no recorder: they never ask these.
                     [](const protocol::arm_fault_timer&) {}, [](const protocol::shape_leg&) {},
                     [](const protocol::segment_break&) {}, [](const protocol::reconnect_upstream&) {},
                     [](const protocol::connect_upstream&) {}, [](const protocol::capture_barrier&) {},
                     [](const protocol::await_capture&) {},
                     [](const protocol::pause_reading&) {},
                 },
                 a);
    }
    if (!leg.pending.empty() && co_await leg.flush()) {
      on_closed(since(t0));
      (void)fsm.take_actions();
      break;
    }
    if (leg.close_requested || fsm.finished()) break;
    if (std::exchange(leg.tls_requested, false)) {
      if (tls && co_await handshake(leg, *tls, as_client, host)) fsm.on_tls_ready(since(t0));
      else fsm.on_tls_failed(since(t0));
      continue;
    }
    // A read that took bytes while the timer won the race: the machine's next event, after the
    // timer's actions were carried out, before the leg is read again.
    if (!read) {
      auto r = co_await (read_into(leg, read) || timer.async_wait(as_tuple(use_awaitable)));
      if (r.index() == 1) {
        timer.expires_at(clock::time_point::max());
        fsm.on_timer(since(t0));
        if (read && (read->again || read->error == asio::error::operation_aborted)) read.reset();
        continue;
      }
    }
    owned_read taken = std::move(*read);
    read.reset();
    if (taken.again) continue;
    if (taken.error) on_closed(since(t0));
    else on_bytes(taken.bytes, since(t0));
  }
  leg.shutdown_send();
  leg.close(leg.reset_requested);
}

std::optional<tcp::endpoint> resolve_listen(asio::io_context& io, const endpoint& where, std::string& error) {
  boost::system::error_code ec;
  tcp::resolver resolver(io);
  auto found = resolver.resolve(where.host, std::to_string(where.port), tcp::resolver::passive, ec);
  if (ec || found.empty()) {
    error = "--listen " + where.to_string() + ": cannot resolve: " + (ec ? ec.message() : "no address");
    return std::nullopt;
  }
  return found.begin()->endpoint();
}

}  // namespace

bool run_replay_server(const replay::script& s, const replay_server_options& o,
                       const std::function<void(const std::string&)>& ready,
                       const std::function<void(const replay::server_session&)>& session_done, std::string& error) {
  asio::io_context io;
  std::unique_ptr<server_tls> tls;
  if (s.starttls || s.implicit_tls) {   // the certificate the relay's client leg presents
    tls_settings settings;
    settings.cert_file = o.cert_file;
    settings.key_file = o.key_file;
    settings.state_dir = o.state_dir.empty() ? default_state_dir() : o.state_dir;
    tls = make_server_tls(settings, error);
    if (!tls) return false;
  }
  auto where = resolve_listen(io, o.listen, error);
  if (!where) return false;
  tcp::acceptor acceptor(io);
  boost::system::error_code ec;
  acceptor.open(where->protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(*where, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error = "--listen " + o.listen.to_string() + ": " + ec.message();
    return false;
  }
  const auto bound = acceptor.local_endpoint();
  ready(endpoint{bound.address().to_string(), bound.port()}.to_string());

  // SIGINT or SIGTERM: no more clients, and each live session is answered 421 4.3.2, closed
  // and reported (a divergence, `stopped`), as the relay drains; a second signal stops at once.
  asio::signal_set signals(io, SIGINT, SIGTERM);
  bool stopping = false;
  std::size_t started = 0, active = 0;
  std::list<std::function<void()>> live_sessions;   // each one's stop
  std::function<void()> wait_for_signal = [&] {
    signals.async_wait([&](const boost::system::error_code& e, int) {
      if (e) return;
      boost::system::error_code ig;
      acceptor.close(ig);
      if (stopping || active == 0) {
        io.stop();
        return;
      }
      stopping = true;
      for (auto& stop : live_sessions) stop();
      wait_for_signal();
    });
  };
  wait_for_signal();
  auto serve = [&](tcp::socket socket) -> asio::awaitable<void> {
    leg_stream leg(std::make_unique<tcp_pipe>(std::move(socket)));
    replay::server_fsm fsm(s, o.pace, o.server);
    asio::steady_timer timer(io);
    const auto t0 = clock::now();
    const std::string peer = leg.pipe().peer();
    fsm.on_start(0);
    if (stopping) fsm.on_stop(0);
    const auto me = live_sessions.insert(live_sessions.end(), [&] {
      fsm.on_stop(since(t0));
      timer.cancel();   // drive() wakes and carries out the 421 and the close
    });
    co_await drive(
        leg, fsm, timer, tls ? &tls->ctx : nullptr, false, std::string(), t0,
        [&](std::string_view bytes, std::uint64_t now) { fsm.on_client_bytes(bytes, now); },
        [&](std::uint64_t now) { fsm.on_client_closed(now); });
    live_sessions.erase(me);
    session_done(replay::server_session{s.path, peer, fsm.played(), fsm.divergences(), s.steps.size(), fsm.noted()});
  };
  accept_handlers handlers;
  handlers.context_for_next = [&io]() -> asio::io_context& { return io; };
  handlers.failed = [](const boost::system::error_code& e) {
    std::fprintf(stderr, "mailtap replay server: accept failed: %s\n", e.message().c_str());
  };
  handlers.serve = [&](tcp::socket socket) {
    ++started;
    ++active;
    if (o.sessions != 0 && started >= o.sessions) {   // the last session: no more clients
      boost::system::error_code ig;
      acceptor.close(ig);
    }
    asio::co_spawn(io, serve(std::move(socket)), [&](std::exception_ptr) {
      if (--active == 0 && (stopping || (o.sessions != 0 && started >= o.sessions))) signals.cancel();
    });
  };
  asio::co_spawn(io, accept_loop(acceptor, std::move(handlers)), asio::detached);
  io.run();
  return true;
}

namespace {

struct client_context {
  asio::io_context& io;
  const replay_client_options& options;
  asio::ssl::context* tls;
};

asio::awaitable<void> replay_one(const client_context& cx, const std::filesystem::path& path, replay::client_run& run) {
  using namespace asio::experimental::awaitable_operators;
  const auto started = clock::now();
  run.path = path.string();
  run.target = cx.options.target.to_string();
  std::string error;
  auto cap = captures::read_capture(path, error);
  std::optional<replay::script> script;
  if (cap) script = replay::build_script(*cap, error);
  cap.reset();
  if (!script) {
    run.unreadable = true;
    run.error = error;
    co_return;
  }
  run.session = script->session;
  run.faults = script->faults;
  run.incomplete = script->end_reason.empty();
  // --tls-on-connect goes to the machine beside the script's own implicit_tls, so that its notes
  // can say whether the recording or the flag asked for TLS from connect.
  replay::client_options client = cx.options.client;
  client.tls_on_connect = cx.options.tls_on_connect;
  replay::client_fsm fsm(*script, client);

  tcp::resolver resolver(cx.io);
  auto [rec, found] = co_await resolver.async_resolve(cx.options.target.host, std::to_string(cx.options.target.port),
                                                      as_tuple(use_awaitable));
  tcp::socket socket(cx.io);
  boost::system::error_code cec = rec;
  if (!rec) {
    asio::steady_timer limit(cx.io, connect_limit);
    auto r = co_await (asio::async_connect(socket, found, as_tuple(use_awaitable)) ||
                       limit.async_wait(as_tuple(use_awaitable)));
    if (r.index() == 1) cec = asio::error::timed_out;
    else cec = std::get<0>(std::get<0>(r));
  }
  const auto t0 = clock::now();
  if (cec) {
    run.error = "cannot connect to " + run.target + ": " + cec.message();
    run.unreachable = true;
    fsm.on_connected(0);
    fsm.on_connect_failed(0, cec.message());
  } else {
    leg_stream leg(std::make_unique<tcp_pipe>(std::move(socket)));
    asio::steady_timer timer(cx.io);
    fsm.on_connected(0);
    co_await drive(
        leg, fsm, timer, cx.tls, true, cx.options.target.host, t0,
        [&](std::string_view bytes, std::uint64_t now) { fsm.on_server_bytes(bytes, now); },
        [&](std::uint64_t now) { fsm.on_server_closed(now); });
  }
  run.results = fsm.results();
  run.diverged = fsm.diverged();
  run.seconds = std::chrono::duration<double>(clock::now() - started).count();
}

}  // namespace

std::vector<replay::client_run> run_replay_clients(const std::vector<std::filesystem::path>& captures,
                                                   const replay_client_options& o) {
  asio::io_context io;
  std::vector<replay::client_run> runs(captures.size());
  std::string error;
  tls_settings settings;
  settings.insecure_upstream = true;
  auto tls = make_client_tls(settings, error);
  client_context cx{io, o, tls.get()};
  std::size_t next = 0;
  auto worker = [&]() -> asio::awaitable<void> {
    while (next < captures.size()) {
      const std::size_t i = next++;
      co_await replay_one(cx, captures[i], runs[i]);
    }
  };
  const std::size_t workers = std::max<std::size_t>(1, std::min(o.jobs, captures.size()));
  for (std::size_t w = 0; w < workers; ++w) asio::co_spawn(io, worker(), asio::detached);
  io.run();
  return runs;
}

}  // namespace mailtap
