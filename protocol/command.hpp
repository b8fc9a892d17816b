// SMTP command-line parser (RFC 5321 section 4.1 verbs, ESMTP parameters per RFC 5321 4.1.2).
// Lenient where the upstream should judge (MAIL/RCPT syntax is recorded, not enforced),
// strict where framing or safety depends on it (NUL, bare CR/LF, BDAT sizes). Pure, thread-safe.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/phase.hpp"

namespace mailtap::protocol {

struct esmtp_param {
  std::string keyword;                 // upper-cased
  std::optional<std::string> value;
  bool operator==(const esmtp_param&) const = default;
};

struct command {
  std::string verb;                    // upper-cased, e.g. "MAIL"
  phase ph = phase::other;
  std::string argument;                // text after the verb and its space, as sent
  std::optional<std::string> address;  // MAIL FROM / RCPT TO path without <>, when present
  std::vector<esmtp_param> params;     // ESMTP parameters after the path
  std::uint64_t bdat_size = 0;         // BDAT only
  bool bdat_last = false;              // BDAT only
};

// Why a line is refused by the relay itself (never forwarded). `none` means forward it.
enum class command_fault { none, nul_byte, bare_cr_or_lf, forbidden_verb, bad_bdat };

struct parsed_command {
  command cmd;
  command_fault fault = command_fault::none;
};

// `line` excludes the terminating CRLF.
parsed_command parse_command(std::string_view line);

// Verbs that must never cross the relay (SMTP_NOTES "command smuggling through the relay").
bool is_forbidden_verb(std::string_view upper_verb);

// Upper-case copy of ASCII text.
std::string to_upper(std::string_view text);
// Case-insensitive ASCII comparison.
bool iequals(std::string_view a, std::string_view b);

}  // namespace mailtap::protocol
