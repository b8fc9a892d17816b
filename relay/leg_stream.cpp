// A leg's stream: the TCP pipe, reads, writes (plain, TLS, shaped) and TLS set-up (leg_stream.hpp).
#include "relay/leg_stream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <tuple>

#include "relay/config.hpp"

namespace mailtap {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

namespace {
// The plain legs' shared read buffer (one per thread): an idle leg holds none of its own.
constexpr std::size_t plain_read_buffer_bytes = 64 * 1024;
}  // namespace

// ---------------------------------------------------------------- tcp_pipe

tcp_pipe::tcp_pipe(tcp::socket socket) : socket_(std::move(socket)) {
  if (socket_.is_open()) connected();
}

void tcp_pipe::connected() {
  boost::system::error_code ig;
  socket_.set_option(tcp::no_delay(true), ig);
  if (!socket_.non_blocking()) socket_.non_blocking(true, ig);   // a dialled one is already
}

asio::awaitable<boost::system::error_code> tcp_pipe::wait_readable() {
  auto [ec] = co_await socket_.async_wait(tcp::socket::wait_read, as_tuple(use_awaitable));
  co_return ec;
}

std::size_t tcp_pipe::read_now(asio::mutable_buffer into, boost::system::error_code& ec) {
  return socket_.read_some(into, ec);
}

asio::awaitable<write_outcome> tcp_pipe::write(asio::const_buffer bytes) {
  auto [ec, n] = co_await asio::async_write(socket_, bytes, as_tuple(use_awaitable));
  co_return write_outcome{ec, n};
}

void tcp_pipe::shutdown_send() {
  boost::system::error_code ig;
  socket_.shutdown(tcp::socket::shutdown_send, ig);
}

void tcp_pipe::close(bool reset) {
  boost::system::error_code ig;
  if (reset) socket_.set_option(tcp::socket::linger(true, 0), ig);
  socket_.close(ig);
}

// An IPv4 client of a dual-stack listener ("[::]:2525") shows as its IPv4 address, so that
// captures name it as an IPv4 listener would and `client` CIDR matchers see it.
std::string tcp_pipe::peer() const {
  boost::system::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  if (ec) return "unknown";
  auto address = ep.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped())
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  return endpoint{address.to_string(), ep.port()}.to_string();
}

// ---------------------------------------------------------------- leg_stream

leg_stream::leg_stream(std::unique_ptr<byte_pipe> pipe) : pipe_(std::move(pipe)) {}
leg_stream::~leg_stream() = default;

void leg_stream::replace_pipe(std::unique_ptr<byte_pipe> pipe) {
  drop_tls();
  pipe_ = std::move(pipe);
}

asio::awaitable<leg_stream::read_result> leg_stream::read_some() {
  if (secured()) {
    auto [ec, n] = co_await tls_->async_read_some(asio::buffer(*tls_buffer_), as_tuple(use_awaitable));
    co_return read_result{ec, std::string_view(tls_buffer_->data(), n)};
  }
  static thread_local std::array<char, plain_read_buffer_bytes> buffer;
  // A TCP leg waits on its socket here, not through the pipe: one coroutine frame fewer held
  // by every idle leg.
  boost::system::error_code ec;
  if (auto* socket = pipe_->tcp_socket()) std::tie(ec) = co_await socket->async_wait(tcp::socket::wait_read, as_tuple(use_awaitable));
  else ec = co_await pipe_->wait_readable();
  // A handshake may have begun (or finished) while we waited: its bytes are not ours.
  if (!ec && (handshake_due() || tls_busy || tls_)) co_return read_result{{}, {}, true};
  // A reconnect closed the connection under us: the new one is read from the top.
  if (ec && ((reconnect_requested && !close_requested) || tls_busy)) co_return read_result{{}, {}, true};
  if (ec) co_return read_result{ec, {}};
  std::size_t n = pipe_->read_now(asio::buffer(buffer), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) co_return read_result{{}, {}, true};
  co_return read_result{ec, std::string_view(buffer.data(), ec ? 0 : n)};
}

asio::awaitable<write_outcome> leg_stream::write(asio::const_buffer bytes) {
  if (!tls_) co_return co_await pipe_->write(bytes);
  auto [ec, n] = co_await asio::async_write(*tls_, bytes, as_tuple(use_awaitable));
  co_return write_outcome{ec, n};
}

asio::awaitable<boost::system::error_code> leg_stream::flush() {
  std::swap(pending, inflight_);
  std::swap(breaks_, inflight_breaks_);
  write_outcome out;
  write_started = std::chrono::steady_clock::now();
  if (shaping.active() || !inflight_breaks_.empty()) {
    shaped_in_flight_ = true;
    out = co_await write_shaped();
    shaped_in_flight_ = false;
  } else {
    out = co_await write(asio::buffer(inflight_));
  }
  write_started.reset();
  unwritten_ = out.ec ? inflight_.size() - std::min(out.written, inflight_.size()) : 0;
  inflight_.clear();
  inflight_breaks_.clear();
  co_return out.ec;
}

