// Text made safe to print on a terminal, one line: what `mailtap show` prints for wire text,
// and what every error line that echoes a value (a config or scenario file's, a command-line
// flag's, a capture's) goes through. Pure text, no I/O; thread-safe.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace mailtap::protocol {

// Length of the well-formed UTF-8 sequence starting at s[i] (RFC 3629 table 3-7, so no
// overlong forms and no surrogates), or 0. Also captures/utf8_text.hpp's.
std::size_t utf8_sequence_length(std::string_view s, std::size_t i);

// `s` with these written as \xNN, byte by byte: bytes that are not well-formed UTF-8 (RFC
// 3629), the C0 and C1 control characters and DEL, which could drive the terminal, the
// bidirectional controls (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069: Unicode
// UAX #9), which reorder what follows them on the line (a right-to-left override in an address
// hid its real text), and the line and paragraph separators (U+2028, U+2029), which some
// terminals and viewers break the line at. Backslashes are left alone: texts already escaped
// (the capture writer's, escape_bytes's \xNN) pass unchanged, so applying it twice is applying
// it once.
std::string terminal_safe(std::string_view s);

}  // namespace mailtap::protocol
