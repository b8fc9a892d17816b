// Capture reader: JSON Lines in, typed model out. Each line is parsed on its own (a cut
// line costs only itself), upgraded to the current format version, then typed. Every
// failure becomes "file:line: what", never an exception.
#include "captures/reader.hpp"

#include "captures/index_summary.hpp"
#include "captures/latin1_text.hpp"
#include "captures/open_transaction.hpp"
#include "captures/show.hpp"
#include "protocol/base64.hpp"
#include "protocol/limits.hpp"

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string_view>
#include <vector>

namespace mailtap::captures {

namespace {

namespace json = boost::json;
namespace field = schema::field;
namespace record = schema::record;

// Longest line accepted. The writer puts one read of relay input in a bytes record (a few
// hundred KiB at most, base64 adds a third); 64 MiB is far above that and keeps a corrupt
// or hostile file from growing one line without bound (bounded memory).
constexpr std::size_t line_cap = 64 * 1024 * 1024;
// Times and durations in microseconds: 10^15 is 31 years (FORMAT.md).
constexpr std::uint64_t max_micros = 1'000'000'000'000'000;

// ---------------------------------------------------------------- upgrades

// The upgrade chain (FORMAT.md "Upgrades", after mitmproxy's io/compat.py). Every raw record
// of a file written in an older version, header included, goes through each step from its
// version to the current one, oldest first, before it is typed; so the typing code below
// only ever sees current records.
//
// To add version N+1:
//   1. Describe the change in FORMAT.md; bump format_version (captures/schema.hpp), which
//      the writer stamps on every new capture.
//   2. Write `void upgrade_vN_to_vN1(json::object& record)` here: switch on record["type"]
//      and rename fields, fill new ones with the value a vN writer implied, and set
//      "version" to N+1 on the header.
//   3. Append it to upgrade_steps: entry i upgrades version i+1 to version i+2.
//   4. Keep a vN capture under tests/golden/ with a test that it still loads and shows.
// If a step ever has to split, merge or drop records, widen upgrade_step to take the whole
// list of records instead of one.
using upgrade_step = void (*)(json::object& rec);

// Version 2 adds the `fault` record; no version 1 record changes (a v1 writer had no faults).
void upgrade_v1_to_v2(json::object& rec) {
  const json::value* type = rec.if_contains(field::type);
  if (type && type->is_string() && type->get_string() == record::header) rec[field::version] = 2;
}

// Every recipient of a transaction record refused, when the record says so for each one.
std::optional<protocol::outcome> recipients_refused_outcome(const json::object& rec) {
  const json::value* to = rec.if_contains(field::rcpt_to);
  const json::value* codes = rec.if_contains(field::rcpt_codes);
  if (!to || !codes || !to->is_array() || !codes->is_array()) return std::nullopt;
  const json::array& c = codes->get_array();
  if (c.size() != to->get_array().size() || c.size() >= protocol::limits::recipients_recorded_cap) return std::nullopt;
  std::vector<int> list;
  for (const auto& v : c) {
    if (v.is_int64() && v.get_int64() >= 0 && v.get_int64() <= 999) list.push_back(static_cast<int>(v.get_int64()));
    else if (v.is_uint64() && v.get_uint64() <= 999) list.push_back(static_cast<int>(v.get_uint64()));
    else return std::nullopt;   // the typing step reports it
  }
  return protocol::outcome_of_refused_recipients(list);
}

// Version 3 records what version 2 could not tell apart:
//   - outcome `blackholed`: a v2 writer recorded a message the relay answered 2xx itself (a
//     blackhole, nothing delivered) as `delivered` with `synthesized` true, and only such a
//     message, so that pair becomes `blackholed`;
//   - a transaction whose every recipient was refused reads as the same codes at MAIL do
//     (protocol::outcome_of_refused_recipients): v2 said `aborted` when the client then quit
//     or reset, `rejected` when the upstream then refused DATA with 554. Recomputed from
//     `rcpt_codes` when every recipient has its code (the list was not cut at its cap);
//   - `command` records gain `leg` and `dir`, because the relay's own upstream commands are
//     recorded too (upstream/out); every v2 command was the client's (client/in).
void upgrade_v2_to_v3(json::object& rec) {
  const json::value* type = rec.if_contains(field::type);
  if (!type || !type->is_string()) return;
  const json::string& name = type->get_string();
  if (name == record::header) {
    rec[field::version] = 3;
  } else if (name == record::command) {
    rec[field::leg] = protocol::to_string(protocol::leg::client);
    rec[field::dir] = protocol::to_string(protocol::direction::in);
  } else if (name == record::transaction) {
    const json::value* outcome = rec.if_contains(field::outcome);
    const json::value* synthesized = rec.if_contains(field::synthesized);
    if (!outcome || !outcome->is_string()) return;   // the typing step reports it
    if (outcome->get_string() == protocol::to_string(protocol::outcome::delivered)) {
      if (synthesized && synthesized->is_bool() && synthesized->get_bool())
        rec[field::outcome] = protocol::to_string(protocol::outcome::blackholed);
      return;
    }
    if (auto refused = recipients_refused_outcome(rec)) rec[field::outcome] = protocol::to_string(*refused);
  }
}

// Version 4 adds the `bytes_ref` record (the relay's copy of the client's bytes, recorded by
// reference); no version 3 record changes.
void upgrade_v3_to_v4(json::object& rec) {
  const json::value* type = rec.if_contains(field::type);
  if (type && type->is_string() && type->get_string() == record::header) rec[field::version] = 4;
}

// Version 5 lets a bytes record carry its bytes as text (`latin1`) instead of base64 (`b64`);
// a version 4 bytes record, always base64, reads as it is.
void upgrade_v4_to_v5(json::object& rec) {
  const json::value* type = rec.if_contains(field::type);
  if (type && type->is_string() && type->get_string() == record::header) rec[field::version] = 5;
}

constexpr std::array<upgrade_step, format_version - 1> upgrade_steps{upgrade_v1_to_v2, upgrade_v2_to_v3,
                                                                     upgrade_v3_to_v4, upgrade_v4_to_v5};

void upgrade(json::object& rec, int from_version) {
  for (int v = from_version; v < format_version; ++v)
    upgrade_steps[static_cast<std::size_t>(v - 1)](rec);
}

}  // namespace

bool is_session_id(std::string_view id) {
  if (id.empty() || id.size() > 128 || id.front() == '.') return false;
  return std::all_of(id.begin(), id.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
           ch == '.';
  });
}

