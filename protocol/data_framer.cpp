// DATA framing state machine. States track where the next byte stands relative to a line:
// line_start (after a line ending), mid, cr (a CR held until we know whether LF follows),
// dot (a '.' at line start), dot_cr ('.' CR at line start, one LF away from the end).
// Under normalize a bare CR or LF is content, forwarded as a space: the line goes on, and only
// CRLF changes state as a line ending, so only CRLF.CRLF ends the data (RFC 5321 4.1.1.4).
// Under normalize_line_ends (older captures only) a bare CR or LF is a line ending like CRLF,
// so every state change below that CRLF makes, a bare CR or LF makes too (and ".\r" or ".\n"
// at line start ends the data).
#include "protocol/data_framer.hpp"

#include <algorithm>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

#include "protocol/limits.hpp"

namespace mailtap::protocol {

std::string_view to_string(bare_eol_mode m) {
  switch (m) {
    case bare_eol_mode::strict: return "strict";
    case bare_eol_mode::normalize: return "normalize";
    case bare_eol_mode::raw: return "raw";
    case bare_eol_mode::normalize_line_ends: return "normalize (older captures: bare CR/LF as line endings)";
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
    case data_fault::nul_byte: return "NUL in message data";
  }
  return "?";
}

void data_framer::emit(std::string& forward, std::string_view bytes) {
  message_bytes_ += bytes.size();
  if (fault_ == data_fault::none) forward.append(bytes);
}

void data_framer::content(std::string& forward, std::string_view bytes) {
  emit(forward, bytes);
  line_length_ += bytes.size();
}

// A line ends (CRLF, or a bare CR or LF under normalize_line_ends): CRLF goes upstream.
void data_framer::line_end(std::string& forward) {
  emit(forward, "\r\n");
  if (line_length_ > limits::data_line_rfc_max) ++long_lines_;
  longest_line_ = std::max(longest_line_, line_length_);
  line_length_ = 0;
  state_ = state::line_start;
}

void data_framer::end_message() {
  line_length_ = 0;
  state_ = state::ended;
}

// A bare CR or LF, or a NUL: `as_received` is what the sender sent (for a bare CR/LF after a
// line-start '.', the caller has already passed the '.' on as content). A bare CR or LF ends
// the line under normalize_line_ends; otherwise the line goes on (under normalize as a space).
void data_framer::bare(std::string& forward, std::string_view as_received, data_fault kind) {
  const bool nul = kind == data_fault::nul_byte;
  switch (mode_) {
    case bare_eol_mode::raw:
      content(forward, as_received);
      state_ = state::mid;
      break;
    case bare_eol_mode::normalize:
      content(forward, " ");
      ++(nul ? nuls_replaced_ : normalized_);
      state_ = state::mid;
      break;
    case bare_eol_mode::normalize_line_ends:
      if (nul) {
        content(forward, " ");
        ++nuls_replaced_;
        state_ = state::mid;
      } else {
        ++normalized_;
        line_end(forward);
      }
      break;
    case bare_eol_mode::strict:
      message_bytes_ += as_received.size();
      line_length_ += as_received.size();
      if (fault_ == data_fault::none) fault_ = kind;
      state_ = state::mid;
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

// Well-formed lines pass in 16-byte blocks (SSE2, part of x86-64), the common case of a
// message body: a block is clean when each of its CRs is followed by an LF and each LF
// follows a CR (across block edges too), and it holds no NUL and no '.' at a line's start.
// Clean blocks leave the state machine where the byte-by-byte path would, so they are
// forwarded with one append, only their line endings visited (for the line-length counts).
// The first unclean block, and what is left under 16 bytes, go the byte-by-byte way.
std::size_t data_framer::clean_blocks(std::string_view in, std::size_t from, std::string& forward) {
#if !defined(__x86_64__)
  (void)in, (void)forward;
  return from;   // elsewhere every byte takes the state machine
#else
  constexpr std::size_t block = 16;
  if (in.size() - from < block) return from;
  const __m128i cr_byte = _mm_set1_epi8('\r'), lf_byte = _mm_set1_epi8('\n');
  const __m128i nul_byte = _mm_setzero_si128(), dot_byte = _mm_set1_epi8('.');
  unsigned cr_before = 0;                                      // the byte before `at` was a CR
  unsigned lf_before = state_ == state::line_start ? 1 : 0;   // it ended a line
  std::size_t at = from;
  std::size_t line_from = from;           // where the current line's content began in `in`
  std::uint64_t carried = line_length_;   // its length before `from`
  for (; in.size() - at >= block; at += block) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in.data() + at));
    const auto mask = [&v](__m128i b) { return static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, b))); };
    const unsigned cr = mask(cr_byte), lf = mask(lf_byte);
    const bool clean = ((cr << 1 | cr_before) & 0xffff) == lf && mask(nul_byte) == 0 &&
                       (mask(dot_byte) & (lf << 1 | lf_before)) == 0;
    if (!clean) break;
    for (unsigned ends = lf; ends != 0; ends &= ends - 1) {
      const std::size_t lf_at = at + static_cast<std::size_t>(__builtin_ctz(ends));
      // The line's content: from line_from to its CR (a CR the last block ended with is
      // in `in` too, just before this LF).
      const std::uint64_t length = carried + (lf_at - 1 - line_from);
      if (length > limits::data_line_rfc_max) ++long_lines_;
      longest_line_ = std::max(longest_line_, length);
      carried = 0;
      line_from = lf_at + 1;
    }
    cr_before = cr >> 15;
    lf_before = lf >> 15;
  }
  if (at == from) return from;
  // A CR that ended the last block waits, as the byte-by-byte path holds it, for its LF.
  const std::size_t to = at - cr_before;
  emit(forward, in.substr(from, to - from));
  line_length_ = carried + (to - line_from);
  state_ = cr_before ? state::cr : lf_before ? state::line_start : state::mid;
  return at;
