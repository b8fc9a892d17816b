// Raw bytes as a JSON string, one character per byte: the `latin1` field of a capture's
// `bytes` record (FORMAT.md, since version 5). Byte b is the character U+00bb, so a byte
// below 0x80 is itself (JSON escapes `"`, `\` and the control characters) and a byte from
// 0x80 is two bytes of UTF-8. SMTP is mostly printable ASCII, so this costs about 2 % over
// the bytes (a line's CRLF is `\r\n`) where base64 costs 33 %, and a capture stays readable
// and greppable; binary bytes, or text mostly of bytes from 0x80, would cost more, and the
// writer then keeps base64.
// Any JSON reader gets the bytes back by encoding the string as Latin-1 (Python:
// `s.encode("latin-1")`). Pure, thread-safe.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::captures {

// Appends `bytes` as the contents of a JSON string (without its quotes) to `out`, and returns
// true, if that takes at most `budget` characters; otherwise leaves `out` as it was and
// returns false.
bool append_latin1_json(std::string& out, std::string_view bytes, std::size_t budget);

// Writes the JSON escape of `c` (a byte below 0x20, `"` or `\`: `\b \f \n \r \t \" \\` or
// `\u00XX`) at `out`, which has room for 6; returns its length. The writer's text fields
// (commands, notes, reply lines) escape with it too.
std::size_t write_json_escape(char* out, unsigned char c);

// The bytes of a JSON string's decoded (UTF-8) text; std::nullopt when it has a character
// past U+00FF, which no byte is.
std::optional<std::string> latin1_bytes(std::string_view utf8);

}  // namespace mailtap::captures
