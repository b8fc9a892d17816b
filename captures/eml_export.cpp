// The client's messages (eml_export.hpp), from its bytes as captures/client_steps.hpp cuts them:
// the cutter `mailtap show` and replay read a capture with, as the relay read the client.
#include "captures/eml_export.hpp"

#include <fstream>
#include <string_view>
#include <utility>

#include "captures/client_steps.hpp"
#include "captures/private_file.hpp"
#include "protocol/reply.hpp"

namespace mailtap::captures {

namespace {

// The client leg: every byte the client sent, and the codes of the replies it got (the greeting
// first), in record order. The relay writes only well-formed replies to the client; should one not
// parse, the codes stop there, and no step after it is answered.
struct client_leg {
  std::string in;
  std::vector<int> codes;
};

client_leg read_client_leg(const capture& c) {
  client_leg leg;
  protocol::reply_parser parser;
  std::vector<protocol::reply> replies;
  for (const auto& e : c.events) {
    const auto* b = std::get_if<bytes_event>(&e);
    if (!b || b->leg != protocol::leg::client) continue;
    if (b->dir == protocol::direction::in) {
      leg.in += b->data;
      continue;
    }
    parser.feed(b->data, replies);
    for (const auto& r : replies) leg.codes.push_back(r.code);
    replies.clear();
  }
  return leg;
}

// Where the line starting at `from` of a message ends (one past its line ending), as the relay
// read the message: only CRLF ends a line (RFC 5321 2.3.8), but under normalize_line_ends (an older
// normalize capture) a bare CR or LF did too.
std::size_t line_end(std::string_view m, std::size_t from, bool bare_ends_line) {
  if (!bare_ends_line) {
    const auto crlf = m.find("\r\n", from);
    return crlf == std::string_view::npos ? m.size() : crlf + 2;
  }
  const auto eol = m.find_first_of("\r\n", from);
  if (eol == std::string_view::npos) return m.size();
  return m.compare(eol, 2, "\r\n") == 0 ? eol + 2 : eol + 1;
}

// A DATA message step, its end included, as the client sent it: without the dot line that ended it
// (".\r\n"; under normalize_line_ends also ".\n", or ".\r" ended on the byte after it), and with the
// leading dot of each line that begins with one removed (RFC 5321 4.5.2). A dot after a bare LF
// begins no line under today's framings (under normalize the LF went on as a space, and the
// destination kept the dot).
std::string unstuffed(std::string_view m, protocol::bare_eol_mode framing) {
  m.remove_suffix(m.ends_with("\r\n") ? 3 : 2);
  const bool bare_ends_line = framing == protocol::bare_eol_mode::normalize_line_ends;
  std::string out;
  out.reserve(m.size());
  for (std::size_t line = 0; line < m.size();) {
    const std::size_t end = line_end(m, line, bare_ends_line);
    const std::size_t from = m[line] == '.' ? line + 1 : line;
    out.append(m, from, end - from);
    line = end;
  }
  return out;
}

// A command line after which the chunks the client sent so far are no message's: the transaction
// they were in ended (RSET, QUIT, a new EHLO or HELO, TLS begun) or a new one began (RFC 3030 2,
// RFC 5321 4.1.4). Known by the reply: a MAIL refused (503 inside a transaction) leaves the chunks'
// message open.
bool drops_chunks(protocol::phase ph, int code) {
  using protocol::phase;
  switch (ph) {
    case phase::rset:
    case phase::quit: return true;
    case phase::mail:
    case phase::ehlo:
    case phase::helo: return code / 100 == 2;
    case phase::starttls: return code == 220;
    default: return false;
  }
}

}  // namespace

std::vector<sent_message> sent_messages(const capture& c) {
  const client_leg leg = read_client_leg(c);
  const auto framing = message_framing(c.header);
  const std::string_view in = leg.in;
  std::vector<sent_message> messages;
  std::string chunks;   // the BDAT message's chunks so far
  const auto steps = cut_client_steps(in, leg.codes, framing);
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const client_step& st = steps[i];
    if (st.unfinished) break;   // cut before its end: only the last step can be
    const std::size_t answer = i + 1;   // the greeting answers no step
    const int code = answer < leg.codes.size() ? leg.codes[answer] : 0;
    switch (st.kind) {
      case client_step_kind::message:
        messages.push_back({unstuffed(in.substr(st.begin, st.end - st.begin), framing), false});
        break;
      case client_step_kind::bdat:
        chunks.append(in, st.line_end, st.end - st.line_end);
        if (st.bdat_last) messages.push_back({std::exchange(chunks, {}), true});
        break;
      case client_step_kind::line:
        // After a QUIT the relay reads nothing more as commands, whatever answered it (the
        // destination, a fault, the relay): what the client sends after it is no message.
        if (st.ph == protocol::phase::quit) return messages;
        if (drops_chunks(st.ph, code)) chunks.clear();
        break;
      case client_step_kind::auth_response: break;
    }
  }
  return messages;
}

std::optional<std::vector<std::filesystem::path>> write_eml_files(const capture& c, const std::filesystem::path& dir,
                                                                  std::string& error) {
  // The reader takes only a plain session id; a capture model built elsewhere is checked again,
  // since the id becomes a file name inside `dir`.
  if (!is_session_id(c.header.session)) {
    error = "the capture's session id is not a plain name: refusing to make a file name of it";
    return std::nullopt;
  }
  std::vector<std::filesystem::path> written;
  const auto messages = sent_messages(c);
  if (messages.empty()) return written;   // nothing to write: no directory made for it
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    error = dir.string() + ": cannot create: " + ec.message();
    return std::nullopt;
  }
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const auto path = dir / (c.header.session + "-" + std::to_string(i + 1) + ".eml");
    if (!make_private_file(path, error)) return std::nullopt;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << messages[i].content;
    out.close();
    if (!out) {
      error = path.string() + ": cannot write";
      return std::nullopt;
    }
    written.push_back(path);
  }
  return written;
}

}  // namespace mailtap::captures
