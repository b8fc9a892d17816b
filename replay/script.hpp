// What a replay plays, built once from a capture (captures/reader.hpp's model): the client's
// side as steps (each command line, each message body, each BDAT chunk with its payload,
// byte for byte as the client leg received them) and, for each step, the reply the client
// heard (the client leg's outgoing bytes), with who made it (the destination, the relay, or
// an injected fault, from diagnose/conversation.hpp) and the recorded times. Both replay
// machines (client_fsm, server_fsm) read it. Pure: no I/O, no clock; a plain value.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "captures/reader.hpp"
#include "protocol/data_framer.hpp"
#include "protocol/phase.hpp"
#include "protocol/reply.hpp"

namespace mailtap::replay {

// Who made a recorded reply. The replay shows an injected reply as injected: it is never the
// destination's word.
enum class reply_source {
  server,     // the destination said it (the relay passed it on)
  edited,     // the destination's reply as the relay edited it (a masked banner, STARTTLS removed)
  relay,      // the relay said it on its own (a refusal, a timeout, an unreachable upstream)
  injected,   // a fault rule made it (`rule` names it)
};
std::string_view to_string(reply_source s);

struct recorded_reply {
  protocol::reply reply;              // `raw` is the bytes the client received
  std::uint64_t t_us = 0;             // when it went to the client
  reply_source source = reply_source::server;
  std::string rule;                   // the fault rule, when injected
  std::string fault_detail;           // what the fault record says it did
  // The destination's own reply where the client heard another: when edited, the reply
  // before the relay edited it (XCLIENT removed from its EHLO reply, a masked banner); when
  // the relay answered STARTTLS itself after securing the upstream leg, the destination's
  // reply to that STARTTLS (its 220, where the client heard the relay's 220 or, after a
  // failed upstream handshake, its 454). A replay client talks to the destination directly
  // and compares with this one.
  std::optional<protocol::reply> server_reply;
  // The relay's own 421 standing for the destination's close: the session ended upstream_closed
  // (the upstream's FIN, its loss, or a 421 of its own with commands still owed) and this was the
  // last reply the client heard, the relay's `421 4.4.2 ... upstream connection lost` (or `...
  // closing: upstream connection is closed`). The destination said nothing: it closed. A live
  // server closing there does as the recorded one did.
  bool stands_for_close = false;

  // What the destination itself said, when it said anything (not injected, not the relay's
  // own words alone).
  const protocol::reply* destination_reply() const {
    if (source == reply_source::injected) return nullptr;
    if (server_reply) return &*server_reply;
    return source == reply_source::server ? &reply : nullptr;
  }
};

enum class step_kind {
  command,         // one command line
  auth_response,   // a line of an AUTH exchange after a 334 (masked in the capture)
  message,         // a DATA message, its terminating CRLF.CRLF included
  bdat,            // a BDAT command line with its payload
};

struct step {
  step_kind kind = step_kind::command;
  std::string bytes;                  // exactly as the client sent them (AUTH material masked)
  std::string text;                   // printable: the line without CRLF, or message_text's
  protocol::phase ph = protocol::phase::other;
  std::uint64_t sent_us = 0;          // the read that brought its first byte
  std::uint64_t done_us = 0;          // the read that brought its last byte
  // Replies (the greeting counts) the client had received before it sent this step: 0 for
  // an early talker, fewer than all earlier steps' for a pipelined group (RFC 2920).
  std::size_t awaits = 0;
  std::optional<recorded_reply> reply;   // none: the session ended before it was answered
  bool auth = false;                  // an AUTH command or a response of its exchange
  bool starts_tls = false;            // STARTTLS answered 220: the handshake follows
  bool last_chunk = false;            // a BDAT chunk whose command says LAST: it ends the message
  bool unfinished = false;            // the session ended inside it (script::unfinished)
  // A message or BDAT chunk the destination never got whole (a DATA message's end, a chunk or
  // its last byte never went upstream), to which the recording holds no reply of the
  // destination: the relay refused it (a bare CR or LF or a NUL under bare_eol strict, a BDAT
  // the destination did not offer), a fault failed, cut off or answered it itself, the capture
  // could not be written, or the upstream was lost. `forwarded` is what of it the relay did
  // send the destination (from the capture's upstream leg); a replay client sends that, never
  // the rest, and closes the connection without ending it, as the relay closed the upstream.
  bool withheld = false;
  std::string forwarded;
  std::string withheld_why;           // what the capture says of it: the relay's note, or its reply's maker
  // The command the relay sent the destination in this step's place, with its CRLF: the RSET of
  // a message a fault rule answered itself (blackhole, a reply at data_end: the destination got
  // RSET where the client sent DATA, or its first BDAT chunk; protocol/fault_holds.cpp
  // plan_end_of_data), and the destination's reply to it. A replay client sends that command
  // instead and compares the live reply with `in_place_reply`. Empty for other steps.
  std::string sent_in_place;
  std::optional<protocol::reply> in_place_reply;
  // A message, or a BDAT chunk, of such a message: the destination had no message open (its
  // transaction was reset), so none of it went, and its session went on. A replay client sends
  // none of it and goes on with the next step. `withheld_why` says what the capture says of it.
  bool answered_by_fault = false;
  // A message as the relay sent it on to the destination (protocol/data_framer.hpp, in the
  // script's bare_eol mode: under normalize each bare CR or LF and each NUL a space, under an
  // older capture's normalize (normalize_line_ends) each bare CR or LF a CRLF; its end
  // ".\r\n" once found): what a replay client sends in its place, so that a live server reads
  // the message, and its end, as the recorded destination did. Empty for other steps, for an
  // unfinished message (sent as recorded) and for a withheld one (`forwarded` says what went).
  std::string relayed;
  // What the recording shows the relay did with a step after the last one answered (said where a
  // reply of the relay's or a fault's ended the session before it, client_fsm): it read the step
  // (the relay writes a `command` record for each line it takes, an AUTH response's too), and it
  // sent it on to the destination (its copy among the upstream leg's bytes). False elsewhere.
  bool read_by_relay = false;
  bool went_upstream = false;
  // Why the recording shows the relay never sent this step on to the destination, whatever its
  // bytes (a phrase for the client machine's note; empty when it does not say so): the session was
  // refused by a fault's 5xx greeting (the relay answers every command itself, 503, and QUIT 221:
  // RFC 5321 3.1), or the step came after a QUIT the relay took (it reads nothing after QUIT, RFC
  // 5321 4.1.1.10). A line the relay refuses for its form is replay/unforwarded_line.hpp's.
  std::string not_forwarded;

