// DATA framing (RFC 5321 4.1.1.4, 4.5.2): only <CRLF>.<CRLF> ends the message; dot-stuffing
// passes through untouched. Bare CR or LF is handled by mode (SMTP_NOTES "SMTP smuggling"):
// strict (default) fails the transaction, normalize turns each into a space, raw forwards it.
// NUL (never legal in DATA, RFC 5321 4.5.2; "\r\n\x00.\r\n" is a smuggling probe) is treated alike.
// The terminator itself is never emitted: the caller decides whether to send ".\r\n".
// Never holds more than 2 bytes across calls. Single-threaded.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::protocol {

enum class bare_eol_mode { strict, normalize, raw };
std::string_view to_string(bare_eol_mode m);
std::optional<bare_eol_mode> parse_bare_eol_mode(std::string_view name);

enum class data_fault { none, bare_cr_or_lf, line_too_long, nul_byte };
std::string_view to_string(data_fault f);

class data_framer {
 public:
  explicit data_framer(bare_eol_mode mode = bare_eol_mode::strict) : mode_(mode) {}

  // Consumes input up to and including the terminator; appends bytes to forward upstream to
  // `forward` (nothing once a fault is set). Returns how many input bytes were consumed:
  // anything after the terminator belongs to the next command.
  std::size_t feed(std::string_view in, std::string& forward);

  bool ended() const { return state_ == state::ended; }
  data_fault fault() const { return fault_; }
  // Message bytes consumed before the terminator line (dot-stuffed, as on the wire).
  std::uint64_t message_bytes() const { return message_bytes_; }
  // Bare CR/LF replaced by a space in normalize mode.
  std::uint64_t normalized() const { return normalized_; }

 private:
  enum class state { line_start, mid, cr, dot, dot_cr, ended };
  void emit(std::string& forward, std::string_view bytes);
  void bare(std::string& forward, std::string_view as_received, data_fault kind);

  bare_eol_mode mode_;
  state state_ = state::line_start;
  data_fault fault_ = data_fault::none;
  std::size_t line_length_ = 0;
  std::uint64_t message_bytes_ = 0;
  std::uint64_t normalized_ = 0;
};

}  // namespace mailtap::protocol
