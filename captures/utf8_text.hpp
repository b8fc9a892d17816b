// Text fields of a capture are UTF-8, as JSON must be (RFC 8259 8.1), whatever a peer sent.
// A command, a reply line or an address is recorded as it came when it is well-formed UTF-8
// (RFC 3629), so an SMTPUTF8 address reads as itself; any other byte is written as the four
// characters \xNN, as `show` prints it. The exact bytes are always in the `bytes` records
// (FORMAT.md). Pure, thread-safe.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

#include "protocol/terminal_text.hpp"

namespace mailtap::captures {

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 (protocol/terminal_text.hpp).
using protocol::utf8_sequence_length;

// `s` with every byte that is not part of a well-formed UTF-8 sequence written as \xNN.
std::string utf8_or_escaped(std::string_view s);

}  // namespace mailtap::captures