#endif
}

bool data_framer::end_of_complete_input() {
  if (mode_ == bare_eol_mode::normalize_line_ends && state_ == state::dot_cr) {
    ++normalized_;   // as feed's dot_cr does for the byte that would have come next
    end_message();
  }
  return ended();
}

std::size_t data_framer::feed(std::string_view in, std::string& forward) {
  static constexpr std::string_view nul_byte("\0", 1);
  std::size_t i = 0;
  next_special next(in);
  while (i < in.size() && state_ != state::ended) {
    if (state_ == state::mid || state_ == state::line_start) {
      i = clean_blocks(in, i, forward);
      if (i == in.size() || state_ == state::cr) continue;
    }
    const char c = in[i];
    switch (state_) {
      case state::line_start:
        if (c == '.') { state_ = state::dot; ++i; continue; }
        state_ = state::mid;
        continue;                                  // re-examine c as a mid-line byte
      case state::mid: {
        // The whole run up to the next CR, LF or NUL goes out at once, however long the line.
        std::size_t end = std::min({next.at(0, i), next.at(1, i), next.at(2, i)});
        if (end == std::string_view::npos) end = in.size();
        content(forward, in.substr(i, end - i));
        i = end;
        if (i == in.size()) continue;
        const char special = in[i++];
        if (special == '\r') state_ = state::cr;                           // LF may follow
        else if (special == '\n') bare(forward, "\n", data_fault::bare_cr_or_lf);   // LF without CR
        else bare(forward, nul_byte, data_fault::nul_byte);
        continue;
      }
      case state::cr:
        if (c == '\n') { ++i; line_end(forward); continue; }
        bare(forward, "\r", data_fault::bare_cr_or_lf);   // CR without LF; c is examined next
        continue;
      case state::dot:
        if (c == '\r') { state_ = state::dot_cr; ++i; continue; }
        if (c == '\n' && mode_ == bare_eol_mode::normalize_line_ends) {   // ".\n" read as ".\r\n"
          ++normalized_;
          ++i;
          end_message();
          continue;
        }
        emit(forward, ".");   // a stuffed or ordinary dot line; the dot is transparency, not the line's
        state_ = state::mid;
        continue;
      case state::dot_cr:
        if (c == '\n') { ++i; end_message(); continue; }
        if (mode_ == bare_eol_mode::normalize_line_ends) {   // ".\r" then not LF read as ".\r\n";
          ++normalized_;                                     // c is the next command's first byte
          end_message();
          continue;
        }
        emit(forward, ".");
        bare(forward, "\r", data_fault::bare_cr_or_lf);    // "\r\n.\r" then not LF
        continue;
      case state::ended: break;
    }
  }
  return i;
}

}  // namespace mailtap::protocol