void leg_stream::write_now() {
  if (!writer_idle || pending.empty() || tls_ || tls_requested || tls_busy || reconnect_requested || close_requested ||
      shaping.active() || !breaks_.empty())
    return;
  auto* socket = pipe_->tcp_socket();
  if (socket == nullptr) return;
  boost::system::error_code ec;
  const std::size_t n = socket->write_some(asio::buffer(pending), ec);   // non-blocking: would_block when full
  if (!ec) pending.erase(0, n);
}

// Faults: the inflight bytes in segments (slice), paced (throttle), with a pause at each
// segment break. TCP_NODELAY is on, so each write leaves as its own segment.
asio::awaitable<write_outcome> leg_stream::write_shaped() {
  asio::steady_timer pause(co_await asio::this_coro::executor);
  std::size_t off = 0;
  std::size_t next_break = 0;
  const std::string& bytes = inflight_;
  while (off < bytes.size() || next_break < inflight_breaks_.size()) {
    std::size_t end = bytes.size();
    if (next_break < inflight_breaks_.size()) end = std::min(end, inflight_breaks_[next_break].first);
    std::chrono::microseconds wait{0};
    if (off >= end) {   // at a break: pause before what follows
      wait = inflight_breaks_[next_break++].second;
    } else {
      std::size_t n = end - off;
      if (shaping.segment_bytes > 0) n = std::min(n, shaping.segment_bytes);
      // Throttled writes go out in slices of about 50 ms worth of bytes.
      if (shaping.bytes_per_second > 0) n = std::min<std::size_t>(n, std::max<std::uint64_t>(1, shaping.bytes_per_second / 20));
      if (auto out = co_await write(asio::const_buffer(bytes.data() + off, n)); out.ec)
        co_return write_outcome{out.ec, off + out.written};
      off += n;
      write_started = std::chrono::steady_clock::now();   // progress: a stall counts from here
      if (shaping.segment_bytes > 0) wait = std::chrono::microseconds(shaping.gap_us);
      if (shaping.bytes_per_second > 0)
        wait = std::max(wait, std::chrono::microseconds(n * 1'000'000 / shaping.bytes_per_second));
    }
    if (wait.count() > 0 && (off < bytes.size() || next_break < inflight_breaks_.size())) {
      pause.expires_after(wait);
      co_await pause.async_wait(as_tuple(use_awaitable));
    }
  }
  co_return write_outcome{{}, bytes.size()};
}

leg_stream::tls_stream* leg_stream::begin_tls(asio::ssl::context& context) {
  auto* socket = pipe_->tcp_socket();
  if (!socket) return nullptr;
  tls_ = std::make_unique<tls_stream>(tls_transport(*socket), context);
  return tls_.get();
}

namespace {

// Where an SSL object keeps its leg's renegotiation flag (Asio keeps its verify callback in the
// SSL's app data, so the flag has an index of its own).
int renegotiation_flag_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// OpenSSL's info callback: the relay answers a peer's renegotiation (a TLS 1.2 ClientHello or
// HelloRequest after the handshake) with a no_renegotiation alert (RFC 5246 7.2.2). Runs
// inside SSL_read, on the leg's thread.
void note_refused_renegotiation(const SSL* ssl, int where, int alert) {
  if ((where & SSL_CB_WRITE_ALERT) == 0 || (alert & 0xff) != SSL_AD_NO_RENEGOTIATION) return;
  if (auto* flag = static_cast<bool*>(SSL_get_ex_data(ssl, renegotiation_flag_index()))) *flag = true;
}

}  // namespace

void leg_stream::handshake_done() {
  tls_buffer_ = std::make_unique<std::array<char, 16 * 1024>>();
  SSL* ssl = tls_->native_handle();
  SSL_set_ex_data(ssl, renegotiation_flag_index(), &renegotiation_refused_);
  SSL_set_info_callback(ssl, note_refused_renegotiation);
}

void leg_stream::drop_tls() {
  tls_.reset();
  tls_buffer_.reset();
}

asio::awaitable<void> leg_stream::shutdown_tls(std::chrono::milliseconds limit) {
  using namespace asio::experimental::awaitable_operators;
  if (!tls_) co_return;
  asio::steady_timer deadline(co_await asio::this_coro::executor, limit);
  co_await (tls_->async_shutdown(as_tuple(use_awaitable)) || deadline.async_wait(as_tuple(use_awaitable)));
}

}  // namespace mailtap
