// The capture format, defined once (FORMAT.md): its name and version, every record type and
// every field name, and which fields each record type has. The writer (writer.cpp), the
// reader (reader.cpp) and `mailtap show --json` (show.cpp, where it repeats a record's field)
// all spell names through here, and a unit test (capture_schema_test.cpp) checks that what
// the writer writes and the reader requires is exactly records() below.
// Bump format_version together with an upgrade step in reader.cpp whenever a record changes.
// Version history (FORMAT.md "Version history"): 1 the first format; 2 adds `fault` records;
// 3 adds the `blackholed` outcome and the relay's own upstream commands (`command` leg/dir);
// 4 adds `bytes_ref`, the relay's copy of the client's bytes recorded by reference;
// 5 adds `latin1`, a bytes record's bytes as text rather than base64.
#pragma once
#include <span>
#include <string_view>

namespace mailtap::captures {

inline constexpr std::string_view format_name = "mailtap-capture";
inline constexpr int format_version = 5;

namespace schema {

// The value of every record's `type` field.
namespace record {
inline constexpr std::string_view header = "header";
inline constexpr std::string_view bytes = "bytes";
inline constexpr std::string_view bytes_ref = "bytes_ref";   // since version 4
inline constexpr std::string_view command = "command";
inline constexpr std::string_view reply = "reply";
inline constexpr std::string_view tls = "tls";
inline constexpr std::string_view note = "note";
inline constexpr std::string_view fault = "fault";
inline constexpr std::string_view stage = "stage";
inline constexpr std::string_view transaction = "transaction";
inline constexpr std::string_view end = "end";
}  // namespace record

// Field names. One name means one thing wherever it appears (`t_us`, `leg`, `dir`, ...).
namespace field {
inline constexpr std::string_view type = "type";
// header
inline constexpr std::string_view format = "format";
inline constexpr std::string_view version = "version";   // also the tls record's protocol version
inline constexpr std::string_view session = "session";
inline constexpr std::string_view seed = "seed";
inline constexpr std::string_view master_seed = "master_seed";
inline constexpr std::string_view session_number = "session_number";
inline constexpr std::string_view client = "client";
inline constexpr std::string_view listen = "listen";
inline constexpr std::string_view upstream = "upstream";
inline constexpr std::string_view started_at = "started_at";
inline constexpr std::string_view started_mono_us = "started_mono_us";
inline constexpr std::string_view relay = "relay";
inline constexpr std::string_view bare_eol = "bare_eol";
inline constexpr std::string_view normalize_to = "normalize_to";   // added within version 5
// events
inline constexpr std::string_view t_us = "t_us";
inline constexpr std::string_view leg = "leg";
inline constexpr std::string_view dir = "dir";
// bytes: its bytes, in exactly one of these (since version 5; before, always b64)
inline constexpr std::string_view latin1 = "latin1";
inline constexpr std::string_view b64 = "b64";
// bytes_ref: where its bytes lie in the client's incoming bytes, and how many
inline constexpr std::string_view client_in_at = "client_in_at";
inline constexpr std::string_view length = "length";
inline constexpr std::string_view text = "text";
inline constexpr std::string_view code = "code";
inline constexpr std::string_view enhanced = "enhanced";
inline constexpr std::string_view lines = "lines";
// tls
inline constexpr std::string_view cipher = "cipher";
inline constexpr std::string_view sni = "sni";
inline constexpr std::string_view peer_subject = "peer_subject";
inline constexpr std::string_view peer_sha256 = "peer_sha256";
inline constexpr std::string_view verified = "verified";
inline constexpr std::string_view insecure = "insecure";
inline constexpr std::string_view handshake_us = "handshake_us";
inline constexpr std::string_view verification = "verification";   // upstream leg only
// fault
inline constexpr std::string_view rule = "rule";
inline constexpr std::string_view fault_type = "fault_type";   // `type` names the record
inline constexpr std::string_view decision = "decision";
inline constexpr std::string_view phase = "phase";
inline constexpr std::string_view planned_delay_us = "planned_delay_us";
inline constexpr std::string_view actual_delay_us = "actual_delay_us";
inline constexpr std::string_view detail = "detail";
// stage
inline constexpr std::string_view name = "name";
inline constexpr std::string_view start_us = "start_us";
inline constexpr std::string_view duration_us = "duration_us";
inline constexpr std::string_view upstream_us = "upstream_us";
inline constexpr std::string_view relay_us = "relay_us";
inline constexpr std::string_view client_us = "client_us";
inline constexpr std::string_view think_us = "think_us";
// transaction (final_reply is an object of code, enhanced and text)
inline constexpr std::string_view mail_from = "mail_from";
inline constexpr std::string_view rcpt_to = "rcpt_to";
inline constexpr std::string_view rcpt_codes = "rcpt_codes";
inline constexpr std::string_view message_id = "message_id";
inline constexpr std::string_view size = "size";
inline constexpr std::string_view final_reply = "final_reply";
inline constexpr std::string_view outcome = "outcome";
inline constexpr std::string_view synthesized = "synthesized";
inline constexpr std::string_view without_mail = "without_mail";   // added within version 5
inline constexpr std::string_view end_us = "end_us";
// end
inline constexpr std::string_view reason = "reason";
inline constexpr std::string_view ended_at = "ended_at";
inline constexpr std::string_view complete = "complete";
inline constexpr std::string_view dropped_records = "dropped_records";
}  // namespace field

// One record type and the fields the current version writes (besides `type`), in the order
// the writer writes them. Fields a reader takes as absent-means-default are in `optional`;
// a record has exactly one of `one_of` (after `fields`), which the writer chooses.
struct record_fields {
  std::string_view type;
  std::span<const std::string_view> fields;
  std::span<const std::string_view> optional = {};
  std::span<const std::string_view> one_of = {};
};

namespace lists {
using namespace field;
inline constexpr std::string_view header_fields[] = {format,     version,         session, seed,    client,  listen,
                                                     upstream,   started_at,      started_mono_us, relay, bare_eol};
// Added within version 5: what reproduces the session's faults (`mailtap run --seed M
// --first-session N`); absent in older captures: 0, unknown. And what normalize made of a bare CR
// or LF ("space", written only when bare_eol is normalize); absent in older captures, whose
// normalize read it as a line ending (protocol/data_framer.hpp, normalize_line_ends).
inline constexpr std::string_view header_optional[] = {master_seed, session_number, normalize_to};
inline constexpr std::string_view bytes_fields[] = {t_us, leg, dir};
inline constexpr std::string_view bytes_one_of[] = {latin1, b64};
inline constexpr std::string_view bytes_ref_fields[] = {t_us, leg, dir, client_in_at, length};
inline constexpr std::string_view command_fields[] = {t_us, leg, dir, text};
inline constexpr std::string_view reply_fields[] = {t_us, leg, dir, code, enhanced, lines};
inline constexpr std::string_view tls_fields[] = {t_us,     leg,      version,  cipher,       sni,         peer_subject,
                                                  peer_sha256, verified, insecure, handshake_us, verification};
inline constexpr std::string_view tls_optional[] = {verification};   // added within version 2; upstream leg only
inline constexpr std::string_view note_fields[] = {t_us, text};
inline constexpr std::string_view fault_fields[] = {t_us,  rule,          decision,        phase,
                                                    fault_type, planned_delay_us, actual_delay_us, detail};
inline constexpr std::string_view stage_fields[] = {name, start_us, duration_us, upstream_us, relay_us, client_us, think_us};
inline constexpr std::string_view stage_optional[] = {client_us};   // absent in older captures: 0
inline constexpr std::string_view transaction_fields[] = {mail_from,   rcpt_to, rcpt_codes,  message_id,   size,
                                                          final_reply, outcome, synthesized, without_mail, start_us,
                                                          end_us};
// Added within version 5: the transaction a BDAT began with no MAIL before it (its mail_from
// "" is then no null sender); absent in older captures: false.
inline constexpr std::string_view transaction_optional[] = {without_mail};
inline constexpr std::string_view end_fields[] = {t_us, reason, detail, ended_at, complete, dropped_records};
inline constexpr std::string_view final_reply_fields[] = {code, enhanced, text};
inline constexpr record_fields all[] = {
    {record::header, header_fields, header_optional},
    {record::bytes, bytes_fields, {}, bytes_one_of},
    {record::bytes_ref, bytes_ref_fields},
    {record::command, command_fields},
    {record::reply, reply_fields},
    {record::tls, tls_fields, tls_optional},
    {record::note, note_fields},
    {record::fault, fault_fields},
    {record::stage, stage_fields, stage_optional},
    {record::transaction, transaction_fields, transaction_optional},
    {record::end, end_fields},
};
}  // namespace lists

// Every record type of the current version, header first.
inline constexpr std::span<const record_fields> records() { return lists::all; }
// The fields of a transaction's final_reply object.
inline constexpr std::span<const std::string_view> final_reply_fields() { return lists::final_reply_fields; }

}  // namespace schema
}  // namespace mailtap::captures
