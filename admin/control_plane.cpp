// Putting the admin API together (admin/control_plane.hpp).
#include "admin/control_plane.hpp"

#include <boost/asio/ip/address.hpp>

namespace mailtap::admin {

namespace {

api_context context_for(server& relay, const config& cfg, const captures::store* store, const session_catalog& catalog) {
  api_context c;
  c.faults = &relay.faults();
  c.metrics = &relay.metrics();
  c.capture_counters = store ? &store->counters() : nullptr;
  c.sessions = &catalog;
  c.ready = [&relay] { return !relay.draining(); };
  c.allowed_hosts = loopback_host_allowlist(cfg.admin.host);
  c.allowed_hosts.insert(cfg.admin_hosts.begin(), cfg.admin_hosts.end());
  c.allow_local_address = is_wildcard_address(cfg.admin.host);
  c.token = cfg.admin_token;
  return c;
}

}  // namespace

bool is_loopback_address(const std::string& host) {
  boost::system::error_code ec;
  auto a = boost::asio::ip::make_address(host, ec);
  return !ec && a.is_loopback();
}

bool is_wildcard_address(const std::string& host) {
  boost::system::error_code ec;
  auto a = boost::asio::ip::make_address(host, ec);
  return !ec && a.is_unspecified();
}

std::string admin_address_problem(const config& cfg) {
  if (cfg.admin_off || is_loopback_address(cfg.admin.host) || !cfg.admin_token.empty()) return "";
  return "admin address " + cfg.admin.to_string() +
         " is not a loopback address and no admin token is set: set admin_token_file (or --admin-token-file, "
         "or $MAILTAP_ADMIN_TOKEN), or listen on loopback (127.0.0.1 or ::1)";
}

control_plane::control_plane(server& relay, const config& cfg, const captures::store* store)
    : catalog_(cfg.captures_dir,
               store ? std::function<bool(std::string_view)>([store](std::string_view id) { return store->is_open(id); })
                     : std::function<bool(std::string_view)>()),
      api_(context_for(relay, cfg, store, catalog_)),
      http_(relay.control_context(), [this](const request& r) { return api_.handle(r); }) {}

std::unique_ptr<control_plane> control_plane::start(server& relay, const config& cfg, const captures::store* store,
                                                    std::string& error, std::string& skipped) {
  if (cfg.admin_off) {
    skipped = "admin API off";
    return nullptr;
  }
  if (error = admin_address_problem(cfg); !error.empty()) return nullptr;
  std::unique_ptr<control_plane> plane(new control_plane(relay, cfg, store));
  std::string why;
  if (!plane->http_.listen(cfg.admin, why)) {
    if (cfg.admin_explicit) error = why;
    else skipped = why + "; the admin API is not started (set --admin ADDR:PORT, or --admin off)";
    return nullptr;
  }
  plane->http_.add_websocket({events_path, [p = plane.get()](const request& r) { return p->api_.admit_events(r); },
                              [&relay](std::function<void()> wake) { return relay.events().subscribe(std::move(wake)); }});
  plane->http_.start();
  return plane;
}

}  // namespace mailtap::admin
