// Builds a replay script from a capture. The client leg is read at the byte level, because a
// replay must send what the client sent and play what it heard, exactly: its incoming bytes
// are cut into steps (captures/client_steps.hpp, the cutter `mailtap show` uses: command lines;
// after a 354 the message up to CRLF.CRLF, RFC 5321 4.1.1.4; a BDAT line with its counted
// payload, RFC 3030; after a 334 an AUTH response), and its outgoing bytes are parsed
// into replies (protocol/reply.hpp). The n-th step gets the (n+1)-th reply (the greeting is
// the first): replies go out strictly in command order (RFC 2920). Who made each reply comes
// from diagnose/conversation.hpp, which matches the relay's own replies to their fault records.
#include "replay/script.hpp"

#include <algorithm>
#include <iterator>

#include "captures/client_steps.hpp"
#include "captures/show.hpp"
#include "diagnose/conversation.hpp"
#include "protocol/action.hpp"
#include "protocol/data_framer.hpp"
#include "protocol/fault.hpp"
#include "replay/unforwarded_line.hpp"

namespace mailtap::replay {

std::string_view to_string(reply_source s) {
  switch (s) {
    case reply_source::server: return "server";
    case reply_source::edited: return "edited";
    case reply_source::relay: return "relay";
    case reply_source::injected: return "injected";
  }
  return "server";
}

namespace {

using protocol::direction;
using protocol::leg;

// One direction of the client leg as one stream, with the time of the read (or write) that
// carried each byte, and how much the relay had sent upstream when that read was recorded.
struct timed_stream {
  std::string bytes;
  std::vector<std::pair<std::size_t, std::uint64_t>> chunk_ends;   // (end offset, t_us), ascending
  std::vector<std::size_t> upstream_before;                         // per chunk: upstream/out bytes before its record

