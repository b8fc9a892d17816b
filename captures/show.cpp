// `mailtap show`: text and JSON renderings of a capture. Times are printed from integer
// microseconds (no floating point), so the output is identical on every platform and the
// golden files stay stable.
#include "captures/show.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <cstdio>
#include <map>
#include <optional>
#include <string_view>
#include <vector>

#include "captures/client_steps.hpp"
#include "captures/utf8_text.hpp"
#include "protocol/action.hpp"
#include "protocol/reply.hpp"
#include "protocol/terminal_text.hpp"

namespace mailtap::captures {

namespace field = schema::field;

namespace {

namespace json = boost::json;

// Width of the waterfall bar, in columns between the two '|'.
constexpr std::uint64_t bar_columns = 40;
// Width of the waterfall's stage column: the longest name is "tls upstream".
constexpr std::size_t stage_column = 14;
// Width of the "+   12.345 ms  " column, so continuation rows line up under the text.
constexpr std::size_t time_column = 15;
// Bytes of a bytes event shown in the JSON report (the rest is counted in `size`).
constexpr std::size_t json_bytes_shown = 200;

// "12.345" from 12345 µs.
std::string ms(std::uint64_t us) {
  char frac[8];
  std::snprintf(frac, sizeof frac, ".%03u", static_cast<unsigned>(us % 1000));
  return std::to_string(us / 1000) + frac;
}

std::string pad_left(std::string s, std::size_t width) {
  if (s.size() < width) s.insert(0, width - s.size(), ' ');
  return s;
}

std::string pad_right(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

// Wire text made safe to print on a terminal (protocol/terminal_text.hpp terminal_safe).
std::string printable(std::string_view s) { return protocol::terminal_safe(s); }

// For JSON, which must be UTF-8 (captures written before the writer made it so hold raw bytes).
std::string utf8(std::string_view s) { return utf8_or_escaped(s); }

std::string angle(const std::string& address) {
  if (!address.empty() && address.front() == '<') return printable(address);
  return "<" + printable(address) + ">";
}

std::string reply_line(int code, bool last, const std::string& text) {
  return std::to_string(code) + (last ? " " : "-") + text;
}

std::string summary_text(const reply_summary& r) {
  std::string s = std::to_string(r.code);
  if (!r.enhanced.empty()) s += " " + r.enhanced;
  if (!r.text.empty()) {
    std::string text = r.text;   // a multi-line reply's lines, LF between them (FORMAT.md): one line here
    std::replace(text.begin(), text.end(), '\n', ' ');
    s += " " + text;
  }
  return printable(s);
}

// The message size for a body that followed the 354 at `t_us`: the recorded size of the
// transaction open at that time, or else (no transaction record: an incomplete capture)
// the client's bytes until the next reply, less the terminating ".\r\n" if it arrived.
std::uint64_t body_size(const capture& c, std::size_t reply_index, std::uint64_t t_us) {
  for (const auto& t : c.transactions)
    if (t.start_us <= t_us && t_us <= t.end_us) return t.size;
  std::uint64_t size = 0;
  std::string tail;   // last bytes seen, to recognise the terminator
  for (std::size_t i = reply_index + 1; i < c.events.size(); ++i) {
    if (std::holds_alternative<reply_event>(c.events[i])) break;
    const auto* b = std::get_if<bytes_event>(&c.events[i]);
    if (!b || b->leg != protocol::leg::client || b->dir != protocol::direction::in) continue;
    size += b->data.size();
    tail += b->data;
    if (tail.size() > 5) tail.erase(0, tail.size() - 5);
  }
  if (tail.size() == 5 && tail == "\r\n.\r\n") size -= 3;
  return size;
}

// The record of the client's first bytes after the 354 at `reply_index` (file order): the body
// the 354 asked for. None when another reply comes first (the client sent its message with its
// DATA, or none at all), or when that record is timed before the 354.
std::optional<std::size_t> body_record(const capture& c, std::size_t reply_index) {
  const std::uint64_t t_354 = event_time(c.events[reply_index]);
  for (std::size_t i = reply_index + 1; i < c.events.size(); ++i) {
    if (const auto* r = std::get_if<reply_event>(&c.events[i]); r && r->reply.code != 354) return std::nullopt;
    const auto* b = std::get_if<bytes_event>(&c.events[i]);
    if (!b || b->leg != protocol::leg::client || b->dir != protocol::direction::in) continue;
    if (b->t_us < t_354) return std::nullopt;
    return i;
  }
  return std::nullopt;
}

std::string capture_status(const capture& c) {
  if (c.complete) return "complete";
  std::string why;
  auto add = [&](const std::string& s) { why += (why.empty() ? "" : "; ") + s; };
  if (!c.end) add("no end record");
  if (c.end && c.end->dropped_records > 0) add(std::to_string(c.end->dropped_records) + " records dropped");
  else if (c.end && !c.end->complete) add("writer marked it incomplete");
  if (c.truncated_line) add("last line cut");
  return "INCOMPLETE (" + why + ")";
}

void render_header(const capture& c, std::string& out) {
  const capture_header& h = c.header;
  auto row = [&](std::string_view label, const std::string& value) {
    out += pad_right(std::string(label), 10) + value + "\n";
  };
  row("session", printable(h.session));
  row("client", printable(h.client) + " -> " + printable(h.upstream));
  row("started", printable(h.started_at));
  // With the run's seed and the session's number (captures since they were recorded), the row
  // says how to get this session's faults again: the same rule matches and random draws need both.
  if (h.master_seed != 0 && h.session_number != 0) {
    const std::string m = std::to_string(h.master_seed), n = std::to_string(h.session_number);
    row("seed", std::to_string(h.seed) + " (session " + n + " of a run with --seed " + m + "; `mailtap run --seed " +
                    m + " --first-session " + n + "` gives its first session these faults again)");
  } else {
    row("seed", std::to_string(h.seed));
  }
  row("outcome", session_outcome(c));
  if (c.end) row("end", printable(c.end->reason) + (c.end->detail.empty() ? "" : ": " + printable(c.end->detail)));
  else row("end", "(none)");
  row("capture", capture_status(c));
}

// One line per handshake: "TLS upstream: TLSv1.3 TLS_AES_256_GCM_SHA384, sni mx.example,
// peer CN=mx.example sha256 AB:CD:..., verified, 1.234 ms"; an upstream that did not verify
// says why: "not verified (untrusted: self-signed certificate)".
std::string tls_line(const tls_event& t) {
  std::string line = "TLS " + std::string(protocol::to_string(t.leg)) + ": " + t.tls.version + " " + t.tls.cipher;
  if (!t.tls.sni.empty()) line += ", sni " + t.tls.sni;
  if (!t.tls.peer_subject.empty()) line += ", peer " + t.tls.peer_subject;
  if (!t.tls.peer_sha256.empty()) line += " sha256 " + t.tls.peer_sha256;
  if (t.leg == protocol::leg::upstream) {
    // The result and, when not verified, why (Postfix: "Untrusted TLS connection established").
    const std::string& why = t.tls.verification;
    if (t.tls.insecure) line += ", NOT verified (insecure by configuration)";
    else if (t.tls.verified) line += why.rfind("verified: ", 0) == 0 ? ", " + why : std::string(", verified");
    else line += why.empty() ? std::string(", not verified") : ", not verified (" + why + ")";
  }
  line += ", handshake " + ms(t.tls.handshake_us) + " ms";
  return line;
}

// "greylist-rcpt (greylist) reply at rcpt: 451 4.7.1 Try later", with
// " [delay planned 2.000 ms, actual 2.013 ms]" when either delay is non-zero.
std::string fault_line(const fault_event& f) {
  const protocol::fault_event& x = f.fault;
  std::string line = x.rule.empty() ? "(unnamed rule)" : x.rule;
  if (!x.type.empty()) line += " (" + x.type + ")";
  line += " " + x.decision + " at " + std::string(protocol::to_string(x.ph));
  if (!x.detail.empty()) line += ": " + x.detail;
  if (x.planned_delay_us > 0 || x.actual_delay_us > 0)
    line += " [delay planned " + ms(x.planned_delay_us) + " ms, actual " + ms(x.actual_delay_us) + " ms]";
  return line;
}

// Indexes of c.events in time order; records of equal time keep their file order. The
// writer records most events as they happen, but a fault can be written after what
// followed its decision (its actual delay is known only then).
std::vector<std::size_t> time_order(const capture& c) {
  std::vector<std::size_t> order(c.events.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return event_time(c.events[a]) < event_time(c.events[b]);
  });
  return order;
}

// The client's command lines the relay recorded and never read, by the `client`/`in` bytes record
// that holds each (the one its last byte is in). The relay writes a `command` record for every line
// it takes (an AUTH response's too, a line it refuses, a line a delay holds), and records the client's
// bytes as it takes them; what it never took is recorded as bytes only, when the session ends
// (protocol/client_input.cpp record_and_drop_rest: the lines a client pipelined behind a dot a
// delay rule held, when the destination said 421 or hung up during the hold) or as they come
// (after QUIT, or once the relay is closing on a protocol error). Those lines are the client's
// line steps past the count of its `command` records. The client's bytes are cut as the relay read
// them, by client_steps.hpp, as replay/script.cpp cuts them: a line; after DATA answered 354 (the
// replies the client got, in order, RFC 2920), the message to its end as the relay frames it; a
// BDAT line with its chunk; after a 334 an AUTH response.
std::map<std::size_t, std::vector<std::string>> unread_client_lines(const capture& c) {
  std::map<std::size_t, std::vector<std::string>> out;
  std::string in;
  std::vector<std::pair<std::size_t, std::size_t>> ends;   // (end offset in `in`, event index), ascending
  std::vector<int> codes;                                    // the replies the client got, in order
  std::size_t commands = 0;
  protocol::reply_parser parser;
  std::vector<protocol::reply> done;
  for (std::size_t i = 0; i < c.events.size(); ++i) {
    if (const auto* cmd = std::get_if<command_event>(&c.events[i])) {
      commands += cmd->leg == protocol::leg::client && cmd->dir == protocol::direction::in;
      continue;
    }
    const auto* b = std::get_if<bytes_event>(&c.events[i]);
    if (!b || b->leg != protocol::leg::client || b->data.empty()) continue;
    if (b->dir == protocol::direction::in) {
      in += b->data;
      ends.emplace_back(in.size(), i);
    } else if (parser.feed(b->data, done) == protocol::reply_parse_status::ok) {
      for (const auto& r : done) codes.push_back(r.code);
      done.clear();
    }
  }
  auto record_of = [&](std::size_t last_byte) {
    auto it = std::upper_bound(ends.begin(), ends.end(), last_byte,
                               [](std::size_t o, const auto& e) { return o < e.first; });
    return it == ends.end() ? ends.back().second : it->second;
  };
  std::size_t lines = 0;
  for (const auto& st : cut_client_steps(in, codes, message_framing(c.header))) {
    if (st.kind == client_step_kind::message) continue;
    if (++lines > commands) out[record_of(st.line_end - 1)].push_back(protocol::escape_bytes(st.line(in), 1000));
  }
  return out;
}

void render_transcript(const capture& c, std::string& out) {
  out += "\ntranscript\n";
  // The time column is as wide as the latest time needs (10 s and more is wider than 9).
  std::size_t digits = 9;
  for (const auto& e : c.events) digits = std::max(digits, ms(event_time(e)).size());
  const std::string blank_time(time_column - 9 + digits, ' ');
  auto stamp = [digits](std::uint64_t t_us) { return "+" + pad_left(ms(t_us), digits) + " ms  "; };
  bool last_reply_was_354 = false;
  // A body marker waiting for the record of the body's first bytes (body_record), and how long
  // the transcript was when its 354 was printed.
  std::optional<std::size_t> marker_at;
  std::string marker;
  std::size_t out_at_354 = 0;
  const auto unread = unread_client_lines(c);
  for (std::size_t i : time_order(c)) {
    const event& e = c.events[i];
    if (auto it = unread.find(i); it != unread.end()) {
      // Lines the client sent that the relay recorded and never read (unread_client_lines), at the
      // time and place of the record that holds them: no command record says so.
      for (const auto& line : it->second) out += stamp(event_time(e)) + "C> " + printable(line) + "\n";
      const std::size_t n = it->second.size();
      out += blank_time + "   [" + std::to_string(n) + (n == 1 ? " line" : " lines") +
             " recorded, never read by the relay as commands]\n";
      last_reply_was_354 = false;
    }
    if (marker_at == i) {
      // Right under its 354 it reads as the message that followed; after other rows (a 354
      // held by a delay fault at MAIL went to the client 1.5 s after the relay recorded it), it
      // carries its own time.
      out += (out.size() == out_at_354 ? blank_time : stamp(event_time(e))) + marker;
      marker_at.reset();
    }
    if (const auto* cmd = std::get_if<command_event>(&e)) {
      // U>: a command the relay itself sent upstream (its own EHLO and STARTTLS, a fault's RSET).
      const char* who = cmd->leg == protocol::leg::upstream ? "U> " : "C> ";
      out += stamp(cmd->t_us) + who + printable(cmd->text) + "\n";
      last_reply_was_354 = false;
    } else if (const auto* n = std::get_if<note_event>(&e)) {
      out += stamp(n->t_us) + "!! " + printable(n->text) + "\n";
    } else if (const auto* t = std::get_if<tls_event>(&e)) {
      out += stamp(t->t_us) + "== " + printable(tls_line(*t)) + "\n";
    } else if (const auto* f = std::get_if<fault_event>(&e)) {
      out += stamp(f->t_us) + "F! " + printable(fault_line(*f)) + "\n";
    } else if (const auto* r = std::get_if<reply_event>(&e)) {
      const char* who = r->leg == protocol::leg::upstream ? "S< " : "R> ";
      const auto& lines = r->reply.lines;
      if (lines.empty()) out += stamp(r->t_us) + who + std::to_string(r->reply.code) + "\n";
      for (std::size_t l = 0; l < lines.size(); ++l)
        out += (l == 0 ? stamp(r->t_us) : blank_time) + who +
               printable(reply_line(r->reply.code, l + 1 == lines.size(), lines[l])) + "\n";
      // The relay may show a 354 twice (as received, then as sent on): one summary, at the
      // time the body was recorded.
      if (r->reply.code == 354 && !last_reply_was_354) {
        std::string line = "   [message body: " + std::to_string(body_size(c, i, r->t_us)) + " bytes]\n";
        if (marker_at) out += blank_time + marker;   // an earlier one whose body never came
        marker_at = body_record(c, i);
        if (marker_at) {
          marker = std::move(line);
          out_at_354 = out.size();
        } else {
          out += blank_time + line;
        }
      } else if (r->reply.code == 354 && marker_at) {
        out_at_354 = out.size();   // the same 354 as sent on: the marker still reads as under it
      }
      last_reply_was_354 = r->reply.code == 354;
    }
  }
  if (marker_at) out += blank_time + marker;
  if (c.events.empty()) out += blank_time + "(no events)\n";
}

// The leg of a tls stage: the handshake whose tls record ends where the stage ends (the relay
// writes both from the same handshake). Nullopt for other stages, or when none matches.
std::optional<protocol::leg> tls_stage_leg(const capture& c, const stage& s) {
  if (s.ph != protocol::phase::tls) return std::nullopt;
  for (const auto& e : c.events)
    if (const auto* t = std::get_if<tls_event>(&e))
      if (t->t_us == s.start_us + s.duration_us && t->tls.handshake_us == s.duration_us) return t->leg;
  return std::nullopt;
}

// "tls client" / "tls upstream" for a handshake, else the phase name.
std::string stage_label(const capture& c, const stage& s) {
  std::string name(protocol::to_string(s.ph));
  if (auto l = tls_stage_leg(c, s)) name += " " + std::string(protocol::to_string(*l));
  return name;
}

// The stages by start time (the relay records each when it ends: a handshake after the
// STARTTLS that asked for it, a message's body after its DATA reply).
std::vector<const stage*> stages_in_time_order(const capture& c) {
  std::vector<const stage*> out;
  for (const auto& s : c.stages) out.push_back(&s);
  std::stable_sort(out.begin(), out.end(), [](const stage* a, const stage* b) { return a->start_us < b->start_us; });
  return out;
}

// One stage's bar: the sender's think time before it as '-', then its duration split into
// '#' upstream, '.' sender and '=' relay, scaled so that the session spans `bar_columns`.
std::string stage_bar(const stage& s, std::uint64_t total) {
  std::string bar(bar_columns, ' ');
  if (total == 0) return bar;
  std::uint64_t from = std::min(s.start_us * bar_columns / total, bar_columns - 1);
  std::uint64_t to = ((s.start_us + s.duration_us) * bar_columns + total - 1) / total;   // round up
  to = std::clamp(to, from + 1, bar_columns);
  std::uint64_t len = to - from;
  auto share = [&](std::uint64_t us) {
    return s.duration_us == 0 ? 0 : (len * std::min(us, s.duration_us) + s.duration_us / 2) / s.duration_us;
  };
  std::uint64_t upstream = share(s.upstream_us);
  std::uint64_t sender = std::min(len - std::min(upstream, len), share(s.client_us));
  for (std::uint64_t i = 0; i < len; ++i) bar[from + i] = i < upstream ? '#' : i < upstream + sender ? '.' : '=';
  std::uint64_t think_from = (s.start_us - std::min(s.think_us, s.start_us)) * bar_columns / total;
  for (std::uint64_t i = think_from; i < from; ++i) bar[i] = '-';
  return bar;
}

void render_waterfall(const capture& c, std::string& out) {
  const std::uint64_t total = session_duration_us(c);
  out += "\nstages (session " + ms(total) + " ms; bar: - think, # upstream, = relay, . sender, " +
         std::to_string(bar_columns) + " columns)\n";
  // Each number column is 12 wide, or wider for a number that would fill it (a long session).
  std::size_t w = 12;
  for (const auto& s : c.stages)
    for (auto us : {s.start_us, s.duration_us, s.upstream_us, s.relay_us, s.client_us, s.think_us})
      w = std::max(w, ms(us).size() + 2);
  out += pad_right("stage", stage_column) + pad_left("start ms", w) + pad_left("dur ms", w) +
         pad_left("upstream ms", w) + pad_left("relay ms", w) + pad_left("client ms", w) + pad_left("think ms", w) +
         "\n";
  for (const stage* s : stages_in_time_order(c)) {
    out += pad_right(stage_label(c, *s), stage_column) + pad_left(ms(s->start_us), w) +
           pad_left(ms(s->duration_us), w) + pad_left(ms(s->upstream_us), w) + pad_left(ms(s->relay_us), w) +
           pad_left(ms(s->client_us), w) + pad_left(ms(s->think_us), w) + "  |" + stage_bar(*s, total) + "|\n";
  }
  if (c.stages.empty()) out += "(no stages)\n";
}

void render_transactions(const capture& c, std::string& out) {
  out += "\ntransactions (" + std::to_string(c.transactions.size()) + ")\n";
  std::size_t n = 0;
  for (const transaction& t : c.transactions) {
    auto row = [&](std::string_view label, const std::string& value) {
      out += "   " + pad_right(std::string(label), 13) + value + "\n";
    };
    out += "#" + std::to_string(++n) + " " + std::string(protocol::to_string(t.result)) +
           (t.rebuilt ? " (no record: the capture ends inside this transaction; rebuilt from the transcript)" : "") +
           "\n";
    // A BDAT with no MAIL before it has no sender at all, which "<>" (a bounce's) would misstate.
    row("from", t.without_mail ? std::string(no_mail_sender) : angle(t.mail_from));
    std::string to;
    for (std::size_t i = 0; i < t.rcpt_to.size(); ++i) {
      if (i) to += ", ";
      to += angle(t.rcpt_to[i]);
      if (i < t.rcpt_codes.size()) to += " (" + std::to_string(t.rcpt_codes[i]) + ")";
    }
    row("to", to.empty() ? "(none)" : to);
    row("message-id", t.message_id ? printable(*t.message_id) : "(none)");
    row("size", std::to_string(t.size) + " bytes");
    row("final reply", (t.final_reply ? summary_text(*t.final_reply) : "(none)") +
                           (t.synthesized ? " (synthesized by relay)" : ""));
    row("outcome", std::string(protocol::to_string(t.result)));
  }
}

// Omitted without faults (every capture before format version 2, most after). One heading
// with the count and the delays they added, then one row per rule, type and decision, in
// the order they first fired: "   2 x greylist-rcpt (greylist) reply".
void render_faults(const capture& c, std::string& out) {
  struct group {
    const protocol::fault_event* first;
    std::size_t count;
  };
  std::vector<group> groups;
  std::size_t total = 0;
  std::uint64_t planned = 0, actual = 0;
  for (std::size_t i : time_order(c)) {
    const auto* f = std::get_if<fault_event>(&c.events[i]);
    if (!f) continue;
    const protocol::fault_event& x = f->fault;
    ++total;
    planned += x.planned_delay_us;
    actual += x.actual_delay_us;
    auto same = [&](const group& g) {
      return g.first->rule == x.rule && g.first->type == x.type && g.first->decision == x.decision;
    };
    if (auto it = std::find_if(groups.begin(), groups.end(), same); it != groups.end()) ++it->count;
    else groups.push_back({&x, 1});
  }
  if (total == 0) return;
  out += "\nfaults (" + std::to_string(total);
  if (planned > 0 || actual > 0) out += "; delays planned " + ms(planned) + " ms, actual " + ms(actual) + " ms";
  out += ")\n";
  for (const group& g : groups) {
    std::string what = g.first->rule.empty() ? "(unnamed rule)" : g.first->rule;
    if (!g.first->type.empty()) what += " (" + g.first->type + ")";
    out += "   " + std::to_string(g.count) + " x " + printable(what + " " + g.first->decision) + "\n";
  }
}

json::value or_null(const std::optional<std::string>& s) {
  return s ? json::value(utf8(*s)) : json::value(nullptr);
}

json::object event_json(const event& e) {
  json::object o;
  o[field::t_us] = event_time(e);
  if (const auto* b = std::get_if<bytes_event>(&e)) {
    o[field::leg] = protocol::to_string(b->leg);
    o[field::dir] = protocol::to_string(b->dir);
    o["kind"] = schema::record::bytes;
    o[field::text] = utf8(protocol::escape_bytes(b->data, json_bytes_shown));
    o["size"] = b->data.size();
  } else if (const auto* cmd = std::get_if<command_event>(&e)) {
    o[field::leg] = protocol::to_string(cmd->leg);
    o[field::dir] = protocol::to_string(cmd->dir);
    o["kind"] = schema::record::command;
    o[field::text] = utf8(cmd->text);
  } else if (const auto* r = std::get_if<reply_event>(&e)) {
    o[field::leg] = protocol::to_string(r->leg);
    o[field::dir] = protocol::to_string(r->dir);
    o["kind"] = schema::record::reply;
    std::string text;
    const auto& lines = r->reply.lines;
    if (lines.empty()) text = std::to_string(r->reply.code);
    for (std::size_t l = 0; l < lines.size(); ++l)
      text += (l ? "\n" : "") + reply_line(r->reply.code, l + 1 == lines.size(), lines[l]);
    o[field::text] = utf8(text);
    o[field::code] = r->reply.code;
    o[field::enhanced] = utf8(r->reply.enhanced);
  } else if (const auto* t = std::get_if<tls_event>(&e)) {
    o[field::leg] = protocol::to_string(t->leg);
    o[field::dir] = nullptr;
    o["kind"] = schema::record::tls;
    o[field::text] = utf8(tls_line(*t));
    o[field::version] = t->tls.version;
    o[field::cipher] = t->tls.cipher;
    o[field::sni] = utf8(t->tls.sni);
    o[field::peer_subject] = utf8(t->tls.peer_subject);
    o[field::peer_sha256] = t->tls.peer_sha256;
    o[field::verified] = t->tls.verified;
    o[field::insecure] = t->tls.insecure;
    o[field::verification] = utf8(t->tls.verification);
    o[field::handshake_us] = t->tls.handshake_us;
  } else if (const auto* n = std::get_if<note_event>(&e)) {
    o[field::leg] = nullptr;   // notes are the relay's own, on neither leg
    o[field::dir] = nullptr;
    o["kind"] = schema::record::note;
    o[field::text] = utf8(n->text);
  } else if (const auto* f = std::get_if<fault_event>(&e)) {
    const protocol::fault_event& x = f->fault;
    o[field::leg] = nullptr;   // faults are the relay's own decisions, like notes
    o[field::dir] = nullptr;
    o["kind"] = schema::record::fault;
    o[field::text] = utf8(fault_line(*f));
    o[field::rule] = utf8(x.rule);
    o[field::fault_type] = utf8(x.type);
    o[field::decision] = utf8(x.decision);
    o[field::phase] = protocol::to_string(x.ph);
    o[field::planned_delay_us] = x.planned_delay_us;
    o[field::actual_delay_us] = x.actual_delay_us;
    o[field::detail] = utf8(x.detail);
  }
  return o;
}

}  // namespace

std::uint64_t session_duration_us(const capture& c) {
  std::uint64_t t = c.end ? c.end->t_us : 0;
  for (const auto& e : c.events) t = std::max(t, event_time(e));
  for (const auto& s : c.stages) t = std::max(t, s.start_us + s.duration_us);
  for (const auto& x : c.transactions) t = std::max(t, x.end_us);
  return t;
}

std::string render_text(const capture& c) {
  std::string out;
  render_header(c, out);
  render_transcript(c, out);
  render_waterfall(c, out);
  render_transactions(c, out);
  render_faults(c, out);
  return out;
}

std::string render_json(const capture& c) {
  json::object o;
  const capture_header& h = c.header;
  o["id"] = utf8(h.session);
  o[field::client] = utf8(h.client);
  o[field::listen] = utf8(h.listen);
  o[field::upstream] = utf8(h.upstream);
  o[field::started_at] = utf8(h.started_at);
  o[field::seed] = h.seed;
  // null: a capture from before they were recorded.
  o[field::master_seed] = h.master_seed != 0 ? json::value(h.master_seed) : json::value(nullptr);
  o[field::session_number] = h.session_number != 0 ? json::value(h.session_number) : json::value(nullptr);
  o[field::version] = h.version;
  o[field::outcome] = session_outcome(c);
  o[field::complete] = c.complete;
  o["truncated_line"] = c.truncated_line;
  o["end_reason"] = c.end ? json::value(utf8(c.end->reason)) : json::value(nullptr);
  o["end_detail"] = c.end ? json::value(utf8(c.end->detail)) : json::value(nullptr);
  o[field::dropped_records] = c.end ? c.end->dropped_records : 0;
  o[field::duration_us] = session_duration_us(c);

  json::array stages;
  for (const stage* s : stages_in_time_order(c)) {
    auto leg = tls_stage_leg(c, *s);
    stages.push_back(json::object{{field::name, protocol::to_string(s->ph)},
                                  {field::leg, leg ? json::value(protocol::to_string(*leg)) : json::value(nullptr)},
                                  {field::start_us, s->start_us},
                                  {field::duration_us, s->duration_us},
                                  {field::upstream_us, s->upstream_us},
                                  {field::relay_us, s->relay_us},
                                  {field::think_us, s->think_us},
                                  {field::client_us, s->client_us}});
  }
  o["stages"] = std::move(stages);

  json::array transactions;
  for (const transaction& t : c.transactions) {
    json::object x;
    x[field::mail_from] = utf8(t.mail_from);
    json::array rcpt_to;
    for (const auto& r : t.rcpt_to) rcpt_to.emplace_back(utf8(r));
    x[field::rcpt_to] = std::move(rcpt_to);
    x[field::rcpt_codes] = json::value_from(t.rcpt_codes);
    x[field::message_id] = or_null(t.message_id);
    x[field::size] = t.size;
    if (t.final_reply)
      x[field::final_reply] = json::object{{field::code, t.final_reply->code},
                                      {field::enhanced, utf8(t.final_reply->enhanced)},
                                      {field::text, utf8(t.final_reply->text)}};
    else
      x[field::final_reply] = nullptr;
    x[field::outcome] = protocol::to_string(t.result);
    x[field::synthesized] = t.synthesized;
    x[field::without_mail] = t.without_mail;
    x[field::start_us] = t.start_us;
    x[field::end_us] = t.end_us;
    x["rebuilt"] = t.rebuilt;   // not a record: an incomplete capture's open transaction
    transactions.push_back(std::move(x));
  }
  o["transactions"] = std::move(transactions);

  json::array events;
  for (std::size_t i : time_order(c)) events.push_back(event_json(c.events[i]));
  o["events"] = std::move(events);
  return json::serialize(o);
}

}  // namespace mailtap::captures

namespace mailtap::captures {

std::string utf8_safe(std::string_view s) { return utf8(s); }

}  // namespace mailtap::captures
