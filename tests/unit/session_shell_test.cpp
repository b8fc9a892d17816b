// The session shell (relay/session.cpp) over in-memory pipes that fail on demand: a client
// and an upstream played by the test, one SMTP transaction walked step by step, and at each
// step a failure (EOF, a reset, a failed write, on either leg) or short reads. Each run is
// checked on what the upstream received, what the client received, both legs' closes, the
// capture the recorder wrote and the relay's counters. No sockets, no sleeps: the test's
// io_context runs until the session has ended (bounded in handler count and time).
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <algorithm>
#include <cstring>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "captures/reader.hpp"
#include "captures/writer.hpp"
#include "protocol/ip_address.hpp"
#include "relay/client_identity.hpp"
#include "relay/leg_stream.hpp"
#include "relay/session.hpp"
#include "relay/tls_context.hpp"
#include "relay/wake_signal.hpp"

namespace mailtap {
namespace {

namespace asio = boost::asio;
using error_code = boost::system::error_code;

// One side of a leg as the peer sees it: what it will send (chunks, each one read), what it
// received, and the failures it will cause.
struct peer_state {
  explicit peer_state(const asio::any_io_executor& ex) : arrived(ex) {}
  struct chunk {
    std::string bytes;
    error_code error;   // set: this read fails (eof, reset)
  };
  std::deque<chunk> input;
  wake_signal arrived;
  std::string received;
  std::size_t write_budget = std::string::npos;   // bytes accepted before writes fail
  bool fin_received = false;
  bool closed = false;
  bool reset = false;
  bool eof_sent = false;

  void send(std::string bytes) {
    input.push_back({std::move(bytes), {}});
    arrived.notify();
  }
  void send_in_pieces(const std::string& bytes, std::size_t piece) {
    for (std::size_t at = 0; at < bytes.size(); at += piece) input.push_back({bytes.substr(at, piece), {}});
    arrived.notify();
  }
  void fail_read(error_code ec) {
    if (ec == asio::error::eof) eof_sent = true;
    input.push_back({{}, ec});
    arrived.notify();
  }
};

class memory_pipe final : public byte_pipe {
 public:
  explicit memory_pipe(std::shared_ptr<peer_state> peer) : peer_(std::move(peer)) {}
  asio::awaitable<error_code> wait_readable() override {
    co_await peer_->arrived.wait_until([this] { return !peer_->input.empty() || peer_->closed; });
    co_return peer_->closed ? error_code(asio::error::operation_aborted) : error_code();
  }
  std::size_t read_now(asio::mutable_buffer into, error_code& ec) override {
    if (peer_->input.empty()) {
      ec = asio::error::would_block;
      return 0;
    }
    auto& front = peer_->input.front();
    if (front.error) {
      ec = front.error;   // stays: a leg that failed keeps failing
      return 0;
    }
    std::size_t n = std::min(into.size(), front.bytes.size());
    std::memcpy(into.data(), front.bytes.data(), n);
    front.bytes.erase(0, n);
    if (front.bytes.empty()) peer_->input.pop_front();
    ec = {};
    return n;
  }
  asio::awaitable<write_outcome> write(asio::const_buffer bytes) override {
    if (peer_->closed) co_return write_outcome{asio::error::bad_descriptor, 0};
    std::size_t n = std::min(bytes.size(), peer_->write_budget);
    peer_->received.append(static_cast<const char*>(bytes.data()), n);
    if (peer_->write_budget != std::string::npos) peer_->write_budget -= n;
    if (n < bytes.size()) co_return write_outcome{asio::error::connection_reset, n};
    co_return write_outcome{{}, n};
  }
  void shutdown_send() override {
    peer_->fin_received = true;
    if (!peer_->eof_sent) peer_->fail_read(asio::error::eof);   // a well-behaved peer closes too
  }
  void close(bool reset) override {
    peer_->closed = true;
    peer_->reset = reset;
    peer_->arrived.notify();
  }
  bool is_open() const override { return !peer_->closed; }
  std::string peer() const override { return "192.0.2.10:40000"; }

