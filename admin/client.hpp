// A minimal HTTP/1.1 client for the command-line clients of the admin API (`mailtap faults`,
// `mailtap sessions`): one request per connection (Connection: close), a deadline for the
// whole exchange, a cap on the response. Plain Asio: Beast stays in one file of the server.
#pragma once
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "relay/config.hpp"

namespace mailtap::admin {

struct client_request {
  std::string method = "GET";
  std::string target;               // "/api/v1/faults"
  std::string content_type;         // with a body
  std::string body;
  std::string token;                // sent as Authorization: Bearer when set (admin/auth.hpp)
};

struct client_response {
  int status = 0;                   // 0: no HTTP answer (see error)
  std::string body;
  std::string error;                // cannot connect, timed out, not HTTP: one line
};

// Responses larger than this are refused (a page of 500 sessions is far below it).
inline constexpr std::size_t max_client_response_bytes = 64 * 1024 * 1024;

client_response http_call(const endpoint& server, const client_request& req,
                          std::chrono::milliseconds deadline = std::chrono::seconds(30));

// Percent-encodes a path segment or query value (RFC 3986 unreserved characters kept).
std::string url_encode(std::string_view text);

}  // namespace mailtap::admin