  // The recorded delay of its reply: from the step's last byte to the reply.
  std::uint64_t reply_delay_us() const { return reply && reply->t_us > done_us ? reply->t_us - done_us : 0; }
};

struct script {
  std::string session;
  std::string path;
  std::optional<recorded_reply> banner;
  std::vector<step> steps;
  std::vector<recorded_reply> unsolicited;   // replies after the last step's (a 421 at a timeout)
  bool implicit_tls = false;          // the client leg was TLS from connect (SMTPS)
  bool starttls = false;              // the client used STARTTLS
  bool auth = false;                  // the client authenticated (AUTH)
  // How the relay read bare CR and LF in a message (the header's bare_eol; strict when it does
  // not say; normalize_line_ends for a normalize capture without the header's normalize_to,
  // recorded when normalize read them as line endings), so where it found a message's end:
  // CRLF.CRLF, and under normalize_line_ends "\n.\n" too. The steps are cut so, and the
  // replay server frames a live message so.
  protocol::bare_eol_mode bare_eol = protocol::bare_eol_mode::strict;
  std::vector<captures::fault_event> faults;   // the capture's fault records, in file order
  std::string end_reason;             // the end record's reason ("" when incomplete)
  std::uint64_t end_us = 0;
  // The client's last bytes when they were no complete step: a command line without its
  // CRLF, or a message or BDAT chunk the session ended inside (`text` says "unfinished").
  // The replay client sends them as recorded, then closes, as the recorded client did.
  std::optional<step> unfinished;

  // The recorded client went first: it quit or closed. The session's other endings (a fault,
  // the upstream, the relay) closed on it; a capture without an end record says neither.
  bool ended_by_client() const { return end_reason == "client_quit" || end_reason == "client_closed"; }
};

// Builds the script of a capture. A capture whose client leg cannot be read as SMTP (a
// reply the reply parser refuses) gives std::nullopt and one line in `error` naming the file.
std::optional<script> build_script(const captures::capture& c, std::string& error);

// A message step as reports show it, "[message body: N bytes]", N counted as `show` and a
// transaction record count it (dot-stuffed, its ending ".\r\n" left out); an unfinished one,
// which has no ending, "[message body: N bytes, unfinished]".
std::string message_text(std::size_t step_bytes, bool unfinished = false);

}  // namespace mailtap::replay
