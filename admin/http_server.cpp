// Beast connections of the admin API (admin/http_server.hpp). Reading order: the shared
// state, one connection (read a request, run the handler on the worker, write), the server.
#include "admin/http_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/post.hpp>
#include <algorithm>
#include <list>
#include <optional>

#include "admin/auth.hpp"
#include "relay/accept_loop.hpp"
#include "relay/log_limiter.hpp"

namespace mailtap::admin {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

struct http_server::state {
  state(asio::io_context& context, handler h, http_limits l)
      : io(context), acceptor(context), run(std::move(h)), limits(l) {}
  asio::io_context& io;
  tcp::acceptor acceptor;
  handler run;
  http_limits limits;
  // Two, so that /healthz and /readyz are answered while a filtered listing reads captures.
  asio::thread_pool worker{2};
  std::size_t connections = 0;   // the io_context's thread only
  // Connections reading a request (the io_context's thread only), each listed by its coroutine
  // while it reads. At max_connections a new connection closes one to make room
  // (room_for_one): the keep-alive one idle longest between requests (RFC 9112 9.8 lets a
  // server close an idle connection at any time), else the one longest in an unfinished
  // request (its headers or body still arriving: a client trickling them byte by byte held its
  // slot for the whole request_timeout). A request read whole, being answered, is never
  // listed. So neither idle nor slow clients can hold every slot.
  struct reader {
    beast::tcp_stream* stream;
    bool idle;                                      // between requests: nothing of the next one parsed yet
    std::chrono::steady_clock::time_point since;    // when it became idle, or its request began
    bool closed_for_room = false;
  };
  std::list<reader*> readers;
  log_limiter warnings;          // accept failures repeat every backoff while descriptors run out
  std::optional<websocket_route> websocket;
};

namespace {

using beast_request = http::request<http::string_body>;
using beast_response = http::response<http::string_body>;

// Headers every response carries: the API's data is never to be sniffed or rendered as a page.
// A response with a policy of its own keeps it (the web UI's pages: admin/ui_assets.hpp).
void harden(beast_response& res) {
  res.set("X-Content-Type-Options", "nosniff");
  if (res.find("Content-Security-Policy") == res.end())
    res.set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; sandbox");
  res.set(http::field::cache_control, "no-store");
}

beast_response to_beast(const response& r, unsigned version, bool keep_alive) {
  beast_response res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "mailtap");
  res.set(http::field::content_type, r.content_type);
  for (const auto& [name, value] : r.headers) res.set(name, value);
  harden(res);
  res.body() = r.body;
  res.keep_alive(keep_alive);
  res.prepare_payload();
  if (r.head_length) res.content_length(*r.head_length);
  return res;
}

std::string lower_media_type(std::string_view content_type) {
  std::string t(content_type.substr(0, content_type.find(';')));
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.pop_back();
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return t;
}

request to_plain(const beast_request& req, const std::string& peer, const std::string& local) {
  request r;
  r.method = std::string(req.method_string());
  r.target = std::string(req.target());
  r.host = std::string(req[http::field::host]);
  r.origin = std::string(req[http::field::origin]);
  r.content_type = lower_media_type(req[http::field::content_type]);
  r.authorization = std::string(req[http::field::authorization]);
  r.websocket_protocols = std::string(req[http::field::sec_websocket_protocol]);
  r.body = req.body();
  r.peer = peer;
  r.local = local;
  return r;
}

// The status for a request that could not be read, or 0 when there is nobody to answer
// (the peer left, or reset; or it was too slow: the stream's deadline closed the socket).
// Past the header limit before the request line was whole, the line alone is too long:
// RFC 9112 3 answers a target too long with 414. The parser names the target once it has
// parsed the line (and then no longer holds it); until then the line is still in `unread`.
int status_for_read_error(const boost::system::error_code& ec, const http::request_parser<http::string_body>& parser,
                          const beast::flat_buffer& unread) {
  if (ec == http::error::body_limit) return 413;
  if (ec == http::error::header_limit) {
    if (!parser.get().target().empty()) return 431;
    const auto data = unread.cdata();
    const std::string_view seen(static_cast<const char*>(data.data()), data.size());
    return seen.find('\n') == std::string_view::npos ? 414 : 431;
  }
  if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
      ec == http::error::partial_message || ec == asio::error::operation_aborted)
    return 0;
  if (ec.category() == http::make_error_code(http::error::body_limit).category()) return 400;   // a parse error: not HTTP/1.1
  return 0;
}

