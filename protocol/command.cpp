// Command-line parsing: verb, phase, path and ESMTP parameters, plus the relay's refusals.
#include "protocol/command.hpp"

#include <array>
#include <charconv>

namespace mailtap::protocol {

std::size_t find_separator(std::string_view text, std::size_t from) {
  return text.find_first_of(" \t", from);
}

std::string_view skip_separators(std::string_view text) {
  auto at = text.find_first_not_of(" \t");
  return at == std::string_view::npos ? std::string_view{} : text.substr(at);
}

std::string to_upper(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 'a' + 'A');
    if (y >= 'a' && y <= 'z') y = static_cast<char>(y - 'a' + 'A');
    if (x != y) return false;
  }
  return true;
}

bool is_forbidden_verb(std::string_view v) {
  static constexpr std::array<std::string_view, 3> forbidden{"XCLIENT", "XFORWARD", "PROXY"};
  for (auto f : forbidden)
    if (f == v) return true;
  return false;
}

bool is_http_verb(std::string_view v) {
  static constexpr std::array<std::string_view, 9> methods{"GET",     "POST",    "PUT",   "HEAD", "CONNECT",
                                                           "OPTIONS", "DELETE",  "PATCH", "TRACE"};
  for (auto m : methods)
    if (m == v) return true;
  return false;
}

bool looks_like_header(std::string_view line) {
  for (std::size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (c == ':') return i > 0;
    if (c < 33 || c > 126) return false;   // a space, control or 8-bit byte before any ':'
  }
  return false;
}

namespace {

phase phase_of(std::string_view v) {
  struct entry { std::string_view verb; phase ph; };
  static constexpr std::array<entry, 14> table{{
      {"EHLO", phase::ehlo}, {"HELO", phase::helo}, {"STARTTLS", phase::starttls},
      {"AUTH", phase::auth}, {"MAIL", phase::mail}, {"RCPT", phase::rcpt},
      {"DATA", phase::data}, {"BDAT", phase::bdat}, {"RSET", phase::rset},
      {"NOOP", phase::noop}, {"VRFY", phase::vrfy}, {"EXPN", phase::expn},
      {"HELP", phase::help}, {"QUIT", phase::quit},
  }};
  for (const auto& e : table)
    if (e.verb == v) return e.ph;
  return phase::other;
}

// Splits "FROM:<a@b> SIZE=10 BODY=8BITMIME" after the given prefix into path and params.
void parse_path_and_params(command& cmd, std::string_view prefix) {
  std::string_view arg = cmd.argument;
  if (arg.size() < prefix.size() || !iequals(arg.substr(0, prefix.size()), prefix)) return;
  arg.remove_prefix(prefix.size());
  arg = skip_separators(arg);   // tolerate "FROM: <x>"
  std::string_view rest;
  if (!arg.empty() && arg.front() == '<') {
    bool quoted = false;
    std::size_t end = std::string_view::npos;
    for (std::size_t i = 1; i < arg.size(); ++i) {
      // RFC 5321 quoted-pairSMTP: inside quotes a backslash escapes the next character, so
      // "a\\" ends at its second quote (looking only at the previous byte misread it as "\"").
      if (quoted && arg[i] == '\\') { ++i; continue; }
      if (arg[i] == '"') quoted = !quoted;
      if (arg[i] == '>' && !quoted) { end = i; break; }
    }
    if (end == std::string_view::npos) return;
    cmd.address = std::string(arg.substr(1, end - 1));
    rest = arg.substr(end + 1);
  } else {
    auto sp = find_separator(arg);
    cmd.address = std::string(arg.substr(0, sp));
    rest = sp == std::string_view::npos ? std::string_view{} : arg.substr(sp);
  }
  while (!rest.empty()) {
    rest = skip_separators(rest);
    if (rest.empty()) break;
    auto sp = find_separator(rest);
    std::string_view token = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp);
    auto eq = token.find('=');
    esmtp_param p;
    p.keyword = to_upper(token.substr(0, eq));
    if (eq != std::string_view::npos) p.value = std::string(token.substr(eq + 1));
    cmd.params.push_back(std::move(p));
  }
}

// RFC 3030: "BDAT" SP chunk-size [ SP end-marker ]; chunk-size is 1*DIGIT. Exactly that: a
// tab or a second space is refused, since an upstream that keeps to the grammar would not read
// the line as BDAT, and would read the chunk after it as commands (smuggling).
bool parse_bdat(std::string_view line, command& cmd) {
  if (line.size() < 5 || line[4] != ' ' || line.find('\t') != std::string_view::npos) return false;
  std::string_view arg = cmd.argument;
  auto sp = arg.find(' ');
  std::string_view size = arg.substr(0, sp);
  if (size.empty() || size.size() > 18) return false;
  for (char c : size)
    if (c < '0' || c > '9') return false;
  std::from_chars(size.data(), size.data() + size.size(), cmd.bdat_size);
  if (sp != std::string_view::npos) {
    std::string_view marker = arg.substr(sp + 1);
    if (!iequals(marker, "LAST")) return false;
    cmd.bdat_last = true;
  }
  return true;
}

}  // namespace

parsed_command parse_command(std::string_view line) {
  parsed_command out;
  for (char c : line) {
    if (c == '\0') { out.fault = command_fault::nul_byte; break; }
    if (c == '\r') { out.fault = command_fault::bare_cr; break; }
    if (c == '\n') { out.fault = command_fault::bare_lf; break; }
  }
  auto sp = find_separator(line);
  out.cmd.verb = to_upper(line.substr(0, sp));
  if (sp != std::string_view::npos) out.cmd.argument = std::string(line.substr(sp + 1));
  out.cmd.ph = phase_of(out.cmd.verb);
  if (out.fault != command_fault::none) return out;
  if (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
    out.fault = command_fault::leading_space;
    return out;
  }
  if (is_http_verb(out.cmd.verb) || looks_like_header(line)) {
    out.fault = command_fault::http_request;
    return out;
  }
  if (is_forbidden_verb(out.cmd.verb)) {
    out.fault = command_fault::forbidden_verb;
    return out;
  }
  if (out.cmd.ph == phase::starttls && !skip_separators(out.cmd.argument).empty()) {
    out.fault = command_fault::starttls_parameters;
    return out;
  }
  switch (out.cmd.ph) {
    case phase::mail: parse_path_and_params(out.cmd, "FROM:"); break;
    case phase::rcpt: parse_path_and_params(out.cmd, "TO:"); break;
    case phase::bdat:
      if (!parse_bdat(line, out.cmd)) out.fault = command_fault::bad_bdat;
      break;
    default: break;
  }
  return out;
}

}  // namespace mailtap::protocol