 private:
  std::shared_ptr<peer_state> peer_;
};

// A session over `client`'s pipe, started; the pointer expires once it has ended.
std::weak_ptr<session> start_session(asio::io_context& io, relay_context& ctx, std::shared_ptr<peer_state> client) {
  client_identity who;
  who.client = {*protocol::parse_ip("192.0.2.10"), 40000};
  who.destination = {*protocol::parse_ip("192.0.2.1"), 25};
  auto s = std::make_shared<session>(io.get_executor(), std::make_unique<memory_pipe>(std::move(client)), ctx, 1, who);
  s->start();
  return s;
}

// Runs handlers until `done` holds or nothing is left to run (bounded in count and time).
template <typename Done>
void run_until(asio::io_context& io, Done done) {
  for (int i = 0; i < 100000 && !done(); ++i)
    if (io.run_one_for(std::chrono::seconds(5)) == 0) break;
}

// One transaction, step by step: what the client sends, what the relay passes upstream, the
// upstream's answer (the relay's reply to the client). Step 0 is the upstream's greeting.
struct step {
  std::string client_sends;
  std::string upstream_gets;
  std::string upstream_answers;
};
const std::vector<step> transaction = {
    {"", "", "220 up.example ESMTP\r\n"},
    {"EHLO client.example\r\n", "EHLO client.example\r\n", "250-up.example\r\n250 PIPELINING\r\n"},
    {"MAIL FROM:<a@example.org>\r\n", "MAIL FROM:<a@example.org>\r\n", "250 2.1.0 Ok\r\n"},
    {"RCPT TO:<b@example.org>\r\n", "RCPT TO:<b@example.org>\r\n", "250 2.1.5 Ok\r\n"},
    {"DATA\r\n", "DATA\r\n", "354 go ahead\r\n"},
    {"Subject: hi\r\n\r\nbody\r\n.\r\n", "Subject: hi\r\n\r\nbody\r\n.\r\n", "250 2.0.0 Ok: queued as 1\r\n"},
    {"QUIT\r\n", "QUIT\r\n", "221 2.0.0 Bye\r\n"},
};

enum class failure { none, client_eof, client_reset, upstream_eof, upstream_reset, client_write, upstream_write };

const char* name_of(failure f) {
  switch (f) {
    case failure::none: return "none";
    case failure::client_eof: return "client_eof";
    case failure::client_reset: return "client_reset";
    case failure::upstream_eof: return "upstream_eof";
    case failure::upstream_reset: return "upstream_reset";
    case failure::client_write: return "client_write";
    case failure::upstream_write: return "upstream_write";
  }
  return "?";
}

struct outcome {
  std::string upstream_received;
  std::string client_received;
  bool client_closed = false;
  bool upstream_closed = false;
  bool upstream_dialled = false;
  bool ended = false;
  std::optional<captures::capture> capture;
  std::uint64_t delivered = 0;
};

class SessionShell : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("mailtap-session-shell-" + std::to_string(::getpid()) + "-" +
            testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Runs the transaction; before step `at` the failure happens. `piece`: the client's and
  // the upstream's bytes arrive in reads of at most this many bytes.
  outcome run(failure f, std::size_t at, std::size_t piece = std::string::npos) {
    asio::io_context io;
    // The recorder answers capture barriers from its own thread: the io_context waits for them.
    auto guard = asio::make_work_guard(io);
    std::string error;
    auto store = captures::store::open(dir_, error);
    EXPECT_TRUE(store) << error;
    config cfg;
    relay_metrics metrics;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"   // the rest stay as they default
    relay_context ctx{.cfg = cfg, .captures = store.get(), .metrics = metrics};
#pragma GCC diagnostic pop
    auto client = std::make_shared<peer_state>(io.get_executor());
    auto upstream = std::make_shared<peer_state>(io.get_executor());
    bool dialled = false;
    ctx.dial_upstream = [upstream, &dialled](leg_stream& leg) -> asio::awaitable<std::string> {
      dialled = true;
      leg.replace_pipe(std::make_unique<memory_pipe>(upstream));
      co_return std::string();
    };
    auto send = [piece](peer_state& p, const std::string& bytes) {
      if (bytes.empty()) return;
      if (piece == std::string::npos) p.send(bytes);
      else p.send_in_pieces(bytes, piece);
    };
    const std::weak_ptr<session> alive = start_session(io, ctx, client);
    std::string expected_upstream;
    bool quit_answered = false;
    bool upstream_dead = false;
    for (std::size_t k = 0; k < transaction.size() && !alive.expired(); ++k) {
      if (k == at) {
        switch (f) {
          case failure::none: break;
          case failure::client_eof: client->fail_read(asio::error::eof); break;
          case failure::client_reset: client->fail_read(asio::error::connection_reset); break;
          case failure::upstream_eof: upstream->fail_read(asio::error::eof); break;
          case failure::upstream_reset: upstream->fail_read(asio::error::connection_reset); break;
          case failure::client_write: client->write_budget = 0; break;
          case failure::upstream_write: upstream->write_budget = 0; break;
        }
        // A client that failed sends nothing more; one whose upstream failed goes on (inside a
        // message the relay can answer only once the client has finished it).
        if (f == failure::client_eof || f == failure::client_reset) break;
        if (f == failure::upstream_eof || f == failure::upstream_reset) upstream_dead = true;
      }
      const auto& st = transaction[k];
      if (upstream_dead) {
        if (client->closed) break;
        std::size_t client_had = client->received.size();
        send(*client, st.client_sends);
        run_until(io, [&] { return alive.expired() || client->closed || client->received.size() > client_had; });
        continue;
      }
      send(*client, st.client_sends);
      expected_upstream += st.upstream_gets;
      run_until(io, [&] { return alive.expired() || upstream->received.size() >= expected_upstream.size(); });
      if (alive.expired()) break;
      if (upstream->closed || upstream->received != expected_upstream) {
        upstream_dead = true;   // a failed write: the relay gave up on the upstream
        continue;
      }
      std::size_t client_had = client->received.size();
      send(*upstream, st.upstream_answers);
      quit_answered = quit_answered || st.upstream_gets == "QUIT\r\n";
      run_until(io, [&] { return alive.expired() || client->received.size() > client_had; });
    }
    // A live upstream answers the relay's own QUIT (after the client failed) as a server would.
    const bool upstream_alive = f != failure::upstream_eof && f != failure::upstream_reset && f != failure::upstream_write;
    auto quit_unanswered = [&] {
      return upstream_alive && upstream->received.ends_with("QUIT\r\n") &&
             !quit_answered;
    };
    run_until(io, [&] { return alive.expired() || quit_unanswered(); });
    if (quit_unanswered()) {
      quit_answered = true;
      upstream->send("221 2.0.0 Bye\r\n");
    }
    run_until(io, [&] { return alive.expired(); });
    outcome o;
    o.ended = alive.expired();
    o.upstream_received = upstream->received;
    o.client_received = client->received;
    o.client_closed = client->closed;
    o.upstream_closed = upstream->closed;
    o.upstream_dialled = dialled;
    o.delivered = metrics.messages_delivered.load();
    store.reset();   // writes everything out
    for (const auto& file : std::filesystem::directory_iterator(dir_)) {
      o.capture = captures::read_capture(file.path(), error);
      EXPECT_TRUE(o.capture) << error;
      std::filesystem::remove(file.path());
    }
    return o;
  }

  std::filesystem::path dir_;
};

std::string all_upstream_gets(std::size_t steps) {
  std::string s;
  for (std::size_t k = 0; k < steps; ++k) s += transaction[k].upstream_gets;
  return s;
}

TEST_F(SessionShell, WholeTransactionIsRelayedBothWaysAndRecorded) {
  for (std::size_t piece : {std::string::npos, std::size_t{1}, std::size_t{3}}) {
    SCOPED_TRACE("reads of at most " + std::to_string(piece) + " bytes");
    auto o = run(failure::none, 0, piece);
    ASSERT_TRUE(o.ended);
    EXPECT_EQ(o.upstream_received, all_upstream_gets(transaction.size()));
    // The relay answers EHLO with its own capability list; every other reply passes through.
    EXPECT_TRUE(o.client_received.starts_with("220 ")) << o.client_received;
    EXPECT_NE(o.client_received.find("250 2.0.0 Ok: queued as 1\r\n"), std::string::npos) << o.client_received;
    EXPECT_TRUE(o.client_received.ends_with("221 2.0.0 Bye\r\n")) << o.client_received;
    EXPECT_TRUE(o.client_closed);
    EXPECT_TRUE(o.upstream_closed);
    EXPECT_EQ(o.delivered, 1u);
    ASSERT_TRUE(o.capture);
    ASSERT_TRUE(o.capture->end);
    EXPECT_EQ(o.capture->end->reason, "client_quit");
    EXPECT_EQ(captures::session_outcome(*o.capture), "delivered");
    ASSERT_EQ(o.capture->transactions.size(), 1u);
    EXPECT_EQ(o.capture->transactions[0].mail_from, "a@example.org");
  }
}

// Every failure at every step: the session ends, both legs are closed, the upstream got
// exactly the commands the client sent before the failure (plus, at most, the relay's own
// QUIT), and the capture is complete with one end record whose reason names the failure.
TEST_F(SessionShell, EveryFailureAtEveryStepEndsTheSessionCleanly) {
  const failure failures[] = {failure::client_eof, failure::client_reset, failure::upstream_eof,
                              failure::upstream_reset, failure::client_write, failure::upstream_write};
  for (failure f : failures) {
    for (std::size_t at = 0; at < transaction.size(); ++at) {
      for (std::size_t piece : {std::string::npos, std::size_t{2}}) {
        SCOPED_TRACE(std::string(name_of(f)) + " before step " + std::to_string(at) + ", reads of at most " +
                     std::to_string(piece));
        auto o = run(f, at, piece);
        ASSERT_TRUE(o.ended) << "the session did not end; the upstream got:\n"
                             << o.upstream_received << "the client got:\n" << o.client_received;
        EXPECT_TRUE(o.client_closed);
        // A client gone before anything was read ends the session before the dial (the client
        // is read during the dial: open_upstream); an upstream that was dialled is closed.
        if (f == failure::client_eof || f == failure::client_reset) {
          if (at == 0) {
            EXPECT_FALSE(o.upstream_dialled);
          }
          if (o.upstream_dialled) {
            EXPECT_TRUE(o.upstream_closed);
          }
        } else {
          EXPECT_TRUE(o.upstream_closed);
        }
        // The upstream saw the commands up to the failure, never one after it.
        const std::string before = all_upstream_gets(at);
        const std::string through = all_upstream_gets(std::min(at + 1, transaction.size()));
        EXPECT_TRUE(o.upstream_received.starts_with(before) || before.starts_with(o.upstream_received))
            << o.upstream_received;
        std::string rest = o.upstream_received.size() > through.size() ? o.upstream_received.substr(through.size())
                                                                       : std::string();
        EXPECT_TRUE(rest.empty() || rest == "QUIT\r\n") << "after the failure the upstream got: " << rest;
        // A message is delivered once the upstream's 250 for it came back: a failed write to
        // the client after the body went up does not undo that.
        const std::size_t body = 5;
        EXPECT_EQ(o.delivered, at > body || (f == failure::client_write && at == body) ? 1u : 0u);
        ASSERT_TRUE(o.capture);
        ASSERT_TRUE(o.capture->end) << "no end record";
        EXPECT_TRUE(o.capture->complete);
        const bool client_failed = f == failure::client_eof || f == failure::client_reset || f == failure::client_write;
        const std::size_t quit = transaction.size() - 1;
        // A write that fails on the QUIT (or its 221) ends a session the client already ended.
        const bool quit_went_out = at == quit && (f == failure::client_write || f == failure::upstream_write);
        EXPECT_EQ(o.capture->end->reason, quit_went_out ? "client_quit" : client_failed ? "client_closed" : "upstream_closed");
        if (!client_failed && !quit_went_out) {
          // The client is told, with a 421, that the service went away (RFC 5321 3.8).
          EXPECT_NE(o.client_received.find("421 "), std::string::npos) << o.client_received;
        }
        if (f == failure::upstream_eof || f == failure::upstream_reset) {
          // A lost upstream is written nothing more: not what the client sent after, not a QUIT.
          EXPECT_EQ(o.upstream_received, before);
        }
      }
    }
  }
}

// Whether the capture has a note that starts with `lost` and ends by naming `never` bytes
// recorded as sent but never written.
bool notes_unwritten(const captures::capture& c, std::string_view lost, std::size_t never) {
  const std::string ending = "; the last " + std::to_string(never) + " bytes recorded as sent were never written";
  return std::any_of(c.events.begin(), c.events.end(), [&](const captures::event& e) {
    const auto* n = std::get_if<captures::note_event>(&e);
    return n && n->text.starts_with(lost) && n->text.ends_with(ending);
  });
}

// Bytes are recorded as sent when they are queued: a write that then fails says, in the
// capture, how many of them never left, so that `show` does not read them as delivered.
TEST_F(SessionShell, AFailedWriteSaysWhichRecordedBytesNeverLeft) {
  const std::size_t mail = 2;   // the client can take nothing from the MAIL step on: its 250 fails
  auto o = run(failure::client_write, mail);
  ASSERT_TRUE(o.capture);
  EXPECT_TRUE(notes_unwritten(*o.capture, "client connection lost: write failed: ",
                              transaction[mail].upstream_answers.size()));

  o = run(failure::upstream_write, mail);   // the MAIL command itself fails to go up
  ASSERT_TRUE(o.capture);
  EXPECT_TRUE(notes_unwritten(*o.capture, "upstream_closed: upstream connection lost: write failed: ",
                              transaction[mail].upstream_gets.size()));
}

// A hostile trial: a client that reset its connection just as the upstream's 220 to the relay's
// STARTTLS came in left its session open for good (sessions_active never fell, the capture file
// stayed open, and enough of them filled max_sessions). The machine had asked for the upstream's
// handshake and then, the client gone, for both legs' close: the writer closed instead of
// shaking hands, and the upstream's reader waited for a handshake that would never come. Both
// arrive here before the session's handlers run, the 220 first.
TEST_F(SessionShell, AClientGoneAsTheUpstreamAgreesToStarttlsStillEndsTheSession) {
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::string error;
  auto store = captures::store::open(dir_, error);
  ASSERT_TRUE(store) << error;
  config cfg;   // STARTTLS offered, upstream TLS mirrored: the client's STARTTLS goes upstream
  relay_metrics metrics;
  server_tls client_tls;
  asio::ssl::context upstream_tls(asio::ssl::context::tls_client);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"   // the rest stay as they default
  relay_context ctx{.cfg = cfg, .captures = store.get(), .metrics = metrics};
#pragma GCC diagnostic pop
  ctx.client_tls = &client_tls;
  ctx.upstream_tls = &upstream_tls;
  auto client = std::make_shared<peer_state>(io.get_executor());
  auto upstream = std::make_shared<peer_state>(io.get_executor());
  ctx.dial_upstream = [upstream](leg_stream& leg) -> asio::awaitable<std::string> {
    leg.replace_pipe(std::make_unique<memory_pipe>(upstream));
    co_return std::string();
  };
  const std::weak_ptr<session> alive = start_session(io, ctx, client);
  upstream->send("220 up.example ESMTP\r\n");
  run_until(io, [&] { return client->received.starts_with("220 "); });
  client->send("STARTTLS\r\n");
  run_until(io, [&] { return upstream->received == "STARTTLS\r\n"; });
  ASSERT_EQ(upstream->received, "STARTTLS\r\n");
  upstream->send("220 2.0.0 Ready to start TLS\r\n");
  client->fail_read(asio::error::connection_reset);
  run_until(io, [&] { return alive.expired(); });
  EXPECT_TRUE(alive.expired()) << "the session is still open";
  EXPECT_EQ(metrics.sessions_active.load(), 0u);
  EXPECT_TRUE(upstream->closed);
  EXPECT_TRUE(client->closed);
  store.reset();   // writes everything out
  std::vector<std::filesystem::path> files(std::filesystem::directory_iterator(dir_), {});
  ASSERT_EQ(files.size(), 1u);
  auto cap = captures::read_capture(files[0], error);
  ASSERT_TRUE(cap) << error;
  ASSERT_TRUE(cap->end);
  EXPECT_EQ(cap->end->reason, "client_closed");
}

}  // namespace
}  // namespace mailtap
