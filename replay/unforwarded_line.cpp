// The command lines the relay refuses itself, from the relay's own classification.
#include "replay/unforwarded_line.hpp"

#include "protocol/command.hpp"
#include "protocol/limits.hpp"

namespace mailtap::replay {

namespace {

// Every fault parse_command gives is a refusal (relay_fsm answers each itself); the switch names
// them all, so a new one is named here or the compiler says so (-Wswitch).
std::string_view why_refused(protocol::command_fault fault) {
  using protocol::command_fault;
  switch (fault) {
    case command_fault::none: return {};
    case command_fault::bare_lf: return "a bare LF inside it, which a server may read as two lines";
    case command_fault::bare_cr: return "a bare CR inside it, which a server may read as two lines";
    case command_fault::nul_byte: return "a NUL inside it";
    case command_fault::leading_space: return "white space before its verb";
    case command_fault::http_request:
      return "an HTTP request or header line: the relay answers it 221 and closes the session, reading nothing behind it";
    case command_fault::forbidden_verb: return "a verb the relay never forwards";
    case command_fault::starttls_parameters: return "STARTTLS with a parameter";
    case command_fault::bad_bdat:
      return "a BDAT size the relay cannot read: a server that answers it and goes on reads what follows as commands";
  }
  return "a form the relay refuses";
}

}  // namespace

std::string why_never_forwarded(std::string_view line) {
  // The relay measures a line with its CRLF before it parses it (protocol/relay_fsm.cpp).
  const bool whole = line.ends_with("\r\n");
  constexpr std::size_t most = protocol::limits::command_line_accepted;
  if (line.size() + (whole ? 0 : 2) > most)
    return "more than the " + std::to_string(most) + " bytes the relay takes in a command line, its CRLF included "
           "(500 5.5.2): a server may take its first " + std::to_string(most) + " bytes for a command";
  if (whole) {
    line.remove_suffix(2);
    return std::string(why_refused(protocol::parse_command(line).fault));
  }
  // A line the session ended inside was never forwarded (only its CRLF ends it, RFC 5321 2.3.8),
  // and the relay would have refused it whatever came after: a bare LF, a bare CR or a NUL already
  // inside it, or white space before its verb, is a fault whatever follows (parse_command looks
  // for them first). A last CR may be the first half of its CRLF. Sent as recorded, such a line
  // is a command to a server that takes a bare LF for a line's end (Postfix): "MAIL FROM:<a>\n".
  if (line.ends_with('\r')) line.remove_suffix(1);
  switch (const auto fault = protocol::parse_command(line).fault) {
    case protocol::command_fault::bare_lf:
    case protocol::command_fault::bare_cr:
    case protocol::command_fault::nul_byte:
    case protocol::command_fault::leading_space:
      return std::string(why_refused(fault)) + ", though the session ended before its CRLF";
    default: return {};
  }
}

}  // namespace mailtap::replay
