// The admin API's bearer token (admin/README.md, "Authentication"). With a token set, every
// request carries it as `Authorization: Bearer TOKEN` (RFC 6750 2.1), else it gets 401 with
// `WWW-Authenticate: Bearer` (RFC 6750 3). A browser cannot set headers on a WebSocket, so the
// events WebSocket also takes it as a subprotocol offer `bearer.TOKEN` (the handshake then
// selects events_subprotocol, which the client offers beside it) or as a `token` query
// parameter. Comparisons take the same time whatever the presented token is.
#pragma once
#include <string>
#include <string_view>

#include "admin/http_types.hpp"

namespace mailtap::admin {

// The subprotocol a browser offers beside `bearer.TOKEN`, and the handshake selects (RFC 6455
// 4.2.2: a server that selects none of the offered ones fails a browser's connection).
inline constexpr std::string_view events_subprotocol = "mailtap.events";
inline constexpr std::string_view token_subprotocol_prefix = "bearer.";

// True when `presented` is `expected`, in a time that depends on the length of `expected` only.
bool token_equal(std::string_view presented, std::string_view expected);

// The token of `Authorization: Bearer TOKEN` (the scheme in any case); "" when there is none.
std::string bearer_token_of(std::string_view authorization);

// The `bearer.TOKEN` entry of a Sec-WebSocket-Protocol list; "" when there is none.
std::string subprotocol_token_of(std::string_view offered);
// True when the comma-separated Sec-WebSocket-Protocol list offers `name`.
bool subprotocol_offered(std::string_view offered, std::string_view name);

// 401 with `WWW-Authenticate: Bearer realm="mailtap"` and a one-line error.
response unauthorized(bool presented);

}  // namespace mailtap::admin