namespace {

// ---------------------------------------------------------------- typed field access

// A string from the file, quoted for an error message: escaped so the error stays one line, and
// safe on a terminal (show.hpp terminal_safe: C1 and bidirectional controls, bytes not UTF-8).
std::string quote_for_error(std::string_view s) {
  std::string out(1, '"');
  out += terminal_safe(protocol::escape_bytes(s, 64));
  out += '"';
  return out;
}

// Reads the fields of one record; the first problem is kept as the record's error.
class fields {
 public:
  fields(const json::object& o, std::string_view type) : o_(o), type_(type) {}

  const std::string& error() const { return error_; }

  void fail(const std::string& what) {
    if (error_.empty()) error_ = std::string(type_) + " record: " + what;
  }

  std::string str(std::string_view key) {
    const json::value* v = find(key);
    if (!v) return {};
    if (!v->is_string()) return wrong(key, "a string"), std::string();
    return std::string(v->get_string());
  }

  std::optional<std::string> str_or_null(std::string_view key) {
    const json::value* v = find(key);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_string()) return wrong(key, "a string or null"), std::nullopt;
    return std::string(v->get_string());
  }

  bool has(std::string_view key) const { return o_.find(key) != o_.end(); }

  // A string field later writers of the same version added: absent means "".
  std::string optional_str(std::string_view key) {
    if (!has(key)) return {};
    return str(key);
  }

  // A field later writers of the same version added: absent means 0.
  std::uint64_t optional_u64(std::string_view key) {
    if (!has(key)) return 0;
    return u64(key);
  }

  std::uint64_t u64(std::string_view key) {
    const json::value* v = find(key);
    if (!v) return 0;
    return to_u64(*v, key);
  }

  // A time or duration in microseconds: at most max_micros, so that a reader adding it to a
  // start (show, export pcap, replay) never overflows or wraps.
  std::uint64_t micros(std::string_view key) {
    const std::uint64_t us = u64(key);
    if (us > max_micros) return wrong(key, "a time in microseconds up to 10^15 (31 years)"), 0;
    return us;
  }

