// Cuts a client's recorded bytes into steps (client_steps.hpp).
#include "captures/client_steps.hpp"

#include <string>

#include "protocol/command.hpp"

namespace mailtap::captures {

std::string_view client_step::line(std::string_view bytes) const {
  std::string_view l = bytes.substr(begin, line_end - begin);
  if (l.ends_with("\r\n")) l.remove_suffix(2);
  return l;
}

protocol::bare_eol_mode message_framing(const capture_header& h) {
  const auto eol = protocol::parse_bare_eol_mode(h.bare_eol).value_or(protocol::bare_eol_mode::strict);
  return eol == protocol::bare_eol_mode::normalize && h.normalize_to.empty() ? protocol::bare_eol_mode::normalize_line_ends
                                                                               : eol;
}

std::vector<client_step> cut_client_steps(std::string_view bytes, std::span<const int> reply_codes,
                                          protocol::bare_eol_mode framing) {
  enum class mode { command, auth, message };
  std::vector<client_step> out;
  mode m = mode::command;
  std::string scratch;   // the framer's copy, not kept
  for (std::size_t pos = 0; pos < bytes.size(); pos = out.back().end) {
    client_step st;
    st.begin = pos;
    const std::size_t answer = out.size() + 1;   // the greeting answers no step
    const int code = answer < reply_codes.size() ? reply_codes[answer] : 0;
    const mode was = m;
    m = mode::command;
    if (was == mode::message) {
      protocol::data_framer framer(framing);
      scratch.clear();
      const std::size_t used = framer.feed(bytes.substr(pos), scratch);
      st.kind = client_step_kind::message;
      st.ph = protocol::phase::data_end;
      st.line_end = pos;
      st.unfinished = !framer.ended();
      st.end = st.unfinished ? bytes.size() : pos + used;
      out.push_back(st);
      continue;
    }
    const std::size_t crlf = bytes.find("\r\n", pos);
    st.unfinished = crlf == std::string_view::npos;
    st.line_end = st.end = st.unfinished ? bytes.size() : crlf + 2;
    if (was == mode::auth) {
      st.kind = client_step_kind::auth_response;
      st.ph = protocol::phase::auth;
      if (code == 334) m = mode::auth;
      out.push_back(st);
      continue;
    }
    const auto parsed = protocol::parse_command(st.line(bytes));
    st.ph = parsed.cmd.ph;
    if (parsed.fault == protocol::command_fault::none) {
      if (st.ph == protocol::phase::bdat) {
        st.kind = client_step_kind::bdat;
        st.bdat_size = parsed.cmd.bdat_size;
        st.bdat_last = parsed.cmd.bdat_last;
        if (!st.unfinished && bytes.size() - st.line_end >= st.bdat_size) {
          st.end = st.line_end + static_cast<std::size_t>(st.bdat_size);
        } else {
          st.unfinished = true;
          st.end = bytes.size();
        }
      } else if (st.ph == protocol::phase::data && code == 354) {
        m = mode::message;
      } else if (st.ph == protocol::phase::auth && code == 334) {
        m = mode::auth;
      }
    }
    out.push_back(st);
  }
  return out;
}

}  // namespace mailtap::captures
