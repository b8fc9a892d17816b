// Glob matching for rule matchers (verb, argument, sender, recipient, ehlo): `*` is any run
// of characters, `?` exactly one; ASCII case-insensitive; the pattern must match the whole
// text. Owns nothing. Pure functions, thread-safe.
#pragma once
#include <string_view>

namespace mailtap::policies {

bool glob_match(std::string_view pattern, std::string_view text);

// The domain of an address: the text after its last '@' ("" when there is none).
std::string_view address_domain(std::string_view address);

}  // namespace mailtap::policies
