// One HTTP exchange with the admin API (admin/client.hpp).
#include "admin/client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <charconv>

namespace mailtap::admin {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// Splits "HTTP/1.1 200 OK\r\nheaders\r\n\r\nbody"; honours Content-Length when present.
bool parse_response(const std::string& raw, client_response& out) {
  const auto head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos || raw.size() < 12) return false;
  int status = 0;
  auto [p, ec] = std::from_chars(raw.data() + 9, raw.data() + 12, status);
  if (ec != std::errc() || p != raw.data() + 12) return false;
  out.status = status;
  out.body = raw.substr(head_end + 4);
  return true;
}

}  // namespace

std::string url_encode(std::string_view text) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
        c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

client_response http_call(const endpoint& server, const client_request& req, std::chrono::milliseconds deadline) {
  client_response out;
  asio::io_context io;
  tcp::resolver resolver(io);
  tcp::socket socket(io);
  std::string wire = req.method + " " + req.target + " HTTP/1.1\r\nHost: " + server.to_string() +
                     "\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: mailtap-cli\r\n";
  if (!req.token.empty()) wire += "Authorization: Bearer " + req.token + "\r\n";
  if (!req.body.empty() || req.method == "POST") {
    if (!req.content_type.empty()) wire += "Content-Type: " + req.content_type + "\r\n";
    wire += "Content-Length: " + std::to_string(req.body.size()) + "\r\n";
  }
  wire += "\r\n" + req.body;
  std::string raw;
  boost::system::error_code failure;
  bool too_large = false;
  resolver.async_resolve(server.host, std::to_string(server.port), [&](auto ec, tcp::resolver::results_type found) {
    if (ec) {
      failure = ec;
      return;
    }
    asio::async_connect(socket, found, [&](auto cec, const tcp::endpoint&) {
      if (cec) {
        failure = cec;
        return;
      }
      asio::async_write(socket, asio::buffer(wire), [&](auto wec, std::size_t) {
        // A server that refuses a request before its end (413) answers, then closes: the write
        // fails, and the answer may still be there to read.
        if (wec) failure = wec;
        auto buffer = asio::dynamic_buffer(raw, max_client_response_bytes);
        asio::async_read(socket, buffer, [&](auto rec, std::size_t) {
          if (rec == asio::error::not_found) too_large = true;
          else if (rec != asio::error::eof && !failure) failure = rec;
        });
      });
    });
  });
  io.run_for(deadline);
  if (!io.stopped()) {
    out.error = "no answer from the admin API at " + server.to_string() + " within " +
                std::to_string(deadline.count() / 1000) + " s";
    return out;
  }
  if (too_large) {
    out.error = "the admin API's answer is larger than " + std::to_string(max_client_response_bytes) + " bytes";
    return out;
  }
  if (failure && raw.empty()) {
    out.error = "cannot reach the admin API at " + server.to_string() + ": " + failure.message();
    return out;
  }
  if (!parse_response(raw, out)) out.error = "the answer from " + server.to_string() + " is not HTTP";
  return out;
}

}  // namespace mailtap::admin
