// The Cisco profiles as primitive rules. ASA's "header line over 998" drop has no matcher
// (policies see commands, not message lines), so it is not part of the profile.
#include "policies/firewall.hpp"

#include <string>

#include "policies/types/type.hpp"

namespace mailtap::policies {
namespace {

// ASA inspect esmtp default map limits (policies/README.md, "Firewall profiles").
constexpr std::uint64_t asa_command_line_bytes = 512;
constexpr std::uint64_t asa_max_recipients = 100;
constexpr std::uint64_t asa_sender_address_bytes = 320;

const std::vector<std::string> pix_verbs = {"HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"};
const std::vector<std::string> asa_verbs = {"HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "AUTH",
                                            "EHLO", "ETRN", "HELP", "SAML", "SEND", "SOML", "VRFY"};

rule part(std::string_view name, std::string_view suffix, type_params params, std::vector<protocol::phase> phases,
          const matcher& base) {
  rule r;
  r.name = std::string(name) + "/" + std::string(suffix);
  r.firewall_of = name;
  r.params = std::move(params);
  r.phases = std::move(phases);
  r.match = base;
  return r;
}

}  // namespace

std::optional<firewall_profile> parse_firewall_profile(std::string_view name) {
  if (name == "cisco-pix-fixup") return firewall_profile::cisco_pix_fixup;
  if (name == "cisco-asa-esmtp") return firewall_profile::cisco_asa_esmtp;
  return std::nullopt;
}

std::vector<rule> expand_firewall(std::string_view name, firewall_profile profile, const matcher& session_matchers) {
  using protocol::phase;
  const bool asa = profile == firewall_profile::cisco_asa_esmtp;
  std::vector<rule> out;
  out.push_back(part(name, "banner", banner_params{.mask = true, .text = {}}, {phase::banner}, session_matchers));
  out.push_back(part(name, "verb_filter", verb_filter_params{.allow = asa ? asa_verbs : pix_verbs}, command_phases(),
                     session_matchers));
  if (asa) {
    capabilities_params caps;
    // BDAT is not an allowed verb: offered CHUNKING, a client's BDAT would get 500 (the ASA
    // masks the EHLO keywords its map does not name, CHUNKING among them).
    caps.mask = {"STARTTLS", "CHUNKING"};
    out.push_back(part(name, "capabilities", caps, {phase::ehlo}, session_matchers));

    rule line = part(name, "line_limit", disconnect_params{}, command_phases(), session_matchers);
    line.match.line_longer_than = asa_command_line_bytes;
    out.push_back(std::move(line));
    rule rcpt = part(name, "rcpt_limit", disconnect_params{}, {phase::rcpt}, session_matchers);
    rcpt.match.recipients_more_than = asa_max_recipients;
    out.push_back(std::move(rcpt));
    rule sender = part(name, "sender_limit", disconnect_params{}, {phase::mail}, session_matchers);
    sender.match.address_longer_than = asa_sender_address_bytes;
    out.push_back(std::move(sender));
  }
  out.push_back(part(name, "split_dot_withhold", split_dot_withhold_params{}, {}, session_matchers));
  return out;
}

}  // namespace mailtap::policies