  // A wall-clock time (started_at, ended_at): RFC 3339, a date and a time with its zone
  // (FORMAT.md). Read as it is; anything else is refused (a tester's "9999999-99-99" was
  // listed as 1970-01-01 and served as it was).
  std::string time(std::string_view key) {
    std::string s = str(key);
    if (error_.empty() && (s.size() <= 10 || !parse_rfc3339_us(s)))
      fail("field \"" + std::string(key) + "\" is not an RFC 3339 time (2026-12-02T10:00:00.000000Z): " +
           quote_for_error(s));
    return s;
  }

  int integer(std::string_view key, int lo, int hi) {
    const json::value* v = find(key);
    if (!v) return 0;
    return to_int(*v, key, lo, hi);
  }

  bool boolean(std::string_view key) {
    const json::value* v = find(key);
    if (!v) return false;
    if (!v->is_bool()) return wrong(key, "true or false"), false;
    return v->get_bool();
  }

  std::vector<std::string> strings(std::string_view key) {
    std::vector<std::string> out;
    const json::array* a = array(key);
    if (!a) return out;
    for (const auto& v : *a) {
      if (!v.is_string()) return wrong(key, "an array of strings"), out;
      out.emplace_back(v.get_string());
    }
    return out;
  }

  std::vector<int> reply_codes(std::string_view key) {
    std::vector<int> out;
    const json::array* a = array(key);
    if (!a) return out;
    for (const auto& v : *a) out.push_back(to_int(v, key, 0, 999));
    return out;
  }

  protocol::leg leg(std::string_view key) {
    std::string s = str(key);
    if (s == "upstream") return protocol::leg::upstream;
    if (s != "client") wrong(key, "\"client\" or \"upstream\"");
    return protocol::leg::client;
  }

  protocol::direction dir(std::string_view key) {
    std::string s = str(key);
    if (s == "out") return protocol::direction::out;
    if (s != "in") wrong(key, "\"in\" or \"out\"");
    return protocol::direction::in;
  }

  // `what` names the field's meaning in the error: "stage name", "phase".
  protocol::phase phase(std::string_view key, std::string_view what) {
    std::string s = str(key);
    if (auto p = protocol::parse_phase(s)) return *p;
    if (error_.empty()) fail("unknown " + std::string(what) + " " + quote_for_error(s));
    return protocol::phase::other;
  }

  // A fault's decision: a verdict name, "rewrite" or "plan" (protocol/fault.hpp).
  std::string decision(std::string_view key) {
    std::string s = str(key);
    if (s == "rewrite" || s == "plan") return s;
    for (auto v : {protocol::verdict::proceed, protocol::verdict::delay, protocol::verdict::reply,
                   protocol::verdict::reply_and_close, protocol::verdict::disconnect, protocol::verdict::reset,
                   protocol::verdict::stall, protocol::verdict::blackhole, protocol::verdict::unreachable})
      if (protocol::to_string(v) == s) return s;
    if (error_.empty()) fail("unknown decision " + quote_for_error(s));
    return s;
  }

  protocol::outcome outcome(std::string_view key) {
    std::string s = str(key);
    if (auto o = protocol::parse_outcome(s)) return *o;
    if (error_.empty()) fail("unknown outcome " + quote_for_error(s));
    return protocol::outcome::unknown;
  }

  const json::value* find(std::string_view key) {
    auto it = o_.find(key);
    if (it == o_.end()) {
      fail("missing field \"" + std::string(key) + "\"");
      return nullptr;
    }
    return &it->value();
  }

 private:
  void wrong(std::string_view key, std::string_view expected) {
    fail("field \"" + std::string(key) + "\" is not " + std::string(expected));
  }

  const json::array* array(std::string_view key) {
    const json::value* v = find(key);
    if (!v) return nullptr;
    if (!v->is_array()) return wrong(key, "an array"), nullptr;
    return &v->get_array();
  }

  std::uint64_t to_u64(const json::value& v, std::string_view key) {
    if (v.is_uint64()) return v.get_uint64();
    if (v.is_int64() && v.get_int64() >= 0) return static_cast<std::uint64_t>(v.get_int64());
    wrong(key, "a non-negative integer");
    return 0;
  }