// RFC 9110 9.3.2: the answer to HEAD is GET's header (its Content-Length too) without the body.
asio::awaitable<void> write_response(beast::tcp_stream& stream, beast_response res, const http_limits& limits, bool& ok,
                                     bool header_only = false) {
  stream.expires_after(limits.write_timeout);
  if (header_only) {
    http::response_serializer<http::string_body> serializer{res};
    auto [ec, n] = co_await http::async_write_header(stream, serializer, as_tuple(use_awaitable));
    (void)n;
    ok = !ec;
    co_return;
  }
  auto [ec, n] = co_await http::async_write(stream, res, as_tuple(use_awaitable));
  (void)n;
  ok = !ec;
}

// RFC 9112 6.1: a server that receives a transfer coding it does not understand answers 501.
// Beast decodes chunked only (and refuses a request whose last coding is not chunked).
std::optional<std::string> unknown_transfer_coding(const http::fields& head) {
  auto [first, last] = head.equal_range(http::field::transfer_encoding);
  for (auto field = first; field != last; ++field)
    for (auto coding : http::token_list{field->value()}) {
      std::string_view name(coding.data(), coding.size());
      if (!beast::iequals(name, "chunked")) return std::string(name.substr(0, 64));
    }
  return std::nullopt;
}

// The answer of a full server, written without waiting (what the socket's buffer does not
// take is lost): to a new connection over the cap, and to one closed in an unfinished request
// to make room.
void answer_busy(tcp::socket& socket) {
  static constexpr std::string_view busy =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
      "Content-Length: 69\r\n\r\n{\"error\":\"too many admin connections, try again later\",\"status\":503}\n";
  boost::system::error_code ig;
  socket.non_blocking(true, ig);
  socket.write_some(asio::buffer(busy), ig);
}

// The connection a new one closes at max_connections (http_server::state::readers), or null.
http_server::state::reader* room_for_one(http_server::state& s) {
  http_server::state::reader* chosen = nullptr;
  for (auto* r : s.readers)
    if (!chosen || (r->idle && !chosen->idle) || (r->idle == chosen->idle && r->since < chosen->since)) chosen = r;
  return chosen;
}

// Lists a connection in http_server::state::readers for as long as it is in scope.
struct listed_reader {
  listed_reader(http_server::state& s, http_server::state::reader& r) : list(s.readers), me(r) { list.push_back(&me); }
  ~listed_reader() { leave(); }
  void leave() { list.remove(&me); }
  listed_reader(const listed_reader&) = delete;
  listed_reader& operator=(const listed_reader&) = delete;
  std::list<http_server::state::reader*>& list;
  http_server::state::reader& me;
};

// One error response, then the connection closes.
asio::awaitable<void> refuse(beast::tcp_stream& stream, int status, std::string_view why, const http_limits& limits) {
  bool ok = false;
  co_await write_response(stream, to_beast(error_response(status, why), 11, false), limits, ok);
}

std::string peer_of(const tcp::socket& socket) {
  boost::system::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  return ec ? std::string("?") : endpoint{ep.address().to_string(), ep.port()}.to_string();
}

// The socket's local address as a Host header names it (request::local).
std::string local_of(const tcp::socket& socket) {
  boost::system::error_code ec;
  auto ep = socket.local_endpoint(ec);
  if (ec) return "";
  auto a = ep.address();
  if (a.is_v6() && a.to_v6().is_v4_mapped()) a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
  return a.is_v6() ? "[" + a.to_string() + "]" : a.to_string();
}

