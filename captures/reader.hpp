// Capture reading: loads one capture file (FORMAT.md, JSON Lines) into a typed, in-memory
// model for show, diagnose, replay and export. Older format versions are upgraded record by
// record on the way in; newer ones are refused. Never throws: failures are one line naming
// the file and line. The model is a plain value; read_capture is reentrant.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "captures/schema.hpp"
#include "protocol/action.hpp"
#include "protocol/observer.hpp"
#include "protocol/phase.hpp"
#include "protocol/reply.hpp"

namespace mailtap::captures {

// The newest capture format this reader understands is format_version (schema.hpp); older
// ones are upgraded on the way in (FORMAT.md, "Upgrades").

struct capture_header {
  int version = 0;                    // as found in the file, before any upgrade
  std::string session;
  std::uint64_t seed = 0;
  std::uint64_t master_seed = 0;      // the run's --seed; 0: not recorded (before it was added)
  std::uint64_t session_number = 0;   // the session's number in its run; 0: not recorded
  std::string client;                 // "ip:port"
  std::string listen;                 // "ip:port"
  std::string upstream;               // "host:port" or "builtin"
  std::string started_at;             // RFC 3339, UTC
  std::uint64_t started_mono_us = 0;
  std::string relay;                  // "mailtap 0.1.0"
  std::string bare_eol;               // strict / normalize / raw
  // Under normalize, what a bare CR or LF became: "space"; "" in captures from before it was
  // recorded, whose normalize read one as a line ending (added within version 5).
  std::string normalize_to;
};

struct bytes_event {
  std::uint64_t t_us = 0;
  protocol::leg leg = protocol::leg::client;
  protocol::direction dir = protocol::direction::in;
  std::string data;                   // decoded raw bytes (AUTH material masked by the writer)
};

// The client's command (leg client, dir in), or one the relay itself sent upstream (leg
// upstream, dir out: securing the upstream leg, an RSET or QUIT of a fault; format version 3).
struct command_event {
  std::uint64_t t_us = 0;
  protocol::leg leg = protocol::leg::client;
  protocol::direction dir = protocol::direction::in;
  std::string text;
};

struct reply_event {
  std::uint64_t t_us = 0;
  protocol::leg leg = protocol::leg::upstream;        // upstream/in: from the upstream;
  protocol::direction dir = protocol::direction::in;  // client/out: made or edited by the relay
  protocol::reply reply;              // `raw` is rebuilt from the lines ("250-a\r\n250 b\r\n")
};

struct note_event {
  std::uint64_t t_us = 0;
  std::string text;
};

struct tls_event {
  std::uint64_t t_us = 0;
  protocol::leg leg = protocol::leg::client;
  protocol::tls_summary tls;
};

// An injected fault (format version 2; none in older captures).
struct fault_event {
  std::uint64_t t_us = 0;
  protocol::fault_event fault;        // rule, type, decision, ph, planned/actual delay, detail
};

using event = std::variant<bytes_event, command_event, reply_event, note_event, tls_event, fault_event>;
std::uint64_t event_time(const event& e);

struct stage {
  protocol::phase ph = protocol::phase::other;
  std::uint64_t start_us = 0;
  std::uint64_t duration_us = 0;
  std::uint64_t upstream_us = 0;
  std::uint64_t relay_us = 0;
  std::uint64_t think_us = 0;
  std::uint64_t client_us = 0;        // absent in captures written before it existed: 0
};

struct reply_summary {                // a transaction's final reply as recorded
  int code = 0;
  std::string enhanced;
  std::string text;                   // first line, without the enhanced code
};

// How a transaction with no MAIL (transaction::without_mail) names its sender where another
// has "<address>" or "<>": show, list and search, diagnose, the admin UI.
inline constexpr std::string_view no_mail_sender = "(no MAIL)";

struct transaction {
  std::string mail_from;
  std::vector<std::string> rcpt_to;
  std::vector<int> rcpt_codes;
  std::optional<std::string> message_id;
  std::uint64_t size = 0;             // as on the wire, dot-stuffed, terminator excluded
  std::optional<reply_summary> final_reply;
  protocol::outcome result = protocol::outcome::unknown;
  bool synthesized = false;           // final reply made by the relay
  // Begun by a BDAT with no MAIL before it: mail_from is "" for want of a MAIL, not the null
  // sender of MAIL FROM:<>. Printed as no_mail_sender.
  bool without_mail = false;
  std::uint64_t start_us = 0;
  std::uint64_t end_us = 0;
  // Not a record: the transaction an incomplete capture ends inside, rebuilt by the reader
  // from its transcript (open_transaction.hpp). Always the last.
  bool rebuilt = false;
};

struct end_record {
  std::uint64_t t_us = 0;
  std::string reason;
  std::string detail;
  std::string ended_at;
  bool complete = false;              // false when the writer dropped records
  std::uint64_t dropped_records = 0;
};

struct capture {
  std::filesystem::path path;
  capture_header header;
  std::vector<event> events;          // bytes, command, reply, note, tls, fault, in file order
  std::vector<stage> stages;
  std::vector<transaction> transactions;
  std::optional<end_record> end;
  // The file ended in a line without its newline that is not a whole record (a crash in
  // mid-write); that line is ignored.
  bool truncated_line = false;
  // An end record that says complete, and no cut line.
  bool complete = false;
};

// Loads a capture. On failure returns std::nullopt and sets `error` to one line such as
// "x.jsonl:3: not a JSON object". A cut last line is tolerated (the capture is incomplete).
// A capture without an end record gets the transaction it ends inside, if any, rebuilt.
std::optional<capture> read_capture(const std::filesystem::path& file, std::string& error);

// What a header's "session" may be (FORMAT.md): 1 to 128 letters, digits, '-', '_' and '.',
// not '.' first, so that it is a file name of its own and never a path.
bool is_session_id(std::string_view id);

// FORMAT.md "Session outcome": "none" without transactions, "delivered" when every one was
// delivered, otherwise the outcome of the first that was not. `settled_only`: leave out a
// rebuilt open transaction (a session still in progress has no outcome for it yet).
std::string session_outcome(const capture& c, bool settled_only = false);

}  // namespace mailtap::captures
