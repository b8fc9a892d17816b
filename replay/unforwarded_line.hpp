// Which recorded command lines the relay answered itself and never forwarded, and why, decided
// as relay_fsm decides it (README "Refused, never forwarded"): a line past the length it takes
// (protocol/limits.hpp command_line_accepted, its CRLF included) or one protocol::parse_command
// gives a command_fault (protocol/command.hpp). A replay client must not send such a line to a
// live server, which may read it otherwise (Postfix takes a bare LF for a line's end, and the
// first 2048 bytes of a longer line for a command). Pure.
#pragma once
#include <string>
#include <string_view>

namespace mailtap::replay {

// Why the relay never forwarded this command line, as the client sent it, as a note's phrase
// ("a bare LF, which ..."); empty when it forwards such a line. A line without its CRLF (the
// session ended inside it) is judged by what it already holds: its length, and a fault no byte
// after it could undo (a bare LF, a bare CR or a NUL inside it, white space before its verb); what
// else it would have become is unknown.
std::string why_never_forwarded(std::string_view line);

}  // namespace mailtap::replay
