// One leg's byte stream, the only place in relay/ that decides "TLS or plain": the
// connection underneath (a byte_pipe: a TCP socket, or a test's in-memory pipe), TLS over it
// once a handshake succeeded, the outbox its writer drains and the write shaping faults ask
// for. The session (relay/session.cpp) and the built-in sink (relay/sink_server.cpp) read and
// write their legs through it.
// Threading: one strand (the owner's); not thread-safe.
#pragma once
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <algorithm>
#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/fault.hpp"

namespace boost::asio::ssl {
class context;
template <typename Stream>
class stream;
}  // namespace boost::asio::ssl

namespace mailtap {

// What a write did: its error, and how many of its bytes the connection took before it.
struct write_outcome {
  boost::system::error_code ec;
  std::size_t written = 0;
};

// The connection under a leg. Reads are split in two so an idle leg holds no buffer: wait
// until bytes have arrived, then take them without blocking into the caller's buffer.
class byte_pipe {
 public:
  virtual ~byte_pipe() = default;
  virtual boost::asio::awaitable<boost::system::error_code> wait_readable() = 0;
  // Non-blocking: would_block when nothing is there after all.
  virtual std::size_t read_now(boost::asio::mutable_buffer into, boost::system::error_code& ec) = 0;
  // Writes all of `bytes` (or fails, saying how many were taken first).
  virtual boost::asio::awaitable<write_outcome> write(boost::asio::const_buffer bytes) = 0;
  virtual void shutdown_send() = 0;
  // `reset`: abortively (SO_LINGER 0: the peer sees RST, not FIN).
  virtual void close(bool reset) = 0;
  virtual bool is_open() const = 0;
  // "host:port" of the peer, or "unknown".
  virtual std::string peer() const = 0;
  // TLS runs over TCP only: null for other pipes.
  virtual boost::asio::ip::tcp::socket* tcp_socket() { return nullptr; }
};

// The product's pipe: a TCP socket, non-blocking, TCP_NODELAY (each write leaves as its own
// segment, which write shaping relies on).
class tcp_pipe final : public byte_pipe {
 public:
  // A connected socket gets its options now; a dialled one once connected (connected()).
  explicit tcp_pipe(boost::asio::ip::tcp::socket socket);
  void connected();
  boost::asio::awaitable<boost::system::error_code> wait_readable() override;
  std::size_t read_now(boost::asio::mutable_buffer into, boost::system::error_code& ec) override;
  boost::asio::awaitable<write_outcome> write(boost::asio::const_buffer bytes) override;
  void shutdown_send() override;
  void close(bool reset) override;
  bool is_open() const override { return socket_.is_open(); }
  std::string peer() const override;
  boost::asio::ip::tcp::socket* tcp_socket() override { return &socket_; }

 private:
  boost::asio::ip::tcp::socket socket_;
};

// The TCP connection under a leg's TLS. It passes reads and writes through; while `record` is
// set, it also keeps the first record_cap bytes read there. Each handshake sets it: bytes that
// are no TLS record are the peer's plaintext where its handshake should be (the upstream's after
// its 220 to STARTTLS, the client's after its STARTTLS), which the capture keeps and the session
// takes for injection (relay/session.cpp, handshake).
class tls_transport {
 public:
  using socket = boost::asio::ip::tcp::socket;
  using executor_type = socket::executor_type;
  using lowest_layer_type = socket::lowest_layer_type;
  static constexpr std::size_t record_cap = 4096;

  explicit tls_transport(socket& s) : socket_(&s) {}
  executor_type get_executor() { return socket_->get_executor(); }
  lowest_layer_type& lowest_layer() { return socket_->lowest_layer(); }
  const lowest_layer_type& lowest_layer() const { return socket_->lowest_layer(); }

  template <typename ConstBuffers, typename Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    return socket_->async_write_some(buffers, std::forward<Token>(token));
  }
  template <typename MutableBuffers, typename Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this, buffers](auto handler) {
          // The read keeps the handler's executor and its cancellation slot: a handshake or a
          // close_notify raced against a timer (awaitable operators ||) is cancelled through it.
          auto ex = boost::asio::get_associated_executor(handler, socket_->get_executor());
          auto slot = boost::asio::get_associated_cancellation_slot(handler);
          socket_->async_read_some(
              buffers, boost::asio::bind_cancellation_slot(
                           slot, boost::asio::bind_executor(ex, [this, buffers, handler = std::move(handler)](
                                                                    boost::system::error_code ec, std::size_t n) mutable {
                             keep(buffers, n);
                             std::move(handler)(ec, n);
                           })));
        },
        token);
  }

  std::string* record = nullptr;

 private:
  template <typename MutableBuffers>
  void keep(const MutableBuffers& buffers, std::size_t n) {
    if (!record || n == 0 || record->size() >= record_cap) return;
    const std::size_t old = record->size(), take = std::min(n, record_cap - old);
    record->resize(old + take);
    boost::asio::buffer_copy(boost::asio::buffer(record->data() + old, take), buffers);
  }
  socket* socket_;
};

class leg_stream {
 public:
  using tls_stream = boost::asio::ssl::stream<tls_transport>;

  explicit leg_stream(std::unique_ptr<byte_pipe> pipe);
  ~leg_stream();

