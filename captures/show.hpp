// The `mailtap show` report for one loaded capture: a human transcript with a stage
// waterfall, the transactions and the injected faults, or the same facts as one JSON
// document. Pure functions of the capture; thread-safe. The layout is pinned by the golden
// files tests/golden/show_basic.* (a version 1 capture), show_faults.* (version 2, with
// faults) and show_records.* (version 3: TLS on both legs, the relay's own commands).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "captures/reader.hpp"
#include "protocol/terminal_text.hpp"

namespace mailtap::captures {

// Header block, transcript in time order (one row per command, reply line, note, TLS
// handshake and fault; body bytes summed up, not dumped; U> for a command the relay itself
// sent upstream), stage waterfall (stages by start time, a tls row named by its leg, the
// sender's think time drawn before each bar), transactions,
// and a fault summary when there were faults. Ends with a newline. Wire text is made
// terminal-safe: control characters and bytes that are not UTF-8 appear as \xNN.
std::string render_text(const capture& c);

// One JSON object (not pretty-printed, no trailing newline): id, client, listen, upstream,
// started_at, seed, version, outcome, complete, truncated_line, end_reason, end_detail,
// dropped_records, duration_us, stages[] (by start time; `leg` for a tls handshake, else
// null), transactions[], events[] (time order, as in the
// transcript; a fault is kind "fault" with its record's fields). Always valid UTF-8:
// wire bytes that are not appear as the four characters \xNN.
std::string render_json(const capture& c);

// The session's length in µs: the latest time any record mentions (end, events, stages,
// transactions). The waterfall is scaled to it.
std::uint64_t session_duration_us(const capture& c);

}  // namespace mailtap::captures

namespace mailtap::captures {

// Wire text made safe to print as `show` prints it: for a terminal, control characters and
// bytes that are not UTF-8 become \xNN (protocol/terminal_text.hpp, where it lives so that
// config_reader/ and the command line use it too); for JSON, only what is not UTF-8. (Used by
// diagnose.)
using protocol::terminal_safe;
std::string utf8_safe(std::string_view s);

}  // namespace mailtap::captures
