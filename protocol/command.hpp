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
//   bare_cr, bare_lf     a CR or LF inside the line (only CRLF ends a line, RFC 5321 2.3.8)
//   http_request         an HTTP request line or header: the session is closed (Postfix's
//                        smtpd_forbidden_commands: "221 2.7.0 Error: I can break rules, too")
//   forbidden_verb       XCLIENT, XFORWARD, PROXY: refused, the session goes on
//   starttls_parameters  "STARTTLS x": RFC 3207 4 gives STARTTLS no parameters (501 5.5.4)
//   bad_bdat             an unparseable chunk size (RFC 3030)
//   leading_space        white space before the verb: RFC 5321 4.1.1 has none, and a server that
//                        skips it (Postfix's tokenizer) would run a command the relay never read
//                        as one (" AUTH PLAIN ...", " STARTTLS")
enum class command_fault {
  none, nul_byte, bare_cr, bare_lf, http_request, forbidden_verb, starttls_parameters, bad_bdat, leading_space
};

struct parsed_command {
  command cmd;
  command_fault fault = command_fault::none;
};

// `line` excludes the terminating CRLF.
parsed_command parse_command(std::string_view line);

// Verbs that must never cross the relay: they would let a client claim another identity to
// the upstream (XCLIENT, XFORWARD, a PROXY header).
bool is_forbidden_verb(std::string_view upper_verb);
// HTTP request methods (RFC 9110 9.3, RFC 5789 PATCH): a browser or proxy talking to the SMTP port.
bool is_http_verb(std::string_view upper_verb);
// A line shaped like a header field, "Label: ..." (RFC 5322 2.2: a name of printable
// characters other than ':' immediately followed by ':'), as an HTTP request's headers are.
// No SMTP command has this shape: a verb is followed by a separator or the line's end.
bool looks_like_header(std::string_view line);

// Where the first word separator (SP or HTAB) at or after `from` is, or npos. The words of a
// command line are split at either: RFC 5321 writes SP, but Postfix's smtpd (and others)
// split at any white space, so a relay that read "AUTH<TAB>PLAIN x" as one word would pass on,
// unrecognised, what the upstream takes as AUTH (and record its secret).
std::size_t find_separator(std::string_view text, std::size_t from = 0);
// `text` without its leading separators.
std::string_view skip_separators(std::string_view text);

// Upper-case copy of ASCII text.
std::string to_upper(std::string_view text);
// Case-insensitive ASCII comparison.
bool iequals(std::string_view a, std::string_view b);

}  // namespace mailtap::protocol
