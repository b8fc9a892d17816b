// Named input bounds for every buffer mailtap keeps (ARCHITECTURE.md, "Invariants": bounded memory), each with its source.
// Pure constants; shared by protocol/, relay/ and captures/.
#pragma once
#include <cstddef>

namespace mailtap::protocol::limits {

// RFC 5321 4.5.3.1.4 says 512 octets; Postfix accepts 2048 (line_length_limit).
inline constexpr std::size_t command_line_accepted = 2048;
// Past this without a CRLF the client is not speaking SMTP: 500 5.5.2 and close.
inline constexpr std::size_t command_line_hard_cap = 4096;
// RFC 5321 4.5.3.1.5 says 512; we allow 4 KiB per reply line before aborting the upstream.
inline constexpr std::size_t reply_line_cap = 4096;
inline constexpr std::size_t reply_lines_cap = 256;
// The relay's own reply lines: RFC 5321 4.5.3.1.5's 512 octets with the code and CRLF.
inline constexpr std::size_t own_reply_text_max = 512 - 4 - 6 - 2;   // "421 4.4.1 ..." and CRLF
// RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including its CRLF. Longer message
// lines are forwarded unchanged whatever their length (Postfix and Exim accept them; the DATA
// framer keeps only its CR/LF/dot state, so no buffer grows with a line); they are counted.
inline constexpr std::size_t data_line_rfc_max = 998;   // octets before the CRLF
// RFC 5321 4.5.3.1.8: at least 100 must be accepted. Beyond this: 452 4.5.3, not forwarded.
inline constexpr std::size_t recipients_cap = 1000;
// Recipients recorded per transaction (bounded memory): the forwarded ones plus as many refused (by the
// cap or a fault); later RCPTs are still answered but no longer recorded, and a note says so.
inline constexpr std::size_t recipients_recorded_cap = 2 * recipients_cap;
// RFC 4954 section 4: 12288 octets of base64 for one AUTH response line.
inline constexpr std::size_t auth_response_cap = 12288 + 2;
// Pipelined commands awaiting a reply before the relay stops parsing client input
// (bounds the pairing queue under a NOOP flood; RFC 2920 puts no limit, Postfix uses its buffers).
inline constexpr std::size_t pipelined_commands_cap = 1000;
// The built-in sink's error limits, Postfix's defaults (smtpd_junk_command_limit,
// smtpd_hard_error_limit): past this many NOOP, VRFY or HELP commands each one counts as an
// error, as does a 4xx or 5xx reply other than 503, and at this many errors the sink answers
// 421 4.7.0 and closes. Both counts start over when a message is accepted. So a flood of
// junk or unknown commands, each recorded in the capture, ends (a flood of commands out of
// sequence does not: their 503s come from the relay's own fault rules as often).
inline constexpr std::size_t sink_junk_commands = 100;
inline constexpr std::size_t sink_hard_errors = 20;
// The relay's own refusals (commands it answers itself and never forwards: a bare CR or LF,
// NUL, an over-long line, a verb it keeps from the destination): at this many in one session,
// Postfix's smtpd_hard_error_limit, it answers 421 4.7.0 and closes. The destination never
// sees these lines, so its own error limit cannot end a client that sends nothing else, and
// each one is recorded: without a limit, a few bytes a line filled the disk (a hostile trial).
inline constexpr std::size_t relay_hard_errors = 20;
// Replies the upstream sends when no command waits (other than 421, RFC 5321 3.8): each is
// recorded and dropped; past this many in one session the upstream is out of step, and the
// relay closes it as a protocol error (without a limit, a flood of them filled the disk).
inline constexpr std::size_t unsolicited_upstream_replies_max = 10;
// Message data a client sends after its message failed (the upstream lost or refused it, or the
// relay refused its line endings), which the relay reads to the dot to answer it and records:
// past this many bytes without the dot it answers 421 and closes instead (a hostile trial: a
// client whose upstream was lost kept sending, and 144 MB went into its capture in 25 s).
// Postfix's default message_size_limit, the most a Postfix would have taken of it.
inline constexpr std::size_t failed_message_read_max = 10'240'000;
// Header bytes scanned for Message-ID (the rest of the body is only counted).
inline constexpr std::size_t header_scan_cap = 64 * 1024;

}  // namespace mailtap::protocol::limits
