// Base64 (RFC 4648, with padding): raw bytes in capture files, AUTH responses in the sink.
// Written by hand because the only Debian-packaged encoders are in OpenSSL (an I/O library,
// kept out of protocol/) or Beast's detail namespace (not a public API). Pure, thread-safe.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::protocol {

std::string base64_encode(std::string_view bytes);
// Appends the encoding of `bytes` to `out` (the capture writer encodes into its line).
void base64_encode_into(std::string& out, std::string_view bytes);
// std::nullopt on a character outside the alphabet or a bad length.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace mailtap::protocol
