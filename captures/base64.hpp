// Base64 (RFC 4648, with padding) for raw bytes in capture files. Written by hand because
// the only Debian-packaged encoders are in OpenSSL (a heavy dependency for captures/) or
// Beast's detail namespace (not a public API). Pure functions, thread-safe.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::captures {

std::string base64_encode(std::string_view bytes);
// std::nullopt on a character outside the alphabet or a bad length.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace mailtap::captures
