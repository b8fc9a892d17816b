// SMTP reply parsing (RFC 5321 4.2, multi-line replies) with enhanced status codes (RFC 3463).
// reply_parser is fed upstream bytes in any segmentation and yields whole replies, keeping
// the exact bytes received. Every line must end in CRLF and hold no other CR or LF: a reply
// with a bare LF or CR is an error, never passed on (a lenient client would split
// "250 ok\n550 x\r\n" into two replies). Bounded by limits::reply_line_cap and reply_lines_cap.
// Single-threaded.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace mailtap::protocol {

struct reply {
  int code = 0;
  std::string enhanced;             // e.g. "2.0.0" when the first line carries one
  std::vector<std::string> lines;   // text after "250-" / "250 ", one per line
  std::string raw;                  // exact bytes as received, CRLFs included

  int klass() const { return code / 100; }
  // First line text without the enhanced code: the human part, for reports.
  std::string text() const;
  // Every line's text, each without the enhanced code it repeats (RFC 3463 3: every line
  // of a multi-line reply carries it), joined by LF: "Ok\nqueued as 4F2" for
  // "250-2.0.0 Ok\r\n250 2.0.0 queued as 4F2\r\n". For a transaction's final reply.
  std::string full_text() const;
};

enum class reply_parse_status { ok, line_too_long, too_many_lines, malformed, bare_lf, bare_cr, nul };
std::string_view to_string(reply_parse_status s);

class reply_parser {
 public:
  // Appends each completed reply to `out`. After an error the parser refuses further input.
  reply_parse_status feed(std::string_view bytes, std::vector<reply>& out);
  // Bytes of an incomplete reply held back (zero between replies).
  std::size_t pending_bytes() const { return line_.size() + current_.raw.size(); }

 private:
  reply_parse_status take_line(std::vector<reply>& out);

  std::string line_;        // current partial line
  reply current_;           // lines of a multi-line reply so far
  reply_parse_status failed_ = reply_parse_status::ok;
};

// Extracts a leading RFC 3463 enhanced code whose class matches the reply's first digit.
std::string parse_enhanced_code(int code, std::string_view text);

// One complete reply, single- or multi-line: format_reply(250, "2.0.0", "Ok").
std::string format_reply(int code, std::string_view enhanced, std::string_view text);

// Builds a reply struct from a locally formatted reply (for the relay's own answers).
reply make_reply(int code, std::string_view enhanced, std::string_view text);

}  // namespace mailtap::protocol
