// The built-in sink's network shell: listens on loopback (port chosen by the kernel) and
// runs a protocol::sink_fsm per connection. The relay reaches it over TCP like any
// upstream, so the upstream leg is captured and timed the same way.
// Threading: all on the io_context given at construction.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <atomic>
#include <string>

#include "protocol/sink_fsm.hpp"

namespace boost::asio::ssl {
class context;
}
#include "relay/config.hpp"
#include "relay/metrics.hpp"

namespace mailtap {

class leg_stream;

class sink_server {
 public:
  // `tls`: the server context for STARTTLS (null: STARTTLS is not offered). `metrics`: where
  // failed accepts are counted and their warnings rate-limited (null: logged every time).
  sink_server(boost::asio::io_context& io, protocol::sink_options options, boost::asio::ssl::context* tls,
              relay_metrics* metrics = nullptr);
  // Binds 127.0.0.1:0 and starts accepting. Returns the bound endpoint, or nullopt + error.
  std::optional<endpoint> start(std::string& error);
  void stop();
  std::uint64_t messages_accepted() const { return accepted_.load(); }

 private:
  boost::asio::awaitable<void> accept_on();
  boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket, std::uint64_t id);
  // The server side of STARTTLS on `client`: true once it is secured.
  boost::asio::awaitable<bool> handshake(leg_stream& client);

  boost::asio::io_context& io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  protocol::sink_options options_;
  boost::asio::ssl::context* tls_;
  relay_metrics* metrics_;
  std::atomic<std::uint64_t> accepted_{0};
};

}  // namespace mailtap
