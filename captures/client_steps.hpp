// A client's recorded bytes cut into the steps the relay read them as: each command line to its
// CRLF (a bare LF inside a line is part of it, RFC 5321 2.3.8); after a DATA answered 354 the
// message up to and including its end as the relay found it (protocol/data_framer.hpp in the
// capture's framing, message_framing); a BDAT line with its counted chunk (RFC 3030); after a 334
// to AUTH an AUTH response (masked in a capture). The one cutter of `mailtap show` (the lines the
// relay recorded and never read, captures/show.cpp), of replay's script (replay/script.cpp) and
// of `mailtap export eml` (captures/eml_export.cpp): cutters of the same bytes could drift. Pure: no I/O, no clock.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "captures/reader.hpp"
#include "protocol/data_framer.hpp"
#include "protocol/phase.hpp"

namespace mailtap::captures {

enum class client_step_kind {
  line,            // a command line (its command may be one the relay refuses)
  auth_response,   // a line of an AUTH exchange after a 334
  message,         // a DATA message, its ending included
  bdat,            // a BDAT line with its chunk
};

// Offsets are into the bytes cut.
struct client_step {
  client_step_kind kind = client_step_kind::line;
  std::size_t begin = 0;      // its first byte
  std::size_t line_end = 0;   // one past its line, CRLF included (a BDAT's chunk starts here); a message's: `begin`
  std::size_t end = 0;        // one past its last byte
  // The bytes end inside it: a line without its CRLF, a message without its end, a chunk short
  // of its size. Only the last step can be.
  bool unfinished = false;
  // The line's command phase (parsed even where the relay refuses the line), auth for an AUTH
  // response, data_end for a message.
  protocol::phase ph = protocol::phase::other;
  std::uint64_t bdat_size = 0;   // a bdat step's chunk size and LAST, as its line says
  bool bdat_last = false;

  // Its line without the CRLF (a message has none); `bytes` are the bytes cut.
  std::string_view line(std::string_view bytes) const;
};

// How the relay framed the capture's messages: the header's bare_eol (strict when it does not
// say); a normalize capture without normalize_to is from before it was written, when normalize
// read a bare CR or LF as a line ending (captures/FORMAT.md): normalize_line_ends, where "\n.\n"
// ended a message too.
protocol::bare_eol_mode message_framing(const capture_header& h);

// Cuts `bytes` (every client/in byte of a capture, in record order). `reply_codes` are the codes
// of the replies the client received, in order, the greeting first: step n is answered by reply
// n + 1 (replies go out in command order, RFC 2920), none past the last. A DATA line answered 354
// is followed by its message, an AUTH line or response answered 334 by a response; a line the
// relay refuses (a protocol::parse_command fault, the relay answers it itself) opens neither, nor
// does such a BDAT line have a chunk. The last step is unfinished where the bytes end inside it.
std::vector<client_step> cut_client_steps(std::string_view bytes, std::span<const int> reply_codes,
                                          protocol::bare_eol_mode framing);

}  // namespace mailtap::captures
