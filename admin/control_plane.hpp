// The admin API of a running relay, put together: the session catalog over the capture
// directory, the API's routes with the Host allowlist, and the HTTP server on the relay's
// control io_context (relay/server.hpp). Loopback unless a bearer token is set: without one
// it refuses another address (admin/README.md, "Authentication").
#pragma once
#include <memory>
#include <string>

#include "admin/api.hpp"
#include "admin/http_server.hpp"
#include "admin/session_catalog.hpp"
#include "relay/config.hpp"
#include "relay/server.hpp"

namespace mailtap::admin {

// A literal loopback address (127.0.0.0/8, ::1).
bool is_loopback_address(const std::string& host);
// True for 0.0.0.0 and :: (any spelling): a listener there answers on every address of the
// host, so the Host check also takes the address each connection arrived on.
bool is_wildcard_address(const std::string& host);
// The one-line refusal of a non-loopback admin address without a token ("" when it is
// loopback, or has a token, or the API is off).
std::string admin_address_problem(const config& cfg);

class control_plane {
 public:
  // Listening and serving (once the relay runs), or nullptr: with `error` set when it cannot
  // listen on the address it was given, or it is not loopback and has no token; with `error`
  // empty when the API is off, or the default address is taken (`skipped` says why).
  static std::unique_ptr<control_plane> start(server& relay, const config& cfg, const captures::store* store,
                                              std::string& error, std::string& skipped);
  endpoint address() const { return http_.local_endpoint(); }

 private:
  control_plane(server& relay, const config& cfg, const captures::store* store);
  directory_catalog catalog_;
  api api_;
  http_server http_;
};

}  // namespace mailtap::admin
