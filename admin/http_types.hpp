// A request and a response of the admin API as plain values, so that routing and the API's
// handlers know nothing of the HTTP library: only admin/http_server.cpp includes Beast and
// converts. Errors are one line of JSON, `{"error":"...","status":N}` (admin/README.md).
#pragma once
#include <map>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailtap::admin {

struct request {
  std::string method;         // "GET", "POST", ... as sent
  std::string target;         // the request target as sent: path and query
  std::string host;           // the Host header ("" when absent)
  std::string origin;         // the Origin header ("" when absent)
  std::string content_type;   // the Content-Type header, lower-cased, parameters dropped
  std::string authorization;  // the Authorization header ("" when absent; admin/auth.hpp)
  std::string websocket_protocols;   // Sec-WebSocket-Protocol, as sent
  std::string body;
  std::string peer;           // "127.0.0.1:41234", for the mutation log
  // The address the connection arrived on, as a Host header names it ("192.0.2.2",
  // "[2001:db8::1]"; an IPv4-mapped IPv6 address as IPv4; "" when unknown): the Host check
  // of a listener bound to a wildcard address (admin/api.hpp).
  std::string local;
};

struct response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;   // extra headers (Allow, Content-Disposition...)
  // An answer to HEAD that leaves its body unread: the Content-Length GET's body would have.
  std::optional<std::uint64_t> head_length;
};

// The reason phrase of the statuses the API sends (RFC 9110 section 15).
std::string_view reason_phrase(int status);

// {"error":"<message>","status":N} and a newline; the message made one line.
response error_response(int status, std::string_view message);
// A JSON document (already serialized) and a newline.
response json_response(int status, std::string body);

// A request target split into its percent-decoded path and query parameters. False when the
// target is not an origin-form path ("/..."), or its percent-encoding is bad.
struct parsed_target {
  std::string path;       // decoded, for messages
  std::string raw_path;   // as sent: routes split it at '/' before decoding each segment
  std::map<std::string, std::string> query;
};
bool parse_target(std::string_view target, parsed_target& out);
// RFC 3986 2.1 percent-decoding; `plus_is_space` for query components (HTML forms).
bool percent_decode(std::string_view in, bool plus_is_space, std::string& out);

}  // namespace mailtap::admin
