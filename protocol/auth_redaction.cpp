// AUTH redaction (auth_redaction.hpp).
#include "protocol/auth_redaction.hpp"

#include <algorithm>

#include "protocol/command.hpp"

namespace mailtap::protocol {

std::string_view stripped_crlf(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

std::size_t auth_initial_response_at(std::string_view text) {
  // White space before the verb (refused by the relay, taken by some servers) hides nothing.
  const std::size_t verb = text.find_first_not_of(" \t");
  if (verb == std::string_view::npos) return std::string_view::npos;
  auto sp = find_separator(text, verb);
  if (sp == std::string_view::npos || !iequals(text.substr(verb, sp - verb), "AUTH")) return std::string_view::npos;
  auto sp2 = find_separator(text, sp + 1);
  return sp2 == std::string_view::npos ? sp2 : sp2 + 1;
}

std::string masked_auth_line(std::string_view bytes) {
  std::string copy(bytes);
  std::string_view line = stripped_crlf(bytes);
  auto sp = find_separator(line);
  bool auth_command = sp != std::string_view::npos && iequals(line.substr(0, sp), "AUTH");
  std::size_t from = 0;
  if (auth_command) from = std::min(auth_initial_response_at(line), line.size());
  for (std::size_t i = from; i < copy.size(); ++i)
    if (copy[i] != '\r' && copy[i] != '\n') copy[i] = '*';
  return copy;
}

std::string redacted_auth_command(std::string_view body) {
  auto at = auth_initial_response_at(body);
  if (at == std::string_view::npos) return std::string(body);
  return std::string(body.substr(0, at - 1)) + " [initial response redacted, " + std::to_string(body.size() - at) +
         " bytes]";
}

}  // namespace mailtap::protocol
