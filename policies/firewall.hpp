// Firewall profiles (policies/README.md, "Firewall profiles"): a `firewall` rule expands at
// load time into primitive rules named "<name>/<part>", so the engine never sees a
// firewall type.
// Owns nothing. Pure functions, thread-safe.
#pragma once
#include <optional>
#include <string_view>
#include <vector>

#include "policies/rule.hpp"

namespace mailtap::policies {

enum class firewall_profile : unsigned char { cisco_pix_fixup, cisco_asa_esmtp };

std::optional<firewall_profile> parse_firewall_profile(std::string_view name);

// The profile's parts, in this order (absent parts skipped):
//   banner        banner, mask = true
//   verb_filter   PIX: the 7 verbs; ASA: the 15 of the default map
//   capabilities  ASA: STARTTLS and CHUNKING masked (250-XXXXXXXA each)
//   line_limit    ASA: disconnect when a command line is over 512 bytes
//   rcpt_limit    ASA: disconnect at more than 100 RCPT
//   sender_limit  ASA: disconnect when the sender address is over 320 bytes
//   split_dot_withhold
// Each part carries `session_matchers` (client, tls, nth_session, after, for, until).
std::vector<rule> expand_firewall(std::string_view name, firewall_profile profile, const matcher& session_matchers);

}  // namespace mailtap::policies