  int to_int(const json::value& v, std::string_view key, int lo, int hi) {
    if (v.is_int64() && v.get_int64() >= lo && v.get_int64() <= hi) return static_cast<int>(v.get_int64());
    if (v.is_uint64() && v.get_uint64() <= static_cast<std::uint64_t>(hi) && lo <= 0)
      return static_cast<int>(v.get_uint64());
    wrong(key, "an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
    return 0;
  }

  const json::object& o_;
  std::string_view type_;
  std::string error_;
};

// ---------------------------------------------------------------- records

std::string rebuild_raw(int code, const std::vector<std::string>& lines) {
  std::string code_text = std::to_string(code);
  if (lines.empty()) return code_text + "\r\n";
  std::string raw;
  for (std::size_t i = 0; i < lines.size(); ++i)
    raw += code_text + (i + 1 < lines.size() ? "-" : " ") + lines[i] + "\r\n";
  return raw;
}

// The client's incoming bytes as the records read so far hold them, for a bytes_ref
// (FORMAT.md): where each client/in bytes record starts in that stream, and its event.
struct client_in_stream {
  std::vector<std::pair<std::uint64_t, std::size_t>> starts;   // stream offset, index in capture::events
  std::uint64_t size = 0;
  // Where the last bytes_ref ended: the writer's copies follow one another through the
  // stream, so a file whose references overlap or go back was not written by mailtap (and
  // could otherwise make a small file expand without bound).
  std::uint64_t copied_to = 0;