asio::awaitable<response> run_on_worker(http_server::state& s, request req);

// A WebSocket message's limit: subscribers have nothing to say but a close.
constexpr std::size_t max_websocket_message = 4096;

// The upgraded connection: events out until the peer closes or the server stops.
asio::awaitable<void> serve_websocket(std::shared_ptr<http_server::state> s, beast::tcp_stream stream, beast_request req,
                                      const http_limits& limits) {
  using ws_stream = beast::websocket::stream<beast::tcp_stream>;
  auto executor = stream.get_executor();
  auto wake = std::make_shared<asio::steady_timer>(executor, asio::steady_timer::time_point::max());
  std::weak_ptr<asio::steady_timer> weak_wake = wake;
  // Called on a publisher's thread: the timer is touched on its own executor only, if it still exists.
  auto subscription = s->websocket->subscribe([weak_wake, executor] {
    asio::post(executor, [weak_wake] {
      if (auto t = weak_wake.lock()) t->cancel();
    });
  });
  if (!subscription) {
    co_await refuse(stream, 503, "too many event subscribers, try again later", limits);
    co_return;
  }
  stream.expires_never();
  auto ws = std::make_shared<ws_stream>(std::move(stream));
  ws->set_option(beast::websocket::stream_base::timeout::suggested(beast::role_type::server));
  ws->read_message_max(max_websocket_message);
  // A browser that offered subprotocols fails the connection unless one is selected. A
  // handshake Beast refuses (no key, version not 13) gets the API's JSON error body.
  const bool name_subprotocol = subprotocol_offered(req[http::field::sec_websocket_protocol], events_subprotocol);
  ws->set_option(beast::websocket::stream_base::decorator([name_subprotocol](beast::websocket::response_type& res) {
    if (res.result() == http::status::switching_protocols) {
      if (name_subprotocol) res.set(http::field::sec_websocket_protocol, events_subprotocol);
      return;
    }
    const auto error = error_response(static_cast<int>(res.result_int()), "WebSocket handshake refused: " + res.body());
    res.set(http::field::server, "mailtap");
    res.set(http::field::content_type, error.content_type);
    harden(res);
    res.body() = error.body;
    res.prepare_payload();
  }));
  auto [aec] = co_await ws->async_accept(req, as_tuple(use_awaitable));
  if (aec) co_return;
  auto closed = std::make_shared<bool>(false);
  // The reader only notices the close (or the peer's loss) and wakes the writer.
  asio::co_spawn(
      executor,
      [ws, wake, closed]() -> asio::awaitable<void> {
        beast::flat_buffer incoming;
        for (;;) {
          auto [ec, n] = co_await ws->async_read(incoming, as_tuple(use_awaitable));
          if (ec) break;
          incoming.consume(n);
        }
        *closed = true;
        wake->cancel();
      },
      asio::detached);
  ws->text(true);
  while (!*closed) {
    std::uint64_t dropped = 0;
    auto events = subscription->take(dropped);
    if (dropped > 0) events.insert(events.begin(), "{\"type\":\"dropped\",\"count\":" + std::to_string(dropped) + "}");
    for (const auto& e : events) {
      auto [wec, wn] = co_await ws->async_write(asio::buffer(e), as_tuple(use_awaitable));
      (void)wn;
      if (wec) co_return;
    }
    // Nothing queued: wait for the next wake (a publish, or the reader seeing the close).
    if (events.empty() && !*closed) {
      wake->expires_at(asio::steady_timer::time_point::max());
      co_await wake->async_wait(as_tuple(use_awaitable));
    }
  }
  boost::system::error_code ig;
  ws->next_layer().socket().shutdown(tcp::socket::shutdown_send, ig);
}

}  // namespace

