// The names of the upstream TLS modes (relay_options.hpp), as config files spell them.
#include "protocol/relay_options.hpp"

namespace mailtap::protocol {

std::string_view to_string(upstream_tls_mode m) {
  switch (m) {
    case upstream_tls_mode::mirror: return "mirror";
    case upstream_tls_mode::required: return "required";
    case upstream_tls_mode::opportunistic: return "opportunistic";
    case upstream_tls_mode::never: return "never";
  }
  return "?";
}

std::optional<upstream_tls_mode> parse_upstream_tls_mode(std::string_view name) {
  for (auto m : {upstream_tls_mode::mirror, upstream_tls_mode::required, upstream_tls_mode::opportunistic,
                 upstream_tls_mode::never})
    if (to_string(m) == name) return m;
  return std::nullopt;
}

}  // namespace mailtap::protocol
