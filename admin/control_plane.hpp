// The admin API of a running relay, put together: the session catalog over the capture
// directory, the API's routes with the Host allowlist, and the HTTP server on the relay's
// control io_context (relay/server.hpp). Loopback unless a bearer token is set: without one
// it refuses another address (admin/README.md, "Authentication").
#pragma once
#include <memory>
#include <string>

#include "admin/address_policy.hpp"
#include "admin/api.hpp"
#include "admin/http_server.hpp"
#include "admin/session_catalog.hpp"
#include "relay/config.hpp"
#include "relay/server.hpp"

namespace mailtap::admin {

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
