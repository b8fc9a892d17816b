// Which addresses the admin API may listen on without a token: loopback only (admin/README.md,
// "Authentication"). Apart from control_plane.hpp so that `mailtap check-config` can ask it
// without the HTTP server's headers.
#pragma once
#include <string>

#include "relay/config.hpp"

namespace mailtap::admin {

// A literal loopback address (127.0.0.0/8, ::1).
bool is_loopback_address(const std::string& host);
// True for 0.0.0.0 and :: (any spelling): a listener there answers on every address of the
// host, so the Host check also takes the address each connection arrived on.
bool is_wildcard_address(const std::string& host);
// The one-line refusal of a non-loopback admin address without a token ("" when it is
// loopback, or has a token, or the API is off).
std::string admin_address_problem(const config& cfg);

}  // namespace mailtap::admin
