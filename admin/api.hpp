// The admin API (admin/README.md, admin/openapi.json): /healthz, /readyz, /metrics and
// /api/v1 — sessions from the captures, fault rules in the running engine, scenario files —
// as routes on admin/router.hpp, behind the Host check (only the names of the address it
// listens on, and bound to a wildcard the address each connection arrived on: a
// DNS-rebinding page cannot reach it) and, when one is set, the bearer token
// (admin/auth.hpp). Handlers run on the admin worker threads;
// everything they touch is thread-safe (the engine, atomics, the filesystem). Every mutation
// is logged (spdlog, info) with the peer.
#pragma once
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "admin/router.hpp"
#include "admin/session_catalog.hpp"
#include "captures/writer.hpp"
#include "policies/engine.hpp"
#include "relay/metrics.hpp"

namespace mailtap::admin {

struct api_context {
  policies::engine* faults = nullptr;
  const relay_metrics* metrics = nullptr;
  const captures::store_counters* capture_counters = nullptr;   // null: no capture metrics
  const session_catalog* sessions = nullptr;
  // True once the relay listens and while it is not draining (GET /readyz).
  std::function<bool()> ready;
  // The Host header values allowed, lower-case, without port ("localhost", "127.0.0.1", "[::1]").
  std::set<std::string> allowed_hosts;
  // Bound to a wildcard (0.0.0.0, ::): each request's own local address (request::local) is
  // allowed too, since that address is the listener's.
  bool allow_local_address = false;
  // The bearer token every request needs (admin/auth.hpp); empty: none.
  std::string token;
};

class api {
 public:
  explicit api(api_context ctx);
  response handle(const request& req) const;
  // The WebSocket upgrade of GET /api/v1/events: nullopt to accept, else the refusal (a
  // foreign Host, or a browser page of another origin: 403; no token: 401).
  std::optional<response> admit_events(const request& req) const;
  const router& routes() const { return router_; }

 private:
  void add_session_routes();
  void add_fault_routes();
  // The name part of a Host (or an Origin's authority) names this listener.
  bool host_allowed(std::string_view host, const request& req) const;
  // No Origin (a client that is not a browser), or one whose host the API answers to.
  bool origin_allowed(const request& req) const;
  api_context ctx_;
  router router_;
};

// The Host header's name part, lower-case ("LocalHost:8025" -> "localhost", "[::1]:80" -> "[::1]").
std::string host_name_of(std::string_view host_header);
// The hosts a listener on `bind_host` answers to: the loopback names, and the address itself.
std::set<std::string> loopback_host_allowlist(const std::string& bind_host);

// The path of the live events WebSocket.
inline constexpr const char* events_path = "/api/v1/events";

// The OpenAPI 3 document (admin/openapi.json, embedded at build time).
std::string_view openapi_document();

}  // namespace mailtap::admin
