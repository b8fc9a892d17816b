// The web UI (admin/ui/README.md): its files, embedded at build time by
// admin/ui/embed_ui.cmake, and how they are served. `GET /` is index.html, `GET /ui/NAME` one
// of the files; nothing else under /ui/. Each answer carries the UI's own
// Content-Security-Policy (scripts, styles and connections from the admin address only;
// never framed) in place of the API's `sandbox` one, which would stop the page's scripts.
// The Host check (admin/api.hpp) runs before these routes, as before the API's.
#pragma once
#include <span>
#include <string>
#include <string_view>

#include "admin/http_types.hpp"

namespace mailtap::admin {

struct ui_file {
  std::string_view name;    // "app.js": served at /ui/app.js
  std::string_view bytes;
};

// Every file of admin/ui/ that is served (generated: admin/CMakeLists.txt lists them).
std::span<const ui_file> ui_files();

// True for the UI's paths: "/" and "/ui/..." (the query ignored).
bool is_ui_target(std::string_view target);

// The answer to a request for a UI path: the file (200), 404 for a name that is not one, 405
// for a method other than GET. The request's Host header must have been checked already
// (api::handle): it goes into the policy.
response serve_ui(const request& req);

// The Content-Security-Policy of the UI's pages. `host` (the checked Host header) names the
// WebSocket source the page may connect to ("ws://127.0.0.1:8025"); a Host whose port part is
// not digits adds none.
std::string ui_content_security_policy(std::string_view host);

// The media type of a UI file, from its extension.
std::string_view ui_media_type(std::string_view name);

}  // namespace mailtap::admin