  void add(std::string_view data, std::uint64_t t_us, std::size_t upstream_sent = 0) {
    if (data.empty()) return;
    bytes.append(data);
    chunk_ends.emplace_back(bytes.size(), t_us);
    upstream_before.push_back(upstream_sent);
  }
  std::size_t chunk_of(std::size_t offset) const {
    auto it = std::upper_bound(chunk_ends.begin(), chunk_ends.end(), offset,
                               [](std::size_t o, const auto& c) { return o < c.first; });
    return static_cast<std::size_t>(it - chunk_ends.begin());
  }
  std::uint64_t time_at(std::size_t offset) const {
    const std::size_t i = chunk_of(offset);
    return i == chunk_ends.size() ? (chunk_ends.empty() ? 0 : chunk_ends.back().second) : chunk_ends[i].second;
  }
  // How many bytes the relay had sent upstream when the record holding byte `offset` was written.
  std::size_t upstream_at(std::size_t offset) const {
    const std::size_t i = chunk_of(offset);
    return i == upstream_before.size() ? (upstream_before.empty() ? 0 : upstream_before.back()) : upstream_before[i];
  }
};

// A reply the relay itself wrote to the client, as diagnose/conversation.cpp attributes it.
struct relay_made {
  std::uint64_t t_us;
  int code;
  reply_source source;
  const captures::fault_event* fault;
  // The destination's reply an edit was made from, or the one it gave the relay's STARTTLS.
  const captures::reply_event* original;
  bool claimed = false;
};

// The relay's own answer to the client's STARTTLS when it secured the upstream leg first
// (README "Captures": it sends the client's STARTTLS on, and answers the client itself once
// its own handshake ended): the destination's reply to that STARTTLS is the exchange just
// before it (S< 220, or the 454 the relay then passed on as its own words).
bool answers_upstream_starttls(const diagnose::exchange& x, const diagnose::exchange* previous) {
  return x.source == diagnose::origin::relay && previous && previous->reply->leg == leg::upstream &&
         previous->ph == protocol::phase::starttls;
}

std::vector<relay_made> relay_replies(const diagnose::conversation& conv) {
  std::vector<relay_made> out;
  const diagnose::exchange* previous = nullptr;
  for (const auto& x : conv.exchanges) {
    if (x.reply->leg == leg::client) {
      reply_source s = x.edit ? reply_source::edited
                       : x.source == diagnose::origin::injected ? reply_source::injected
                                                                 : reply_source::relay;
      const bool keeps_original = x.edit || answers_upstream_starttls(x, previous);
      out.push_back({x.reply->t_us, x.reply->reply.code, s, x.fault, keeps_original ? previous->reply : nullptr});
    }
    previous = &x;
  }
  return out;
}

void attribute(recorded_reply& r, std::vector<relay_made>& made) {
  for (auto& m : made) {
    if (m.claimed || m.t_us != r.t_us || m.code != r.reply.code) continue;
    m.claimed = true;
    r.source = m.source;
    if (m.original) {
      r.server_reply = m.original->reply;
      r.server_reply->raw.clear();   // rebuilt by the reader: not bytes that were on the wire
    }
    if (m.fault) {
      r.rule = m.fault->fault.rule;
      r.fault_detail = m.fault->fault.detail;
    }
    return;
  }
}

// The replies the client received, in order, each with the time of the write that finished it.
bool client_replies(const captures::capture& c, std::vector<recorded_reply>& out, std::string& error) {
  protocol::reply_parser parser;
  std::vector<protocol::reply> done;
  for (const auto& e : c.events) {
    const auto* b = std::get_if<captures::bytes_event>(&e);
    if (!b || b->leg != leg::client || b->dir != direction::out) continue;
    auto status = parser.feed(b->data, done);
    for (auto& r : done) {
      recorded_reply rec;
      rec.reply = std::move(r);
      rec.t_us = b->t_us;
      out.push_back(std::move(rec));
    }
    done.clear();
    if (status != protocol::reply_parse_status::ok) {
      error = "the replies to the client cannot be parsed (" + std::string(protocol::to_string(status)) + ")";
      return false;
    }
  }
  return true;
}

// Cuts the client's bytes into steps (captures/client_steps.hpp: as the relay read them, and as
// `mailtap show` cuts them), each with its reply; returns where each starts (the unfinished one
// last).
std::vector<std::size_t> cut_steps(script& s, const timed_stream& in, const std::vector<recorded_reply>& replies,
                                   protocol::bare_eol_mode eol) {
  std::vector<int> codes;
  codes.reserve(replies.size());
  for (const auto& r : replies) codes.push_back(r.reply.code);
  std::vector<std::size_t> starts;
  for (const auto& cut : captures::cut_client_steps(in.bytes, codes, eol)) {
    starts.push_back(cut.begin);
    step st;
    st.bytes = in.bytes.substr(cut.begin, cut.end - cut.begin);
    st.sent_us = in.time_at(cut.begin);
    st.done_us = in.time_at(cut.end - 1);
    const std::size_t answer = s.steps.size() + 1;   // the greeting answers no step
    const recorded_reply* reply = answer < replies.size() ? &replies[answer] : nullptr;
    if (cut.kind == captures::client_step_kind::message) {
      st.kind = step_kind::message;
      st.ph = protocol::phase::data_end;
      st.text = message_text(st.bytes.size(), cut.unfinished);
    } else {
      st.ph = cut.ph;
      st.text = protocol::escape_bytes(cut.line(in.bytes), 1000);
      st.auth = st.ph == protocol::phase::auth;
      if (cut.kind == captures::client_step_kind::auth_response) st.kind = step_kind::auth_response;
      if (cut.kind == captures::client_step_kind::bdat) {
        st.kind = step_kind::bdat;
        st.text += " [chunk: " + std::to_string(cut.bdat_size) + " bytes]";
        st.last_chunk = cut.bdat_last;
      }
      if (st.ph == protocol::phase::starttls && reply && reply->reply.code == 220) st.starts_tls = true;
      if (cut.unfinished) st.text += " (unfinished: " + std::to_string(st.bytes.size()) + " bytes)";
    }
    if (!cut.unfinished) {
      if (reply) st.reply = *reply;
      s.steps.push_back(std::move(st));
    } else {
      // What came after the last complete step stays unsolicited (a 421 at a timeout): no
      // reply answers bytes that never made a whole step.
      st.unfinished = true;
      s.unfinished = std::move(st);
    }
  }
  return starts;
}

std::string common_prefix(std::string_view a, std::string_view b) {
  const auto diff = std::mismatch(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(std::min(a.size(), b.size())), b.begin());
  return std::string(a.begin(), diff.first);
}

// The notes the relay writes on a message or BDAT chunk it did not send the destination whole
// (protocol/relay_fsm.cpp, protocol/fault_holds.cpp), as it writes them: a constant where
// protocol/ has one, else the fixed text around the rule, the reason or the figure it names.
// Only these are a reason: another note in the window (a TLS renegotiation the relay refused on
// the upstream leg, an unsolicited upstream reply dropped) says nothing of the message.
struct withheld_note {
  std::string_view prefix;
  std::string_view suffix;   // empty: the prefix is the whole note
};
constexpr withheld_note withheld_notes[] = {
    // the relay refused it (bare CR or LF, NUL under bare_eol strict)
    {"message refused: ", "; upstream closed without end of data"},
    {"command refused: BDAT, which the destination did not offer (no CHUNKING in its EHLO reply); session closed", ""},
    // a fault: split_dot_withhold, one failing it after its body, one answering it itself
    {protocol::note_split_dot_withheld, ""},
    {"fault ", " fails this message after its body: the dot is withheld and the upstream closed"},
    {"fault ", " answers this message itself: the upstream gets RSET, never the message"},
    {"blackhole ", ": the relay answered 250 itself; nothing was delivered"},
    {"client connection lost", " while a fault held the end of data: upstream closed without it; nothing delivered"},
    {"client closed its connection", " while a fault held the end of data: upstream closed without it; nothing delivered"},
    {"the session ended while a delay fault held this command: it was never forwarded", ""},
    // the session ended inside it
    {"client closed the connection inside the message: upstream closed without end of data", ""},
    {"shutdown deadline passed inside the message: upstream closed without end of data", ""},
    {"capture cannot be written: end of data withheld, upstream closed", ""},
    {"capture cannot be written: the last BDAT chunk is withheld, upstream closed", ""},
    {"the message failed", " more bytes of it came without its end"},
    // the upstream answered early, or was lost (upstream_lost: its reason, then the detail)
    {"upstream replied ", ": nothing more is forwarded, the upstream leg is closed"},
    {"upstream_closed: ", ""},
    {"upstream_timeout: ", ""},
    {"upstream_protocol_error: ", ""},
    {"upstream_closed during a stall: ", ""},
    {"upstream_timeout during a stall: ", ""},
    {"upstream_protocol_error during a stall: ", ""},
};

bool is_withheld_note(std::string_view text) {
  for (const auto& n : withheld_notes) {
    if (n.suffix.empty()) {
      // A whole note, or a prefix the relay follows with its detail (ending in ": ").
      if (n.prefix.ends_with(": ") ? text.starts_with(n.prefix) : text == n.prefix) return true;
    } else if (text.size() >= n.prefix.size() + n.suffix.size() && text.starts_with(n.prefix) &&
               text.ends_with(n.suffix)) {
      return true;
    }
  }
  return false;
}

// What the capture says of a message or chunk the destination never got whole: the relay's
// note on it (from the step before it, where a fault that answers a message itself notes
// that, to its reply or the session's end), else who answered it instead.
std::string why_withheld(const step& st, const step* before, const std::vector<captures::note_event>& notes,
                         const script& s) {
  const std::uint64_t from = before ? before->sent_us : st.sent_us;
  const std::uint64_t to = st.reply ? st.reply->t_us : s.end_us ? s.end_us : UINT64_MAX;
  for (const auto& n : notes) {
    if (n.t_us < from || n.t_us > to) continue;
    if (is_withheld_note(n.text)) return "the relay noted: " + n.text;
  }
  if (st.reply && st.reply->source == reply_source::injected)
    return "the fault rule '" + st.reply->rule + "' answered it " + std::to_string(st.reply->reply.code);
  for (const auto& f : s.faults)
    if (f.t_us >= from && f.t_us <= to && f.fault.decision != "proceed" && f.fault.decision != "rewrite" &&
        f.fault.decision != "plan")
      return "the fault rule '" + f.fault.rule + "': " + f.fault.decision + " at " +
             std::string(protocol::to_string(f.fault.ph));
  if (st.reply && st.reply->source == reply_source::relay)
    return "the relay answered it " + std::to_string(st.reply->reply.code) + " itself";
  return s.end_reason.empty() ? "the capture ends inside it" : "the session ended: " + s.end_reason;
}

// A message as the relay sends it on: framed in the capture's bare_eol mode, its end ".\r\n"
// once found; after a refusal (a bare CR or LF or a NUL under strict), what went before it.
// A `complete` message (a step cut whole, not the script's unfinished one) ended where
// its bytes end: the relay, in an older normalize capture, ended "hello\r.\r" on the client's
// next byte, which is the next step's (data_framer::end_of_complete_input).
// `refused` is kept beside the copy: an empty copy does not tell a message the relay refused
// at its first byte from an unfinished one the client sent nothing of.
struct relay_copy {
  std::string bytes;
  bool refused = false;
};
relay_copy copy_relayed(std::string_view message, protocol::bare_eol_mode eol, bool complete) {
  relay_copy out;
  protocol::data_framer framer(eol);
  framer.feed(message, out.bytes);
  if (complete) framer.end_of_complete_input();
  out.refused = framer.fault() != protocol::data_fault::none;
  if (framer.ended() && !out.refused) out.bytes += ".\r\n";
  return out;
}

// The script's steps, then its unfinished one.
std::vector<step*> all_steps(script& s) {
  std::vector<step*> steps;
  for (auto& st : s.steps) steps.push_back(&st);
  if (s.unfinished) steps.push_back(&*s.unfinished);
  return steps;
}

// Each message step framed once, as the relay sent it on (the same index as `steps`; other
// steps have none): what its relayed copy keeps, and what mark_withheld looks for upstream.
std::vector<std::optional<relay_copy>> relay_copies(const std::vector<step*>& steps, protocol::bare_eol_mode eol) {
  std::vector<std::optional<relay_copy>> copies(steps.size());
  for (std::size_t i = 0; i < steps.size(); ++i)
    if (steps[i]->kind == step_kind::message) copies[i] = copy_relayed(steps[i]->bytes, eol, !steps[i]->unfinished);
  return copies;
}

// Keeps each whole message's relayed copy (step::relayed), once mark_withheld has compared the
// copies with the upstream leg: a withheld message has none (`forwarded` is what went), and an
// unfinished one is sent as recorded.
void keep_relayed_messages(const std::vector<step*>& steps, std::vector<std::optional<relay_copy>>& copies) {
  for (std::size_t i = 0; i < steps.size(); ++i)
    if (copies[i] && !copies[i]->refused && !steps[i]->unfinished && !steps[i]->withheld &&
        !steps[i]->answered_by_fault)
      steps[i]->relayed = std::move(copies[i]->bytes);
}

// The steps the relay sent the destination its own command in place of (step::sent_in_place):
// where a fault rule answers a message itself, the relay sends RSET upstream where the client sent
// DATA, or its first BDAT chunk (protocol/fault_holds.cpp plan_end_of_data), and records it right
// after the client's command, at the same time (captures/FORMAT.md `command`). Where the
// destination answered it, the pairing names the client's command it went in place of
// (diagnose/conversation.hpp `in_place_of`), with the destination's reply to it; where the session
// ended first (the destination closed, or never answered), no reply pairs them, and the records
// alone say it, by the same rule (captures/reply_pairing.hpp): `in_place_reply` is then none. The
// message after such a DATA, and the chunks of such a BDAT message after it, never went: the
// destination had no message open (step::answered_by_fault).
// The client's line steps are its `command` records, one per line, in order.
void mark_sent_in_place(const captures::capture& c, const diagnose::conversation& conv, const std::vector<step*>& steps) {
  std::vector<const captures::command_event*> client_lines;
  for (const auto& e : c.events)
    if (const auto* cmd = std::get_if<captures::command_event>(&e))
      if (cmd->leg == leg::client && cmd->dir == direction::in) client_lines.push_back(cmd);
  std::vector<step*> line_steps;
  for (step* st : steps)
    if (st->kind != step_kind::message && !st->unfinished) line_steps.push_back(st);
  auto mark = [&](const captures::command_event* client_line, const captures::command_event& relay_command,
                  const captures::reply_event* answer) {
    const auto at = std::find(client_lines.begin(), client_lines.end(), client_line);
    const auto k = static_cast<std::size_t>(at - client_lines.begin());
    if (at == client_lines.end() || k >= line_steps.size()) return;
    step& st = *line_steps[k];
    const bool data = st.kind == step_kind::command && st.ph == protocol::phase::data;
    if (!data && st.kind != step_kind::bdat) return;
    if (!st.sent_in_place.empty()) return;
    st.sent_in_place = relay_command.text + "\r\n";
    if (answer) {
      st.in_place_reply = answer->reply;
      st.in_place_reply->raw.clear();   // rebuilt by the reader: not bytes that were on the wire
      // What the client heard was the relay's (its 354, its 250 to a chunk): it stood for this one.
      if (st.reply && st.reply->source == reply_source::relay && !st.reply->server_reply)
        st.reply->server_reply = st.in_place_reply;
    }
    const auto self = std::find(steps.begin(), steps.end(), &st);
    bool last = st.kind == step_kind::bdat && st.last_chunk;
    for (auto it = self + 1; it != steps.end() && !last; ++it) {
      step& later = **it;
      if (data ? later.kind != step_kind::message : later.kind != step_kind::bdat) break;
      later.answered_by_fault = true;
      last = data || later.last_chunk;
    }
  };
  for (const auto& x : conv.exchanges) {
    if (!x.in_place_of || !x.command || x.command->leg != leg::upstream || x.reply->leg != leg::upstream) continue;
    mark(x.in_place_of, *x.command, x.reply);
  }
  // Unanswered: a relay command recorded right after a client's command, at its time, that no
  // reply answers (a trial: the destination closed on the relay's RSET, and the replay sent DATA
  // and closed the connection inside the message).
  const captures::command_event* before = nullptr;
  for (const captures::event* e : conv.timeline) {
    const auto* cmd = std::get_if<captures::command_event>(e);
    if (!cmd) continue;
    const bool relays_own = cmd->leg == leg::upstream && cmd->dir == direction::out;
    if (relays_own && before && before->leg == leg::client && before->dir == direction::in &&
        before->t_us == cmd->t_us &&
        std::none_of(conv.exchanges.begin(), conv.exchanges.end(), [&](const auto& x) { return x.command == cmd; }))
      mark(before, *cmd, nullptr);
    before = cmd;
  }
}

// A delay fault held the end of this message or chunk when the destination's reply came: its
// record (protocol/fault_holds.cpp drop_held_dot) says so, written as the reply answered it.
bool end_held_when_answered(const script& s, const step& st, const step* before) {
  const std::uint64_t from = before ? before->sent_us : st.sent_us;
  return std::any_of(s.faults.begin(), s.faults.end(), [&](const captures::fault_event& f) {
    return f.t_us >= from && f.t_us <= st.reply->t_us && protocol::held_end_never_forwarded(f.fault);
  });
}

// Marks the messages and BDAT chunks whose end never went to the destination (step::withheld),
// from the capture's upstream leg (`upstream`: every upstream/out byte in file order), where
// the recording holds no reply of the destination to them.
void mark_withheld(const script& s, const std::vector<step*>& steps, const std::vector<std::optional<relay_copy>>& copies,
                   const std::vector<std::size_t>& starts, const timed_stream& in, const std::string& upstream,
                   const std::vector<captures::note_event>& notes) {
  for (std::size_t i = 0; i < steps.size() && i < starts.size(); ++i) {
    step& st = *steps[i];
    if (st.kind != step_kind::message && st.kind != step_kind::bdat) continue;
    const step* before = i > 0 ? steps[i - 1] : nullptr;
    // The destination's own reply (an early refusal in the middle of a message, say) is
    // what a replay compares. (Only its own: the relay edits no reply to a message or chunk.)
    // Not where a delay fault held the end when it came (its 421 at its own timeout, say): the
    // end never went, and a replay that sent it would deliver what the destination never got
    // (a hostile trial: smtp-sink queued it).
    if (st.reply && st.reply->source == reply_source::server && !end_held_when_answered(s, st, before)) continue;
    // The destination got the relay's RSET in this chunk's place, or none of a message a fault
    // answered itself (mark_sent_in_place): nothing of it was withheld from a message it had open.
    if (!st.sent_in_place.empty()) continue;
    if (st.answered_by_fault) {
      st.withheld_why = why_withheld(st, before, notes, s);
      continue;
    }
    // The relay sends its copy of a message, or of a chunk's payload, after it records the
    // client's bytes (captures/FORMAT.md `bytes_ref`), and a command line before.
    const std::size_t sent_before = std::min(in.upstream_at(starts[i]), upstream.size());
    std::string_view expected;
    std::string_view window;
    bool refused = false;
    if (st.kind == step_kind::message) {
      expected = copies[i]->bytes;
      refused = copies[i]->refused;
      // Its DATA was answered 354 by the destination: the relay is in the message upstream,
      // and what it sends next is its copy. A 354 of the relay's own (a fault that answers the
      // message itself) means the upstream never saw DATA.
      const protocol::reply* go = before && before->reply ? before->reply->destination_reply() : nullptr;
      if (go && go->code == 354) window = std::string_view(upstream).substr(sent_before);
    } else {
      expected = st.bytes;
      const std::size_t crlf = st.bytes.find("\r\n");
      const std::string_view line = std::string_view(st.bytes).substr(0, crlf == std::string::npos ? 0 : crlf + 2);
      if (!line.empty() && sent_before >= line.size() &&
          upstream.compare(sent_before - line.size(), line.size(), line) == 0)
        window = std::string_view(upstream).substr(sent_before - line.size());
    }
    if (!refused && window.starts_with(expected)) continue;   // all of it went, its end included
    st.withheld = true;
    st.forwarded = common_prefix(window, expected);
    st.withheld_why = why_withheld(st, before, notes, s);
  }
}

// What the relay did with the steps after the last one answered (step::read_by_relay,
// went_upstream; every step where none was, the greeting having ended the session): the lines it
// took are the first `lines_read` line steps, as it records one `command` per line in order; what
// it sent on is each step's copy found in order among the upstream bytes sent since the read
// before the one that brought the last answered step. The copies of the steps that read brought
// before the last answered one are taken first, in order, so that a later step repeating one of
// them (a second RCPT TO:<x>) is not taken for sent on by its earlier copy; of those, only the
// ones the destination answered, since one the relay or a fault answered itself may never have
// gone on; and a line the relay never read (past its `lines_read`) never went on, whatever copy
// the upstream bytes hold.
void mark_what_the_relay_did_after_the_last_reply(const std::vector<step*>& steps, const std::vector<std::size_t>& starts,
                                                  const timed_stream& in, const std::string& upstream,
                                                  std::size_t lines_read) {
  const auto answered = std::find_if(steps.rbegin(), steps.rend(), [](const step* st) { return st->reply.has_value(); });
  const std::size_t first = static_cast<std::size_t>(steps.rend() - answered);   // the first step after it
  const std::size_t from = first == 0 ? 0 : first - 1;                            // the copies looked for from it
  if (from >= starts.size()) return;
  const std::size_t chunk = in.chunk_of(starts[from]);
  std::size_t cursor = chunk == 0 ? 0 : std::min(in.upstream_before[chunk - 1], upstream.size());
  std::size_t line = 0;
  for (std::size_t j = 0; j < steps.size(); ++j) {
    step& st = *steps[j];
    const bool is_line = st.kind != step_kind::message && !st.unfinished;
    const bool line_read = is_line && line < lines_read;
    if (j >= first) st.read_by_relay = line_read;
    if (is_line) ++line;
    if (j < from && (j >= starts.size() || in.chunk_of(starts[j]) < chunk)) continue;
    // An earlier step of that read the relay or a fault answered itself may never have gone on:
    // looking for its copy could take a later identical line's, which did.
    if (j < from && st.reply && st.reply->source != reply_source::server && st.reply->source != reply_source::edited &&
        !st.withheld)
      continue;
    // What of a withheld message or chunk went; a message as the relay framed it; a line without
    // its CRLF never goes on.
    const std::string_view copy = st.withheld                                   ? std::string_view(st.forwarded)
                                  : st.kind == step_kind::message               ? std::string_view(st.relayed)
                                  : st.unfinished && st.kind != step_kind::bdat ? std::string_view{}
                                                                                : std::string_view(st.bytes);
    if (copy.empty()) continue;
    const std::size_t at = upstream.find(copy, cursor);
    if (at == std::string::npos) continue;
    if (is_line && !line_read) continue;   // never read, so never sent on: the copy is another's
    cursor = at + copy.size();
    if (j >= first) st.went_upstream = st.read_by_relay = true;
  }
}

// What the recording shows the relay never sent on, whatever the step held (step::not_forwarded).
void mark_not_forwarded(const script& s, const std::vector<step*>& steps) {
  // A fault rule made the greeting (a reply fault at connect or banner): nothing the client sent
  // went to the destination. After a 5xx greeting the relay answers every command itself, 503,
  // and QUIT 221 (RFC 5321 3.1); after another it ended the session (protocol/fault_holds.cpp).
  if (s.banner && s.banner->source == reply_source::injected) {
    const int code = s.banner->reply.code;
    const std::string greeting =
        "the fault rule '" + s.banner->rule + "' answered the recorded session with its greeting " +
        std::to_string(code) +
        (code / 100 == 5 ? " (RFC 5321 3.1: the relay then answers every command itself, 503, and QUIT 221)" : "") +
        ", and nothing the client sent went to the destination; ";
    for (step* st : steps)
      st->not_forwarded = greeting + (st->reply ? "the relay had read this step and answered it itself (" +
                                                      std::to_string(st->reply->reply.code) +
                                                      "), never sending it on"
                                      : st->read_by_relay ? "the relay had read this step and never sent it on"
                                                          : "the relay never read this step");
    return;
  }
  // The relay reads nothing after a QUIT it took (protocol/relay_fsm.cpp ignore_after_quit: the
  // bytes are recorded, never relayed).
  bool after_quit = false;
  for (step* st : steps) {
    if (after_quit && !st->reply)
      st->not_forwarded = "the recorded client sent it after QUIT, which ends the session (RFC 5321 4.1.1.10); the "
                          "relay never read this step, nor did the destination get it";
    after_quit = after_quit || (st->kind == step_kind::command && st->ph == protocol::phase::quit && !st->unfinished &&
                                why_never_forwarded(st->bytes).empty());
  }
}

// The relay's 421 that stands for the destination's close (recorded_reply::stands_for_close): the
// session ended upstream_closed, and the last reply the client heard was the relay's own 421
// (protocol/relay_fsm.cpp upstream_lost: to the command that waited, or, with none waiting,
// "closing: upstream connection is closed"). A timeout or a protocol error of the upstream's
// ends the session otherwise (upstream_timeout, upstream_protocol_error): the destination did
// not close there.
void mark_the_relays_stand_in_for_the_close(script& s) {
  if (s.end_reason != "upstream_closed") return;
  recorded_reply* last = s.unsolicited.empty() ? nullptr : &s.unsolicited.back();
  for (auto it = s.steps.rbegin(); !last && it != s.steps.rend(); ++it)
    if (it->reply) last = &*it->reply;
  if (!last && s.banner) last = &*s.banner;
  if (last && last->source == reply_source::relay && last->reply.code == 421) last->stands_for_close = true;
}

// How many replies had reached the client before each step left it (pipelining, RFC 2920).
void count_awaited(const script& s, const std::vector<step*>& steps) {
  std::vector<std::uint64_t> reply_times;
  if (s.banner) reply_times.push_back(s.banner->t_us);
  for (const auto* st : steps)
    if (st->reply) reply_times.push_back(st->reply->t_us);
  for (std::size_t i = 0; i < steps.size(); ++i) {
    auto& st = *steps[i];
    std::size_t before = 0;
    for (auto t : reply_times) before += t < st.sent_us ? 1 : 0;
    // A step cannot wait for its own reply or a later one; nor come before an earlier step's wait.
    st.awaits = std::min(before, i + 1);
    if (i > 0) st.awaits = std::max(st.awaits, steps[i - 1]->awaits);
  }
}

}  // namespace

std::string message_text(std::size_t step_bytes, bool unfinished) {
  constexpr std::size_t ending = 3;   // ".\r\n"
  const std::size_t body = unfinished ? step_bytes : step_bytes - std::min(step_bytes, ending);
  return "[message body: " + std::to_string(body) + " bytes" + (unfinished ? ", unfinished]" : "]");
}

std::optional<script> build_script(const captures::capture& c, std::string& error) {
  script s;
  s.session = c.header.session;
  s.path = c.path.string();
  if (c.end) {
    s.end_reason = c.end->reason;
    s.end_us = c.end->t_us;
  }
  timed_stream in;
  std::string upstream;   // what the relay sent the destination, in file order
  std::vector<captures::note_event> notes;
  std::size_t lines_read = 0;   // the relay's `command` records of the client's lines
  bool first_client_byte_seen = false;
  for (const auto& e : c.events) {
    if (const auto* b = std::get_if<captures::bytes_event>(&e)) {
      if (b->leg == leg::client && b->dir == direction::in) {
        in.add(b->data, b->t_us, upstream.size());
        first_client_byte_seen = true;
      } else if (b->leg == leg::upstream && b->dir == direction::out) {
        upstream.append(b->data);
      }
    } else if (const auto* cmd = std::get_if<captures::command_event>(&e)) {
      if (cmd->leg == leg::client && cmd->dir == direction::in) ++lines_read;
    } else if (const auto* t = std::get_if<captures::tls_event>(&e)) {
      if (t->leg == leg::client && !first_client_byte_seen) s.implicit_tls = true;
    } else if (const auto* f = std::get_if<captures::fault_event>(&e)) {
      s.faults.push_back(*f);
    } else if (const auto* n = std::get_if<captures::note_event>(&e)) {
      notes.push_back(*n);
    }
  }
  // A normalize_to this mailtap does not know (a later writer's) names a framing it cannot
  // follow: refused, rather than replayed as the older one.
  if (!c.header.normalize_to.empty() && c.header.normalize_to != "space") {
    error = c.path.string() + ": the header's normalize_to '" + captures::terminal_safe(c.header.normalize_to) +
            "' is no framing this mailtap knows (\"space\", or none)";
    return std::nullopt;
  }
  // How the relay read bare CR and LF in a message (captures/client_steps.hpp message_framing:
  // an older normalize capture, without normalize_to, replays as it was read, bare CR and LF
  // line endings).
  const auto eol = captures::message_framing(c.header);
  s.bare_eol = eol;
  std::vector<recorded_reply> replies;
  if (!client_replies(c, replies, error)) {
    error = c.path.string() + ": " + error;
    return std::nullopt;
  }
  const auto conv = diagnose::read_conversation(c);
  auto made = relay_replies(conv);
  for (auto& r : replies) attribute(r, made);
  if (!replies.empty()) s.banner = replies.front();
  const std::vector<std::size_t> starts = cut_steps(s, in, replies, eol);
  const std::vector<step*> steps = all_steps(s);
  auto copies = relay_copies(steps, eol);   // each message framed once
  mark_sent_in_place(c, conv, steps);
  mark_withheld(s, steps, copies, starts, in, upstream, notes);
  keep_relayed_messages(steps, copies);
  mark_what_the_relay_did_after_the_last_reply(steps, starts, in, upstream, lines_read);
  mark_not_forwarded(s, steps);
  const std::size_t answered = 1 + s.steps.size();
  if (replies.size() > answered)
    s.unsolicited.assign(replies.begin() + static_cast<std::ptrdiff_t>(answered), replies.end());
  mark_the_relays_stand_in_for_the_close(s);
  for (const auto& st : s.steps) {   // an unfinished AUTH line is no AUTH
    s.starttls = s.starttls || st.starts_tls;
    s.auth = s.auth || st.auth;
  }
  count_awaited(s, steps);
  return s;
}

}  // namespace mailtap::replay