namespace {

asio::awaitable<void> serve(std::shared_ptr<http_server::state> s, tcp::socket socket) {
  struct counted {
    http_server::state& s;
    ~counted() { --s.connections; }
  } count{*s};
  const auto& limits = s->limits;
  const std::string peer = peer_of(socket);
  const std::string local = local_of(socket);
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (std::size_t served = 0; served < limits.max_requests_per_connection; ++served) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
    parser.body_limit(limits.max_body_bytes);
    stream.expires_after(served == 0 ? limits.request_timeout : limits.idle_timeout);
    // Until the request is read whole the connection is listed, so that a new one can take its
    // slot at the cap (http_server::state::readers): idle between requests, then unfinished.
    http_server::state::reader me{&stream, served > 0 && buffer.size() == 0, std::chrono::steady_clock::now()};
    listed_reader in_list(*s, me);
    auto [hec, hn] = co_await http::async_read_header(stream, buffer, parser, as_tuple(use_awaitable));
    (void)hn;
    if (me.idle && !me.closed_for_room) {
      me.idle = false;
      me.since = std::chrono::steady_clock::now();
    }
    if (!hec && !me.closed_for_room) {
      stream.expires_after(limits.request_timeout);
      auto& head = parser.get();
      // A body announced past the limit is refused before it is read.
      if (auto length = parser.content_length(); length && *length > limits.max_body_bytes) {
        co_await refuse(stream, 413, "request body of " + std::to_string(*length) + " bytes is larger than the limit of " +
                                         std::to_string(limits.max_body_bytes), limits);
        break;
      }
      if (auto coding = unknown_transfer_coding(head)) {
        co_await refuse(stream, 501, "transfer coding '" + *coding + "' is not supported (only chunked)", limits);
        break;
      }
      // RFC 9110 10.1.1: a client waiting to send its body hears 100 Continue first.
      if (beast::iequals(head[http::field::expect], "100-continue")) {
        http::response<http::empty_body> go{http::status::continue_, head.version()};
        auto [cec, cn] = co_await http::async_write(stream, go, as_tuple(use_awaitable));
        (void)cn;
        if (cec) break;
      }
      if (!parser.is_done()) {
        auto [bec, bn] = co_await http::async_read(stream, buffer, parser, as_tuple(use_awaitable));
        (void)bn;
        hec = bec;
      }
    }
    in_list.leave();
    if (me.closed_for_room) {
      if (!me.idle) answer_busy(stream.socket());
      break;
    }
    if (hec) {
      if (int status = status_for_read_error(hec, parser, buffer)) {
        const std::string why =
            status == 413   ? "request body larger than the limit of " + std::to_string(limits.max_body_bytes) + " bytes"
            : status == 431 ? "request headers larger than the limit of " + std::to_string(limits.max_header_bytes) + " bytes"
            : status == 414 ? "request line longer than the limit of " + std::to_string(limits.max_header_bytes) + " bytes"
                            : "malformed HTTP request: " + hec.message();
        co_await refuse(stream, status, why, limits);
      }
      break;
    }
    auto req = parser.release();
    // RFC 9112 3.2: a request with more than one Host is refused with 400 (the Host check
    // would read only the first).
    if (req.count(http::field::host) > 1) {
      co_await refuse(stream, 400, "more than one Host header", limits);
      break;
    }
    // RFC 6454 7.3: one Origin at most; the check reads only the first, so a second (never sent
    // by a browser) must not pass with it (a hostile trial).
    if (req.count(http::field::origin) > 1) {
      co_await refuse(stream, 400, "more than one Origin header", limits);
      break;
    }
    // RFC 9110 11.6.2: one Authorization; the token check reads only the first, so which of two
    // counted depended on their order (a hostile trial: 'Bearer x' then the token was 401, the
    // reverse 200).
    if (req.count(http::field::authorization) > 1) {
      co_await refuse(stream, 400, "more than one Authorization header", limits);
      break;
    }
    if (s->websocket && beast::websocket::is_upgrade(req)) {
      parsed_target target;
      auto plain = to_plain(req, peer, local);
      if (parse_target(plain.target, target) && target.path == s->websocket->path) {
        if (auto refusal = s->websocket->admit(plain)) {
          bool ok = false;
          co_await write_response(stream, to_beast(*refusal, req.version(), false), limits, ok);
          break;
        }
        co_await serve_websocket(s, std::move(stream), std::move(req), limits);
        co_return;
      }
    }
    const bool keep_alive = req.keep_alive() && served + 1 < limits.max_requests_per_connection;
    response res = co_await run_on_worker(*s, to_plain(req, peer, local));
    bool ok = false;
    co_await write_response(stream, to_beast(res, req.version(), keep_alive), limits, ok,
                            req.method() == http::verb::head);
    if (!ok || !keep_alive) break;
  }
  boost::system::error_code ig;
  stream.socket().shutdown(tcp::socket::shutdown_send, ig);
  stream.close();
}

