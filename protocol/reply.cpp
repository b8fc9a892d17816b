// Reply parsing and formatting.
#include "protocol/reply.hpp"

#include "protocol/limits.hpp"

namespace mailtap::protocol {

std::string_view to_string(reply_parse_status s) {
  switch (s) {
    case reply_parse_status::ok: return "ok";
    case reply_parse_status::line_too_long: return "reply line too long";
    case reply_parse_status::too_many_lines: return "reply has too many lines";
    case reply_parse_status::malformed: return "malformed reply line";
    case reply_parse_status::bare_lf: return "reply line ended by a bare LF";
    case reply_parse_status::bare_cr: return "bare CR in reply line";
    case reply_parse_status::nul: return "NUL in reply line";
  }
  return "?";
}

namespace {

// A line's text after the enhanced code it begins with, when it begins with this reply's.
std::string_view without_enhanced(std::string_view line, std::string_view enhanced) {
  if (enhanced.empty() || !line.starts_with(enhanced)) return line;
  if (line.size() > enhanced.size() && line[enhanced.size()] != ' ') return line;
  line.remove_prefix(enhanced.size());
  while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  return line;
}

}  // namespace

std::string reply::text() const {
  if (lines.empty()) return {};
  return std::string(without_enhanced(lines.front(), enhanced));
}

std::string reply::full_text() const {
  std::string out;
  for (const auto& line : lines) {
    if (&line != &lines.front()) out += '\n';
    out += without_enhanced(line, enhanced);
  }
  return out;
}

std::string parse_enhanced_code(int code, std::string_view text) {
  // class "." subject "." detail, subject and detail 1*3DIGIT, followed by SP or end.
  if (text.size() < 5) return {};
  char klass = text[0];
  if (klass != '2' && klass != '4' && klass != '5') return {};
  if (klass - '0' != code / 100 || text[1] != '.') return {};
  std::size_t i = 2;
  for (int part = 0; part < 2; ++part) {
    std::size_t digits = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9' && digits < 4) { ++i; ++digits; }
    if (digits == 0 || digits > 3) return {};
    if (part == 0) {
      if (i >= text.size() || text[i] != '.') return {};
      ++i;
    }
  }
  if (i < text.size() && text[i] != ' ') return {};
  return std::string(text.substr(0, i));
}

reply_parse_status reply_parser::feed(std::string_view bytes, std::vector<reply>& out) {
  if (failed_ != reply_parse_status::ok) return failed_;
  while (!bytes.empty()) {
    auto lf = bytes.find('\n');
    std::string_view piece = bytes.substr(0, lf == std::string_view::npos ? bytes.size() : lf + 1);
    bytes.remove_prefix(piece.size());
    line_.append(piece);
    if (line_.size() > limits::reply_line_cap) return failed_ = reply_parse_status::line_too_long;
    if (line_.back() != '\n') break;
    if (auto s = take_line(out); s != reply_parse_status::ok) return failed_ = s;
  }
  return reply_parse_status::ok;
}

reply_parse_status reply_parser::take_line(std::vector<reply>& out) {
  std::string_view body = line_;
  body.remove_suffix(1);                                  // LF
  // RFC 5321 2.3.8: lines end in CRLF. The relay passes replies on byte for byte, so a bare
  // LF (or a CR inside the line) would reach the client, which may read it as a line end.
  if (body.empty() || body.back() != '\r') return reply_parse_status::bare_lf;
  body.remove_suffix(1);                                  // CR
  if (body.find('\r') != std::string_view::npos) return reply_parse_status::bare_cr;
  // RFC 5321 4.2: reply text is HT and printable characters. A NUL passed on would cut the
  // line short for a client that reads C strings, and the capture would say otherwise.
  if (body.find('\0') != std::string_view::npos) return reply_parse_status::nul;
  if (body.size() < 3 || body[0] < '2' || body[0] > '5' || body[1] < '0' || body[1] > '9' ||
      body[2] < '0' || body[2] > '9')
    return reply_parse_status::malformed;
  if (body.size() > 3 && body[3] != ' ' && body[3] != '-') return reply_parse_status::malformed;
  int code = (body[0] - '0') * 100 + (body[1] - '0') * 10 + (body[2] - '0');
  bool more = body.size() > 3 && body[3] == '-';
  std::string_view text = body.size() > 4 ? body.substr(4) : std::string_view{};
  if (current_.lines.empty()) {
    current_.code = code;
    current_.enhanced = parse_enhanced_code(code, text);
  } else if (code != current_.code) {
    return reply_parse_status::malformed;                 // RFC 5321 4.2.1: same code on every line
  }
  current_.lines.emplace_back(text);
  current_.raw.append(line_);
  line_.clear();
  if (current_.lines.size() > limits::reply_lines_cap) return reply_parse_status::too_many_lines;
  if (!more) {
    out.push_back(std::move(current_));
    current_ = reply{};
  }
  return reply_parse_status::ok;
}

std::string format_reply(int code, std::string_view enhanced, std::string_view text) {
  std::string out = std::to_string(code);
  out += ' ';
  if (!enhanced.empty()) {
    out += enhanced;
    out += ' ';
  }
  out += text;
  out += "\r\n";
  return out;
}

reply make_reply(int code, std::string_view enhanced, std::string_view text) {
  reply r;
  r.code = code;
  r.enhanced = std::string(enhanced);
  r.lines.push_back(enhanced.empty() ? std::string(text)
                                     : std::string(enhanced) + " " + std::string(text));
  r.raw = format_reply(code, enhanced, text);
  return r;
}

}  // namespace mailtap::protocol