  byte_pipe& pipe() { return *pipe_; }
  // A new connection for the leg (an upstream reconnect, a test's dial): TLS is gone with the old.
  void replace_pipe(std::unique_ptr<byte_pipe> pipe);

  // One read: what arrived, an error (eof included), or `again` when the read should be
  // retried (nothing there after all, or the leg's TLS state changed while it waited). Plain
  // legs read into one buffer per thread (an idle leg holds none); TLS legs into their own.
  // So `bytes` is valid only until the coroutine next suspends: use it before any co_await
  // (a read raced with a timer through awaitable operators `||` resumes later, after another
  // connection on the thread may have read into the same buffer; copy the bytes out first).
  struct read_result {
    boost::system::error_code error;
    std::string_view bytes;
    bool again = false;
  };
  boost::asio::awaitable<read_result> read_some();
  boost::asio::awaitable<write_outcome> write(boost::asio::const_buffer bytes);
  // Writes `pending` (with the shaping and segment breaks asked for), then empties it. On a
  // failure, unwritten() is how many of those bytes the connection never took.
  boost::asio::awaitable<boost::system::error_code> flush();
  std::size_t unwritten() const { return unwritten_; }
  // Whether flush() would pace what is pending (shaping, segment breaks), and whether a paced
  // flush is under way: the session's timers wait for it (the relay's delay, not the peer's).
  bool shapes_its_writes() const { return shaping.active() || !breaks_.empty(); }
  bool shaped_write_in_flight() const { return shaped_in_flight_; }
  // Writes what the socket takes of `pending` now, without suspending, when nothing but the
  // bytes stands in the way: a plain TCP leg, no shaping or breaks, no handshake, reconnect or
  // close asked for, and its writer idle (writer_idle). The rest stays for the writer, which
  // also reports any error. Saves the writer's wake-up, one scheduler round and its
  // epoll_wait per hop on the steady path (ARCHITECTURE.md, "Path 1", step 6).
  void write_now();

  // TLS: begin_tls creates the stream over the TCP connection (null when the pipe is not TCP);
  // handshake_done gives it its read buffer and watches for renegotiation; drop_tls forgets it
  // (a failed handshake).
  tls_stream* begin_tls(boost::asio::ssl::context& context);
  void handshake_done();
  void drop_tls();
  bool secured() const { return tls_ != nullptr && tls_buffer_ != nullptr; }
  // The peer asked to renegotiate TLS and OpenSSL refused it for the relay (tls_context:
  // SSL_OP_NO_RENEGOTIATION, a no_renegotiation alert) since the session last asked.
  bool take_renegotiation_refused() { return std::exchange(renegotiation_refused_, false); }
  tls_stream* tls() { return tls_.get(); }
  // TLS close_notify, bounded by `limit`; nothing on a plain leg.
  boost::asio::awaitable<void> shutdown_tls(std::chrono::milliseconds limit);

  void shutdown_send() { pipe_->shutdown_send(); }
  void close(bool reset = false) { pipe_->close(reset); }
  bool is_open() const { return pipe_->is_open(); }

  // The outbox and what the leg's writer has been asked to do after it.
  std::string pending;
  std::size_t size() const { return pending.size() + inflight_.size(); }
  bool close_requested = false;
  bool reset_requested = false;       // close with RST once what is queued is written
  bool closed = false;
  bool eof_seen = false;              // the peer finished sending (for lingering close)
  bool tls_requested = false;         // start_tls executed; the writer performs it
  // A handshake the writer will still perform: asked for, and no close asked for since (the
  // writer closes instead). Readers keep away from the connection until it is done. A reader
  // that waited on tls_requested alone after a close kept the session open for good (a client
  // resetting just as the upstream's 220 to the relay's STARTTLS came in).
  bool handshake_due() const { return tls_requested && !close_requested; }
  bool tls_busy = false;              // a handshake (or a reconnect) owns the connection: readers stay away
  bool reconnect_requested = false;   // reconnect_upstream executed; the writer performs it
  bool writer_idle = false;           // the leg's writer waits for its wake-up, nothing in flight
  // When the write in flight began (a flush that has not returned), or a paced one last made
  // progress; unset between writes. A peer that stops reading leaves it set: the session's
  // watchdog times that out.
  std::optional<std::chrono::steady_clock::time_point> write_started;
  // Faults: write shaping (throttle, slice) and segment breaks (offset into pending, pause).
  protocol::leg_shaping shaping;
  void add_break(std::chrono::microseconds gap) { breaks_.emplace_back(pending.size(), gap); }
  void discard_pending() { pending.clear(); breaks_.clear(); }

 private:
  boost::asio::awaitable<write_outcome> write_shaped();
  std::size_t unwritten_ = 0;
  bool shaped_in_flight_ = false;

  std::unique_ptr<byte_pipe> pipe_;
  std::unique_ptr<tls_stream> tls_;
  std::unique_ptr<std::array<char, 16 * 1024>> tls_buffer_;   // only TLS legs have their own
  bool renegotiation_refused_ = false;   // set by OpenSSL's info callback, on this leg's thread
  std::string inflight_;
  std::vector<std::pair<std::size_t, std::chrono::microseconds>> breaks_;
  std::vector<std::pair<std::size_t, std::chrono::microseconds>> inflight_breaks_;
};

}  // namespace mailtap
