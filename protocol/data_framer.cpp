// DATA framing state machine. States track where the next byte stands relative to a line:
// line_start (after CRLF), mid, cr (a CR held until we know whether LF follows),
// dot (a '.' at line start), dot_cr ('.' CR at line start, one LF away from the end).
#include "protocol/data_framer.hpp"

#include <algorithm>

#include "protocol/limits.hpp"

namespace mailtap::protocol {

std::string_view to_string(bare_eol_mode m) {
  switch (m) {
    case bare_eol_mode::strict: return "strict";
    case bare_eol_mode::normalize: return "normalize";
    case bare_eol_mode::raw: return "raw";
  }
  return "?";
}

std::optional<bare_eol_mode> parse_bare_eol_mode(std::string_view name) {
  if (name == "strict") return bare_eol_mode::strict;
  if (name == "normalize") return bare_eol_mode::normalize;
  if (name == "raw") return bare_eol_mode::raw;
  return std::nullopt;
}

std::string_view to_string(data_fault f) {
  switch (f) {
    case data_fault::none: return "none";
    case data_fault::bare_cr_or_lf: return "bare CR or LF in message data";
    case data_fault::line_too_long: return "message line too long";
  }
  return "?";
}

void data_framer::emit(std::string& forward, std::string_view bytes) {
  message_bytes_ += bytes.size();
  if (fault_ == data_fault::none) forward.append(bytes);
}

// A bare CR or LF: `as_received` is what the sender sent in its place (the byte itself, or
// a held '.' plus it), already counted by the state machine's caller.
void data_framer::bare(std::string& forward, std::string_view as_received) {
  switch (mode_) {
    case bare_eol_mode::raw: emit(forward, as_received); break;
    case bare_eol_mode::normalize: {
      std::string fixed(as_received);
      for (char& c : fixed)
        if (c == '\r' || c == '\n') c = ' ';
      ++normalized_;
      emit(forward, fixed);
      break;
    }
    case bare_eol_mode::strict:
      message_bytes_ += as_received.size();
      if (fault_ == data_fault::none) fault_ = data_fault::bare_cr_or_lf;
      break;
  }
}

std::size_t data_framer::feed(std::string_view in, std::string& forward) {
  std::size_t i = 0;
  while (i < in.size() && state_ != state::ended) {
    if (line_length_ > limits::data_line_cap && fault_ == data_fault::none)
      fault_ = data_fault::line_too_long;
    char c = in[i];
    switch (state_) {
      case state::line_start:
        if (c == '.') { state_ = state::dot; ++i; ++line_length_; continue; }
        state_ = state::mid;
        continue;                                  // re-examine c as a mid-line byte
      case state::mid: {
        // Two memchr scans: string_view::find_first_of runs a memchr per input byte.
        std::size_t end = std::min(in.find('\r', i), in.find('\n', i));
        if (end == std::string_view::npos) end = in.size();
        // Stop the run one byte past the cap so the line_too_long check at the top of the loop
        // falls on the same byte however the input is segmented (a whole-chunk run used to
        // forward the entire over-long line, a byte-at-a-time feed only cap + 1 bytes of it).
        if (line_length_ <= limits::data_line_cap)
          end = std::min(end, i + (limits::data_line_cap + 1 - line_length_));
        emit(forward, in.substr(i, end - i));
        line_length_ += end - i;
        i = end;
        if (i == in.size() || (in[i] != '\r' && in[i] != '\n')) continue;
        if (in[i] == '\r') { state_ = state::cr; ++i; ++line_length_; continue; }
        bare(forward, "\n");                       // LF without CR
        ++i;
        ++line_length_;
        continue;
      }
      case state::cr:
        if (c == '\n') {
          emit(forward, "\r\n");
          state_ = state::line_start;
          line_length_ = 0;
          ++i;
        } else {
          bare(forward, "\r");                     // CR without LF; c is examined as mid-line
          state_ = state::mid;
        }
        continue;
      case state::dot:
        if (c == '\r') { state_ = state::dot_cr; ++i; ++line_length_; continue; }
        emit(forward, ".");                        // a stuffed or ordinary dot line
        state_ = state::mid;
        continue;
      case state::dot_cr:
        if (c == '\n') { state_ = state::ended; ++i; continue; }
        emit(forward, ".");
        bare(forward, "\r");                       // "\r\n.\r" then not LF
        state_ = state::mid;
        continue;
      case state::ended: break;
    }
  }
  return i;
}

}  // namespace mailtap::protocol