// The handler on a worker thread, the result back on the connection's thread.
asio::awaitable<response> run_on_worker(http_server::state& s, request req) {
  auto work = [&s, req = std::move(req)]() -> asio::awaitable<response> {
    try {
      co_return s.run(req);
    } catch (const std::exception& e) {
      co_return error_response(500, std::string("internal error: ") + e.what());
    }
  };
  co_return co_await asio::co_spawn(s.worker.get_executor(), std::move(work), use_awaitable);
}

}  // namespace

http_server::http_server(asio::io_context& io, handler run, http_limits limits)
    : state_(std::make_shared<state>(io, std::move(run), limits)) {}

http_server::~http_server() {
  boost::system::error_code ig;
  state_->acceptor.close(ig);
  // The handler may be running: it uses what the owner destroys next, so wait for it.
  state_->worker.stop();
  state_->worker.join();
}

bool http_server::listen(const endpoint& where, std::string& error) {
  boost::system::error_code ec;
  auto address = asio::ip::make_address(where.host, ec);
  if (ec) {
    error = "admin address '" + where.host + "' is not an IP address";
    return false;
  }
  tcp::endpoint ep(address, where.port);
  auto& a = state_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error = "cannot listen on " + where.to_string() + " (admin API): " + ec.message();
    return false;
  }
  return true;
}

endpoint http_server::local_endpoint() const {
  boost::system::error_code ec;
  auto ep = state_->acceptor.local_endpoint(ec);
  return endpoint{ep.address().to_string(), ep.port()};
}

void http_server::add_websocket(websocket_route route) { state_->websocket = std::move(route); }

void http_server::start() {
  auto s = state_;
  accept_handlers handlers;
  handlers.context_for_next = [s]() -> asio::io_context& { return s->io; };
  handlers.failed = [s](const boost::system::error_code& ec) {
    warn_limited(s->warnings, warn_kind::accept_failed, "admin API: accept failed: " + ec.message());
  };
  handlers.serve = [s](tcp::socket socket) {
    if (s->connections >= s->limits.max_connections) {
      auto* room = room_for_one(*s);
      if (!room) {
        // None is reading a request (each answers one, or streams events): 503, and close.
        answer_busy(socket);
        boost::system::error_code ig;
        socket.shutdown(tcp::socket::shutdown_send, ig);
        socket.close(ig);
        return;
      }
      // Its read ends, and it closes (its slot is given back a moment later, when its
      // coroutine ends; meanwhile one over).
      s->readers.remove(room);
      room->closed_for_room = true;
      boost::system::error_code ig;
      room->stream->socket().cancel(ig);
    }
    ++s->connections;
    asio::co_spawn(s->io, serve(s, std::move(socket)), asio::detached);
  };
  asio::co_spawn(
      s->io, [s, handlers = std::move(handlers)]() mutable -> asio::awaitable<void> {
        co_await accept_loop(s->acceptor, std::move(handlers));
      },
      asio::detached);
}

}  // namespace mailtap::admin