  void add(const capture& c, std::size_t event_index) {
    const auto& data = std::get<bytes_event>(c.events[event_index]).data;
    if (data.empty()) return;
    starts.emplace_back(size, event_index);
    size += data.size();
  }
  // The `length` bytes at `at`, which the caller has checked lie within the stream.
  std::string copy(const capture& c, std::uint64_t at, std::uint64_t length) const {
    std::string out;
    if (length == 0) return out;
    out.reserve(static_cast<std::size_t>(length));
    auto it = std::upper_bound(starts.begin(), starts.end(), at,
                               [](std::uint64_t offset, const auto& start) { return offset < start.first; });
    for (--it; out.size() < length; ++it) {
      const auto& data = std::get<bytes_event>(c.events[it->second]).data;
      const std::size_t skip = static_cast<std::size_t>(at > it->first ? at - it->first : 0);
      out.append(data, skip, static_cast<std::size_t>(length) - out.size());
    }
    return out;
  }
};

// Types one upgraded record into `c`. Returns the error, empty on success.
std::string take_record(const json::object& o, std::string_view type, capture& c, client_in_stream& client_in) {
  fields f(o, type);
  if (type == record::header) {
    capture_header& h = c.header;
    h.session = f.str(field::session);
    // It names files (export eml: DIR/<session>-<n>.eml) and index rows: a path in it would
    // write outside the directory asked for (a hostile trial).
    if (!h.session.empty() && !is_session_id(h.session))
      f.fail("field \"session\" is not a session id (letters, digits, '-', '_' and '.', not first): " +
             quote_for_error(h.session));
    h.seed = f.u64(field::seed);
    h.master_seed = f.optional_u64(field::master_seed);         // added within version 5
    h.session_number = f.optional_u64(field::session_number);
    h.client = f.str(field::client);
    h.listen = f.str(field::listen);
    h.upstream = f.str(field::upstream);
    h.started_at = f.time(field::started_at);
    h.started_mono_us = f.u64(field::started_mono_us);
    h.relay = f.str(field::relay);
    h.bare_eol = f.str(field::bare_eol);
    h.normalize_to = f.optional_str(field::normalize_to);       // added within version 5
  } else if (type == record::bytes) {
    bytes_event e;
    e.t_us = f.micros(field::t_us);
    e.leg = f.leg(field::leg);
    e.dir = f.dir(field::dir);
    // Exactly one of latin1 (text, one character per byte) and b64 (version 5; before, b64).
    const bool has_latin1 = f.has(field::latin1), has_b64 = f.has(field::b64);
    if (has_latin1 && has_b64) {
      f.fail("both \"latin1\" and \"b64\": a bytes record has one");
    } else if (has_latin1) {
      if (auto data = latin1_bytes(f.str(field::latin1))) e.data = std::move(*data);
      else f.fail("field \"latin1\" has a character past U+00FF, which is no byte");
    } else if (has_b64) {
      if (auto data = protocol::base64_decode(f.str(field::b64))) e.data = std::move(*data);
      else f.fail("field \"b64\" is not valid base64");
    } else {
      f.fail("missing field \"latin1\" (or \"b64\")");
    }
    const bool from_client = e.leg == protocol::leg::client && e.dir == protocol::direction::in;
    c.events.emplace_back(std::move(e));
    if (from_client) client_in.add(c, c.events.size() - 1);
  } else if (type == record::bytes_ref) {
    bytes_event e;
    e.t_us = f.micros(field::t_us);
    e.leg = f.leg(field::leg);
    e.dir = f.dir(field::dir);
    const std::uint64_t at = f.u64(field::client_in_at);
    const std::uint64_t length = f.u64(field::length);
    if (!f.error().empty()) return f.error();
    if (at > client_in.size || length > client_in.size - at) {
      f.fail(std::to_string(length) + " bytes at " + std::to_string(at) + " are past the client's " +
             std::to_string(client_in.size) + " bytes recorded before it");
    } else if (at < client_in.copied_to) {
      f.fail("bytes at " + std::to_string(at) + " go back before the end of the previous copy (" +
             std::to_string(client_in.copied_to) + ")");
    } else {
      e.data = client_in.copy(c, at, length);
      client_in.copied_to = at + length;
    }
    c.events.emplace_back(std::move(e));
  } else if (type == record::command) {
    command_event e;
    e.t_us = f.micros(field::t_us);
    e.leg = f.leg(field::leg);
    e.dir = f.dir(field::dir);
    e.text = f.str(field::text);
    c.events.emplace_back(std::move(e));
  } else if (type == record::reply) {
    reply_event e;
    e.t_us = f.micros(field::t_us);
    e.leg = f.leg(field::leg);
    e.dir = f.dir(field::dir);
    e.reply.code = f.integer(field::code, 0, 999);
    e.reply.enhanced = f.str(field::enhanced);
    e.reply.lines = f.strings(field::lines);
    e.reply.raw = rebuild_raw(e.reply.code, e.reply.lines);
    c.events.emplace_back(std::move(e));
  } else if (type == record::note) {
    note_event e;
    e.t_us = f.micros(field::t_us);
    e.text = f.str(field::text);
    c.events.emplace_back(std::move(e));
  } else if (type == record::tls) {
    tls_event e;
    e.t_us = f.micros(field::t_us);
    e.leg = f.leg(field::leg);
    e.tls.version = f.str(field::version);
    e.tls.cipher = f.str(field::cipher);
    e.tls.sni = f.str(field::sni);
    e.tls.peer_subject = f.str(field::peer_subject);
    e.tls.peer_sha256 = f.str(field::peer_sha256);
    e.tls.verified = f.boolean(field::verified);
    e.tls.insecure = f.boolean(field::insecure);
    e.tls.handshake_us = f.micros(field::handshake_us);
    e.tls.verification = f.optional_str(field::verification);   // added within version 2; upstream leg only
    c.events.emplace_back(std::move(e));
  } else if (type == record::stage) {
    stage s;
    s.ph = f.phase(field::name, "stage name");
    s.start_us = f.micros(field::start_us);
    s.duration_us = f.micros(field::duration_us);
    s.upstream_us = f.micros(field::upstream_us);
    s.relay_us = f.micros(field::relay_us);
    s.think_us = f.micros(field::think_us);
    s.client_us = f.has(field::client_us) ? f.micros(field::client_us) : 0;   // optional
    c.stages.push_back(s);
  } else if (type == record::transaction) {
    transaction t;
    t.mail_from = f.str(field::mail_from);
    t.rcpt_to = f.strings(field::rcpt_to);
    t.rcpt_codes = f.reply_codes(field::rcpt_codes);
    t.message_id = f.str_or_null(field::message_id);
    t.size = f.u64(field::size);
    if (const json::value* r = f.find(field::final_reply); r && !r->is_null()) {
      if (!r->is_object()) {
        f.fail("field \"final_reply\" is not an object or null");
      } else {
        const std::string what = std::string(record::transaction) + " " + std::string(field::final_reply);
        fields rf(r->get_object(), what);
        t.final_reply = reply_summary{rf.integer(field::code, 0, 999), rf.str(field::enhanced), rf.str(field::text)};
        if (!rf.error().empty()) return rf.error();
      }
    }
    t.result = f.outcome(field::outcome);
    t.synthesized = f.boolean(field::synthesized);
    t.without_mail = f.has(field::without_mail) && f.boolean(field::without_mail);   // added within version 5
    t.start_us = f.micros(field::start_us);
    t.end_us = f.micros(field::end_us);
    c.transactions.push_back(std::move(t));
  } else if (type == record::fault) {
    fault_event e;
    e.t_us = f.micros(field::t_us);
    e.fault.rule = f.str(field::rule);
    e.fault.type = f.str(field::fault_type);
    e.fault.decision = f.decision(field::decision);
    e.fault.ph = f.phase(field::phase, "phase");
    e.fault.planned_delay_us = f.micros(field::planned_delay_us);
    e.fault.actual_delay_us = f.micros(field::actual_delay_us);
    e.fault.detail = f.str(field::detail);
    c.events.emplace_back(std::move(e));
  } else if (type == record::end) {
    end_record e;
    e.t_us = f.micros(field::t_us);
    e.reason = f.str(field::reason);
    e.detail = f.str(field::detail);
    e.ended_at = f.time(field::ended_at);
    e.complete = f.boolean(field::complete);
    e.dropped_records = f.u64(field::dropped_records);
    c.end = std::move(e);
  } else {
    return "unknown record type " + quote_for_error(type);
  }
  return f.error();
}

// Checks the header before anything is upgraded. Returns the file's version, or 0 and
// sets `error`.
int check_header(const json::object& o, std::string& error) {
  auto format = o.find(field::format);
  if (format == o.end() || !format->value().is_string() || format->value().get_string() != format_name) {
    error = "not a mailtap capture (header \"" + std::string(field::format) + "\" is not \"" + std::string(format_name) +
            "\")";
    return 0;
  }
  auto version = o.find(field::version);
  if (version == o.end() || !version->value().is_number()) {
    error = "header has no numeric \"" + std::string(field::version) + "\"";
    return 0;
  }
  const json::value& v = version->value();
  // A number JSON reads as no integer (a fraction, an exponent, or past 2^64) is not printed
  // back: 18446744073709551616 would read "1.8446744073709552E19", a number the file does not hold.
  if (v.is_double()) {
    const double d = v.get_double();
    const char* why = !std::isfinite(d) || std::fabs(d) >= 9223372036854775808.0 ? "out of range"
                      : d != std::trunc(d) ? "not an integer"
                                           : "not written as an integer (a decimal point or an exponent)";
    error = std::string("unsupported capture format version: ") + why + " (this mailtap reads versions 1 to " +
            std::to_string(format_version) + ")";
    return 0;
  }
  if (v.is_int64() && v.get_int64() < 1) {
    error = "unsupported capture format version " + json::serialize(v);
    return 0;
  }
  if (v.is_uint64() || v.get_int64() > format_version) {
    error = "capture format version " + json::serialize(v) + " is newer than this mailtap (" +
            std::to_string(format_version) + ")";
    return 0;
  }
  return static_cast<int>(v.get_int64());
}

// Yields lines without their '\n', saying whether the '\n' was there; bounded by line_cap.
class line_source {
 public:
  explicit line_source(std::ifstream& in) : in_(in) {}

