// Serving the web UI's embedded files (admin/ui_assets.hpp).
#include "admin/ui_assets.hpp"

#include <algorithm>

namespace mailtap::admin {

namespace {

constexpr std::string_view ui_prefix = "/ui/";
constexpr std::string_view index_name = "index.html";

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string_view path_of(std::string_view target) { return target.substr(0, target.find('?')); }

// True when what follows the Host header's name is nothing or ":PORT" with PORT digits only
// (RFC 3986 3.2.3), so that the header can go into a policy as it is.
bool port_part_is_plain(std::string_view host, std::string_view& port_part) {
  const auto name_end = !host.empty() && host.front() == '[' ? host.find(']') : host.find(':');
  if (name_end == std::string_view::npos) {
    port_part = {};
    return host.find_first_of("[]") == std::string_view::npos;
  }
  port_part = host.substr(host.front() == '[' ? name_end + 1 : name_end);
  if (port_part.empty()) return true;
  if (port_part.front() != ':' || port_part.size() < 2 || port_part.size() > 6) return false;
  return std::all_of(port_part.begin() + 1, port_part.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

bool is_ui_target(std::string_view target) {
  const auto path = path_of(target);
  return path == "/" || path.starts_with(ui_prefix);
}

std::string_view ui_media_type(std::string_view name) {
  if (ends_with(name, ".html")) return "text/html; charset=utf-8";
  if (ends_with(name, ".js")) return "text/javascript; charset=utf-8";
  if (ends_with(name, ".css")) return "text/css; charset=utf-8";
  if (ends_with(name, ".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

std::string ui_content_security_policy(std::string_view host) {
  // connect-src: the JSON API and /metrics ('self'), and the events WebSocket, named
  // explicitly because CSP 'self' covers ws: only in browsers that follow CSP Level 3 there.
  std::string connect = "'self'";
  std::string_view port;
  if (!host.empty() && port_part_is_plain(host, port)) connect += " ws://" + std::string(host);
  return "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src " + connect +
         "; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
}

response serve_ui(const request& req) {
  const auto path = path_of(req.target);
  const std::string_view name = path == "/" ? index_name : path.substr(ui_prefix.size());
  if (req.method != "GET" && req.method != "HEAD") {
    auto r = error_response(405, "method " + req.method + " not allowed on " + std::string(path) + " (allowed: GET, HEAD)");
    r.headers.emplace_back("Allow", "GET, HEAD");
    return r;
  }
  const auto files = ui_files();
  const auto it = std::find_if(files.begin(), files.end(), [&](const ui_file& f) { return f.name == name; });
  if (it == files.end()) return error_response(404, "no such UI file: " + std::string(path.substr(0, 200)));
  response r;
  r.content_type = std::string(ui_media_type(it->name));
  r.body = std::string(it->bytes);
  r.headers.emplace_back("Content-Security-Policy", ui_content_security_policy(req.host));
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  return r;
}

}  // namespace mailtap::admin
