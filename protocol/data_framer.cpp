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
    case data_fault::nul_byte: return "NUL in message data";
  }
  return "?";
}

void data_framer::emit(std::string& forward, std::string_view bytes) {
  message_bytes_ += bytes.size();
  if (fault_ == data_fault::none) forward.append(bytes);
}

// A bare CR or LF: `as_received` is what the sender sent in its place (the byte itself, or
// a held '.' plus it), already counted by the state machine's caller.
void data_framer::bare(std::string& forward, std::string_view as_received, data_fault kind) {
  switch (mode_) {
    case bare_eol_mode::raw: emit(forward, as_received); break;
    case bare_eol_mode::normalize: {
      std::string fixed(as_received);
      for (char& c : fixed)
        if (c == '\r' || c == '\n' || c == '\0') c = ' ';
      ++normalized_;
      emit(forward, fixed);
      break;
    }
    case bare_eol_mode::strict:
      message_bytes_ += as_received.size();
      if (fault_ == data_fault::none) fault_ = kind;
      break;
  }
}

namespace {
// Where the next CR, LF and NUL stand, each found with one memchr and kept until passed, so
// a chunk is scanned once per kind however many lines (or bare CRs) it holds.
class next_special {
 public:
  explicit next_special(std::string_view in) : in_(in) {}
  std::size_t at(int kind, std::size_t from) {
    static constexpr char bytes[3] = {'\r', '\n', '\0'};
    if (!known_[kind] || pos_[kind] < from) {
      pos_[kind] = in_.find(bytes[kind], from);
      known_[kind] = true;
    }
    return pos_[kind];
  }

 private:
  std::string_view in_;
  std::size_t pos_[3] = {0, 0, 0};
  bool known_[3] = {false, false, false};
};
}  // namespace

std::size_t data_framer::feed(std::string_view in, std::string& forward) {
  std::size_t i = 0;
  next_special next(in);
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
        std::size_t end = std::min({next.at(0, i), next.at(1, i), next.at(2, i)});
        if (end == std::string_view::npos) end = in.size();
        // Stop the run one byte past the cap so the line_too_long check at the top of the loop
        // falls on the same byte however the input is segmented (a whole-chunk run used to
        // forward the entire over-long line, a byte-at-a-time feed only cap + 1 bytes of it).
        if (line_length_ <= limits::data_line_cap)
          end = std::min(end, i + (limits::data_line_cap + 1 - line_length_));
        emit(forward, in.substr(i, end - i));
        line_length_ += end - i;
        i = end;
        if (i == in.size()) continue;
        char special = in[i];
        if (special == '\r') { state_ = state::cr; ++i; ++line_length_; continue; }
        if (special == '\n') bare(forward, "\n", data_fault::bare_cr_or_lf);        // LF without CR
        else if (special == '\0') bare(forward, std::string_view("\0", 1), data_fault::nul_byte);
        else continue;                                                              // the line cap
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
          bare(forward, "\r", data_fault::bare_cr_or_lf);                     // CR without LF; c is examined as mid-line
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
        bare(forward, "\r", data_fault::bare_cr_or_lf);                       // "\r\n.\r" then not LF
        state_ = state::mid;
        continue;
      case state::ended: break;
    }
  }
  return i;
}

}  // namespace mailtap::protocol
