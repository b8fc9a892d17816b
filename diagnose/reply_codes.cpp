// Basic reply codes (RFC 5321 4.2.2, 4.2.3; AUTH's from RFC 4954 section 6; STARTTLS's from
// RFC 3207 4) and the lookup of enhanced codes in the registry table (enhanced_codes.cpp).
#include "diagnose/reply_codes.hpp"

#include <array>
#include <utility>

namespace mailtap::diagnose {

namespace {

constexpr std::array<std::pair<int, std::string_view>, 29> basic_codes{{
    {211, "System status, or system help reply"},
    {214, "Help message"},
    {220, "Service ready"},
    {221, "Service closing transmission channel"},
    {235, "Authentication succeeded"},
    {250, "Requested mail action okay, completed"},
    {251, "User not local; will forward"},
    {252, "Cannot VRFY user, but will accept message and attempt delivery"},
    {334, "Server challenge (AUTH continues)"},
    {354, "Start mail input; end with <CRLF>.<CRLF>"},
    {421, "Service not available, closing transmission channel"},
    {432, "A password transition is needed"},
    {450, "Requested mail action not taken: mailbox unavailable (busy or temporarily blocked for policy reasons)"},
    {451, "Requested action aborted: local error in processing"},
    {452, "Requested action not taken: insufficient system storage"},
    {454, "Temporary authentication failure, or TLS not available"},
    {455, "Server unable to accommodate parameters"},
    {500, "Syntax error, command unrecognized"},
    {501, "Syntax error in parameters or arguments"},
    {502, "Command not implemented"},
    {503, "Bad sequence of commands"},
    {504, "Command parameter not implemented"},
    {530, "Authentication required"},
    {534, "Authentication mechanism is too weak"},
    {535, "Authentication credentials invalid"},
    {550, "Requested action not taken: mailbox unavailable (not found, no access, or refused for policy reasons)"},
    {552, "Requested mail action aborted: exceeded storage allocation"},
    {553, "Requested action not taken: mailbox name not allowed"},
    {554, "Transaction failed (or, as a greeting, no SMTP service here)"},
}};

constexpr std::array<std::pair<int, std::string_view>, 3> extra_codes{{
    {538, "Encryption required for requested authentication mechanism"},
    {551, "User not local"},
    {555, "MAIL FROM/RCPT TO parameters not recognized or not implemented"},
}};

// RFC 5321 4.2.1: the first digit.
std::string_view class_name(int first) {
  switch (first) {
    case 2: return "positive completion";
    case 3: return "positive intermediate";
    case 4: return "transient negative completion (try again later)";
    case 5: return "permanent negative completion (do not retry as is)";
  }
  return "not a reply code";
}

// RFC 5321 4.2.1: the second digit.
std::string_view category_name(int second) {
  switch (second) {
    case 0: return "syntax";
    case 1: return "information";
    case 2: return "connections";
    case 3: return "authentication";
    case 5: return "mail system";
  }
  return "unspecified";
}

// RFC 3463 3.1: the class digit of an enhanced code.
std::string_view enhanced_class(char c) {
  switch (c) {
    case '2': return "success";
    case '4': return "persistent transient failure";
    case '5': return "permanent failure";
  }
  return "";
}

bool all_digits(std::string_view s) {
  if (s.empty() || s.size() > 3) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace

std::string basic_meaning(int code) {
  for (const auto& [c, text] : basic_codes)
    if (c == code) return std::string(text);
  for (const auto& [c, text] : extra_codes)
    if (c == code) return std::string(text);
  if (code < 200 || code > 599) return "not a reply code";
  return std::string(class_name(code / 100)) + ", " + std::string(category_name(code / 10 % 10));
}

std::string basic_meaning(int code, protocol::phase ph) {
  if (code == 551 && ph != protocol::phase::rcpt)
    return std::string(class_name(5)) + ", " + std::string(category_name(5)) +
           " (RFC 5321 defines 551 as a reply to RCPT alone, a recipient not local)";
  return basic_meaning(code);
}

std::optional<std::string> enhanced_meaning(std::string_view enhanced) {
  // class "." subject "." detail (RFC 3463 2), the class 2, 4 or 5.
  if (enhanced.size() < 5 || enhanced[1] != '.') return std::nullopt;
  std::string_view klass = enhanced_class(enhanced[0]);
  if (klass.empty()) return std::nullopt;
  std::string_view rest = enhanced.substr(2);
  auto dot = rest.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  std::string_view subject = rest.substr(0, dot), detail = rest.substr(dot + 1);
  if (!all_digits(subject) || !all_digits(detail)) return std::nullopt;
  std::string key = "X." + std::string(rest);
  if (const auto* e = find_enhanced(key)) return std::string(klass) + ": " + std::string(e->title);
  if (const auto* other = find_enhanced("X." + std::string(subject) + ".0"))
    return std::string(klass) + ": " + std::string(other->title) + " (detail " + std::string(detail) +
           " is not in the registry)";
  return std::string(klass) + ": subject " + std::string(subject) + " is not in the registry";
}

}  // namespace mailtap::diagnose
