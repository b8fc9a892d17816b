// The XCLIENT command line (see xclient.hpp).
#include "protocol/xclient.hpp"

#include <cctype>

namespace mailtap::protocol {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// True when the space-separated attribute list `advertised` names `attribute`.
bool advertises(std::string_view advertised, std::string_view attribute) {
  std::size_t i = 0;
  while (i < advertised.size()) {
    while (i < advertised.size() && advertised[i] == ' ') ++i;
    std::size_t end = advertised.find(' ', i);
    if (end == std::string_view::npos) end = advertised.size();
    if (end > i && iequals(advertised.substr(i, end - i), attribute)) return true;
    i = end;
  }
  return false;
}

}  // namespace

std::string xtext_encode(std::string_view value) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= '!' && c <= '~' && c != '+' && c != '=') {
      out += ch;
    } else {
      out += '+';
      out += hex[c >> 4];
      out += hex[c & 0xf];
    }
  }
  return out;
}

std::optional<std::string> xclient_command(const xclient_identity& who, std::string_view advertised) {
  if (!advertises(advertised, "ADDR")) return std::nullopt;
  const bool v6 = std::holds_alternative<ipv6_bytes>(who.address);
  std::string line = "XCLIENT ADDR=" + xtext_encode((v6 ? "IPV6:" : "") + format_ip(who.address));
  if (advertises(advertised, "PORT")) line += " PORT=" + std::to_string(who.port);
  if (advertises(advertised, "NAME")) line += " NAME=" + xtext_encode("[UNAVAILABLE]");
  if (advertises(advertised, "HELO") && !who.helo.empty() && who.helo.size() <= xclient_value_max) {
    const std::string helo = " HELO=" + xtext_encode(who.helo);
    if (line.size() + helo.size() + 2 <= xclient_line_max) line += helo;
  }
  return line + "\r\n";
}

}  // namespace mailtap::protocol
