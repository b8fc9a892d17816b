// The one phase enum shared by protocol, policies and captures, with TOML/JSON names.
// Includes the pseudo-phases `connect` (TCP set-up), `banner`, `body` (bytes after 354)
// and `data_end` (the terminating dot and its reply), and `tls` (a handshake). Pure value type, thread-safe.
#pragma once
#include <optional>
#include <string_view>

namespace mailtap::protocol {

enum class phase {
  connect, banner, ehlo, helo, starttls, auth, mail, rcpt, data, body, data_end, bdat,
  rset, noop, vrfy, expn, help, quit, other,
  tls,   // a TLS handshake on either leg (stage only)
};

std::string_view to_string(phase p);
std::optional<phase> parse_phase(std::string_view name);

}  // namespace mailtap::protocol
