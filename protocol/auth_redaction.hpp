// What of AUTH material (RFC 4954) the recorder may see: an AUTH command keeps its verb and
// mechanism and loses its initial response; a response of the exchange is masked whole. The
// masked forms keep the length and line ends of the raw bytes, so a capture's byte record
// still lines up with the conversation. Pure functions.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace mailtap::protocol {

// A line without its CRLF (or bare LF, or bare CR at the end).
std::string_view stripped_crlf(std::string_view line);
// Where an AUTH command's initial response starts ("AUTH MECH <here>"), or npos.
std::size_t auth_initial_response_at(std::string_view text);
// An AUTH line sent upstream as the recorder sees it: an AUTH command keeps its verb and
// mechanism and masks its initial response ("AUTH PLAIN ****"); a response of the exchange
// is masked whole. A response has no space (base64, or "*"), so it never reads as "AUTH MECH".
std::string masked_auth_line(std::string_view bytes);
// An AUTH command line as a command record shows it: mechanism kept, initial response replaced
// by its size. Other lines are returned as they are.
std::string redacted_auth_command(std::string_view body);

}  // namespace mailtap::protocol
