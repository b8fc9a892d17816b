// Names of the phases, as used in TOML scenario files and capture JSON.
#include "protocol/phase.hpp"

#include <array>
#include <utility>

namespace mailtap::protocol {
namespace {
constexpr std::array<std::pair<phase, std::string_view>, 20> names{{
    {phase::connect, "connect"}, {phase::banner, "banner"},   {phase::ehlo, "ehlo"},
    {phase::helo, "helo"},       {phase::starttls, "starttls"}, {phase::auth, "auth"},
    {phase::mail, "mail"},       {phase::rcpt, "rcpt"},       {phase::data, "data"},
    {phase::body, "body"},       {phase::data_end, "data_end"}, {phase::bdat, "bdat"},
    {phase::rset, "rset"},       {phase::noop, "noop"},       {phase::vrfy, "vrfy"},
    {phase::expn, "expn"},       {phase::help, "help"},       {phase::quit, "quit"},
    {phase::other, "other"},     {phase::tls, "tls"},
}};
}  // namespace

std::string_view to_string(phase p) {
  for (const auto& [value, name] : names)
    if (value == p) return name;
  return "other";
}

std::optional<phase> parse_phase(std::string_view name) {
  for (const auto& [value, n] : names)
    if (n == name) return value;
  return std::nullopt;
}

}  // namespace mailtap::protocol