  enum class status { line, done, too_long, read_error };

  status next(std::string& line, bool& terminated) {
    line.clear();
    for (;;) {
      if (pos_ == buf_.size()) {
        buf_.resize(64 * 1024);
        in_.read(buf_.data(), static_cast<std::streamsize>(buf_.size()));
        buf_.resize(static_cast<std::size_t>(in_.gcount()));
        pos_ = 0;
        if (in_.bad()) return status::read_error;
        if (buf_.empty()) {
          if (line.empty()) return status::done;
          terminated = false;
          return status::line;
        }
      }
      const char* start = buf_.data() + pos_;
      std::size_t avail = buf_.size() - pos_;
      const void* nl = std::memchr(start, '\n', avail);
      std::size_t take = nl ? static_cast<std::size_t>(static_cast<const char*>(nl) - start) : avail;
      if (line.size() + take > line_cap) return status::too_long;
      line.append(start, take);
      pos_ += take;
      if (nl) {
        ++pos_;
        terminated = true;
        return status::line;
      }
    }
  }

 private:
  std::ifstream& in_;
  std::string buf_;
  std::size_t pos_ = 0;
};

bool blank(std::string_view s) { return s.find_first_not_of(" \t\r") == std::string_view::npos; }

std::optional<capture> read(const std::filesystem::path& file, std::string& error) {
  const std::string name = file.string();
  std::error_code dir_ec;
  if (std::filesystem::is_directory(file, dir_ec)) {
    error = name + ": is a directory, not a capture file";
    return std::nullopt;
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    error = name + ": cannot open: " + std::strerror(errno);
    return std::nullopt;
  }
  json::parse_options options;
  // The writer escapes control bytes but passes 8-bit bytes through, so strings from the
  // wire (commands, reply lines, addresses) need not be valid UTF-8.
  options.allow_invalid_utf8 = true;

  capture c;
  c.path = file;
  client_in_stream client_in;
  bool have_header = false;
  int version = 0;
  std::size_t line_no = 0;
  std::string line;
  bool terminated = false;
  line_source source(in);
  auto fail = [&](const std::string& what) {
    error = name + ":" + std::to_string(line_no) + ": " + what;
    return std::nullopt;
  };
  for (;;) {
    auto st = source.next(line, terminated);
    if (st == line_source::status::done) break;
    ++line_no;
    if (st == line_source::status::read_error) return fail("read error");
    if (st == line_source::status::too_long)
      return fail("line longer than " + std::to_string(line_cap) + " bytes");
    if (blank(line)) continue;
    json::error_code ec;
    json::value v = json::parse(line, ec, {}, options);
    if (ec || !v.is_object()) {
      // Only the last line can lack its newline. If it is not a whole record, the writer
      // was stopped while writing it: keep what came before, marked incomplete.
      auto first = line.find_first_not_of(" \t");
      if (!terminated && first != std::string::npos && line[first] == '{') {
        c.truncated_line = true;
        break;
      }
      return fail(ec ? "not a JSON object (" + ec.message() + ")" : "not a JSON object");
    }
    json::object& o = v.get_object();
    auto type_it = o.find(field::type);
    if (type_it == o.end() || !type_it->value().is_string()) return fail("record has no \"" + std::string(field::type) + "\"");
    std::string type(type_it->value().get_string());
    if (!have_header) {
      if (type != record::header) return fail("first record is " + quote_for_error(type) + ", not a header");
      std::string why;
      version = check_header(o, why);
      if (version == 0) return fail(why);
      c.header.version = version;
      have_header = true;
    } else if (type == record::header) {
      return fail("second header record");
    }
    if (c.end) return fail(quote_for_error(type) + " record after the end record");
    upgrade(o, version);
    if (std::string why = take_record(o, type, c, client_in); !why.empty()) return fail(why);
  }
  if (!have_header) {
    if (c.truncated_line) return fail("header record is cut (the writer stopped mid-line)");
    error = name + ": empty capture, no header record";
    return std::nullopt;
  }
  c.complete = c.end && c.end->complete && !c.truncated_line;
  if (auto open = rebuild_open_transaction(c)) c.transactions.push_back(std::move(*open));
  return c;
}

}  // namespace

std::uint64_t event_time(const event& e) {
  return std::visit([](const auto& x) { return x.t_us; }, e);
}

std::optional<capture> read_capture(const std::filesystem::path& file, std::string& error) {
  try {
    return read(file, error);
  } catch (const std::exception& e) {   // allocation failure, a filesystem oddity
    error = file.string() + ": cannot read: " + e.what();
  } catch (...) {
    error = file.string() + ": cannot read";
  }
  return std::nullopt;
}

std::string session_outcome(const capture& c, bool settled_only) {
  bool any = false;
  for (const auto& t : c.transactions) {
    if (settled_only && t.rebuilt) continue;
    if (t.result != protocol::outcome::delivered) return std::string(protocol::to_string(t.result));
    any = true;
  }
  return any ? "delivered" : "none";
}

}  // namespace mailtap::captures
