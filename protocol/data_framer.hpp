// DATA framing (RFC 5321 4.1.1.4, 4.5.2): only <CRLF>.<CRLF> ends the message; dot-stuffing
// passes through untouched. Bare CR or LF is handled by mode (the SMTP smuggling defence):
//   strict (default)  fails the transaction, like Postfix with smtpd_forbid_bare_newline and
//                     sendmail's bare-LF refusal;
//   normalize         forwards each bare CR or LF as a space (SP) and counts it: the line goes
//                     on, so "\n.\n", "\r.\r", "\n.\r" and the like are text (a line-start
//                     ".\n" is a dot line's content, dot then space) and only CRLF.CRLF ends the
//                     message; the relay and the upstream read the same message, and the
//                     forwarded bytes hold no bare CR/LF;
//   raw               forwards the bytes as received (testing an upstream's own defences).
//   normalize_line_ends  the older normalize, kept only to replay captures recorded with it
//                     (captures/FORMAT.md, the header's `normalize_to`), never configured: each
//                     bare CR or LF read as a line ending and forwarded as CRLF, the end found in
//                     the normalized stream ("\n.\n" ended the message).
// NUL (never legal in DATA, RFC 5321 4.5.2; "\r\n\x00.\r\n" is a smuggling probe) fails strict,
// becomes a space under both normalize modes and passes raw.
// Lines of any length stream through unchanged (Postfix and Exim accept lines past RFC 5321's
// 1000 octets); only the CR/LF/dot state is kept, and lines past that limit are counted.
// The terminator itself is never emitted: the caller decides whether to send ".\r\n".
// Never holds more than 2 bytes across calls. Single-threaded. Well-formed lines are checked
// and forwarded 16 bytes at a time (data_framer.cpp, clean_blocks); only blocks holding
// something else take the byte-by-byte state machine.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::protocol {

enum class bare_eol_mode { strict, normalize, raw, normalize_line_ends };
std::string_view to_string(bare_eol_mode m);
// The configured names (strict, normalize, raw); never normalize_line_ends, which only a
// capture's header selects (replay/script.cpp).
std::optional<bare_eol_mode> parse_bare_eol_mode(std::string_view name);

enum class data_fault { none, bare_cr_or_lf, nul_byte };
std::string_view to_string(data_fault f);

class data_framer {
 public:
  explicit data_framer(bare_eol_mode mode = bare_eol_mode::strict) : mode_(mode) {}

  // Consumes input up to and including the terminator; appends bytes to forward upstream to
  // `forward` (nothing once a fault is set). Returns how many input bytes were consumed:
  // anything after the terminator belongs to the next command.
  std::size_t feed(std::string_view in, std::string& forward);

  bool ended() const { return state_ == state::ended; }
  // The input is known to end here with the message complete (a recorded message step, which
  // the relay ended on the byte after it: replay/script.cpp). Under normalize_line_ends a
  // held ".\r" at a line start then ended the message, as the next byte would have; ends it
  // so and returns ended(). Other modes and states are left as they are.
  bool end_of_complete_input();
  data_fault fault() const { return fault_; }
  // Message size before the terminator line: dot-stuffed as on the wire, after normalization
  // (what the upstream is sent; after a strict-mode fault, the rest counted as received).
  std::uint64_t message_bytes() const { return message_bytes_; }
  // Normalize mode: bare CR or LF forwarded as a space (as CRLF under normalize_line_ends),
  // and NULs forwarded as a space.
  std::uint64_t normalized() const { return normalized_; }
  std::uint64_t nuls_replaced() const { return nuls_replaced_; }
  // Ended lines longer than limits::data_line_rfc_max octets before their line ending, and the
  // longest ended line's length (octets before its line ending, as forwarded), a dot opening a
  // line not counted: the receiver removes it (RFC 5321 4.5.2), and 4.5.3.1.6's limit does
  // not count "the leading dot duplicated for transparency".
  std::uint64_t long_lines() const { return long_lines_; }
  std::uint64_t longest_line() const { return longest_line_; }

 private:
  enum class state { line_start, mid, cr, dot, dot_cr, ended };
  void emit(std::string& forward, std::string_view bytes);
  void content(std::string& forward, std::string_view bytes);
  void bare(std::string& forward, std::string_view as_received, data_fault kind);
  void line_end(std::string& forward);
  void end_message();
  // Forwards the whole 16-byte blocks of well-formed lines from `from` on; where it stopped.
  std::size_t clean_blocks(std::string_view in, std::size_t from, std::string& forward);

  bare_eol_mode mode_;
  state state_ = state::line_start;
  data_fault fault_ = data_fault::none;
  std::uint64_t line_length_ = 0;
  std::uint64_t message_bytes_ = 0;
  std::uint64_t normalized_ = 0;
  std::uint64_t nuls_replaced_ = 0;
  std::uint64_t long_lines_ = 0;
  std::uint64_t longest_line_ = 0;
};

}  // namespace mailtap::protocol
