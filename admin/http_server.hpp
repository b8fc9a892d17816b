// The admin API's HTTP/1.1 server: an acceptor on one of the relay's io_contexts, one
// coroutine per connection, and two worker threads on which the handler runs (it reads
// capture files: never on a thread that also serves SMTP sessions). The only file that
// includes Boost.Beast (admin/http_server.cpp): the rest of admin/ sees plain requests and
// responses (admin/http_types.hpp).
// Bounded: request headers and body have size limits (431 and 413), a request must arrive
// within request_timeout (else the connection is closed), at most max_connections at once (at the
// cap a new one closes the keep-alive connection idle longest between requests; with none idle,
// the one longest in an unfinished request, which gets 503; with neither, every connection
// answering a request, the new one gets 503 and is closed), at most max_requests_per_connection
// on one keep-alive connection. A request Beast cannot parse gets 400. Every response carries X-Content-Type-Options:
// nosniff and a Content-Security-Policy that allows nothing (the API serves data), unless it
// brings its own (the web UI's files: admin/ui_assets.hpp). Threading: construct, listen and start on any thread before the io_context runs;
// the destructor after it stopped.
#pragma once
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "admin/http_types.hpp"
#include "relay/config.hpp"
#include "relay/event_hub.hpp"

namespace mailtap::admin {

struct http_limits {
  std::size_t max_header_bytes = 8 * 1024;     // Beast's default header limit
  std::size_t max_body_bytes = 256 * 1024;     // a fault table or a scenario path is a few hundred bytes
  std::size_t max_connections = 16;
  std::size_t max_requests_per_connection = 100;
  std::chrono::milliseconds request_timeout{10'000};   // to receive one whole request
  std::chrono::milliseconds write_timeout{30'000};     // to send one response (a raw capture may be large)
  std::chrono::milliseconds idle_timeout{30'000};      // a keep-alive connection between requests
};

// A WebSocket endpoint that streams events (RFC 6455): an upgrade request on `path` is
// admitted (or refused with the response `admit` returns), then gets a subscription and is
// sent each event as a text message, and {"type":"dropped","count":N} when N were lost
// because it read too slowly. What it sends is ignored, but a close ends it.
struct websocket_route {
  std::string path;
  std::function<std::optional<response>(const request&)> admit;
  // Null when no subscription can be had (too many subscribers): 503.
  std::function<std::shared_ptr<event_subscription>(std::function<void()> wake)> subscribe;
};

class http_server {
 public:
  using handler = std::function<response(const request&)>;
  http_server(boost::asio::io_context& io, handler run, http_limits limits = {});
  ~http_server();
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  // Binds and listens. False and a one-line error when it cannot.
  bool listen(const endpoint& where, std::string& error);
  endpoint local_endpoint() const;
  // Spawns the accept loop on the io_context.
  void start();
  // Before start().
  void add_websocket(websocket_route route);

  struct state;   // shared with the connections (admin/http_server.cpp)

 private:
  std::shared_ptr<state> state_;
};

}  // namespace mailtap::admin
