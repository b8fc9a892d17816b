// Rebuilds an incomplete capture's open transaction (open_transaction.hpp) from its commands
// and the replies they got (reply_pairing.hpp).
#include "captures/open_transaction.hpp"

#include <algorithm>

#include "captures/reply_pairing.hpp"
#include "protocol/command.hpp"
#include "protocol/header_scanner.hpp"

namespace mailtap::captures {

namespace {

bool ends_transaction(protocol::phase ph) {
  using protocol::phase;
  return ph == phase::data_end || ph == phase::rset || ph == phase::ehlo || ph == phase::helo || ph == phase::quit;
}

struct open_state {
  const command_event* mail = nullptr;
  std::vector<int> rcpt_codes;           // the recipients' replies, in order
  const event* data_from = nullptr;     // the 354 the body follows
  // The destination's reply to the message's end, recorded as it came but never passed on (a
  // delay fault held it when the relay stopped): a passed-on one has its transaction record.
  const reply_event* end_answer = nullptr;
};

// The reply to the message's end (the dot, BDAT ... LAST) is the destination's own.
bool from_destination(const reply_event& r) {
  return r.leg == protocol::leg::upstream && r.dir == protocol::direction::in;
}

// A reply the end of data can have (RFC 5321 4.3.2): 250, or a failure. Another (a 221) the relay
// never passes on: the message's fate is unknown (protocol/relay_fsm.cpp not_a_reply_to).
bool answers_end(int code) { return code == 250 || code / 100 == 4 || code / 100 == 5; }

}  // namespace

std::optional<transaction> rebuild_open_transaction(const capture& c) {
  if (c.end) return std::nullopt;
  const auto timeline = timeline_of(c);
  std::optional<open_state> open;
  for (const auto& p : pair_replies(timeline)) {
    if (p.edit) continue;
    const int code = p.reply->reply.code;
    if (p.ph == protocol::phase::data_end || (p.command && p.command->leg == protocol::leg::client)) {
      const auto cmd = p.command ? protocol::parse_command(p.command->text).cmd : protocol::command{};
      if (p.ph == protocol::phase::mail) {
        open.reset();
        if (code / 100 == 2) {
          open.emplace();
          open->mail = p.command;
        }
      } else if (!open) {
        continue;
      } else if (p.ph == protocol::phase::rcpt) {
        open->rcpt_codes.push_back(code);
      } else if (p.ph == protocol::phase::data) {
        if (code == 354) {
          const event* e = nullptr;
          for (const event* t : timeline)
            if (std::get_if<reply_event>(t) == p.reply) e = t;
          open->data_from = e;
        } else {
          open.reset();
        }
      } else if (p.ph == protocol::phase::bdat) {
        if (cmd.bdat_last && from_destination(*p.reply)) {
          if (answers_end(code)) open->end_answer = p.reply;
        } else if (cmd.bdat_last || code / 100 != 2) {
          open.reset();
        }
      } else if (p.ph == protocol::phase::data_end && from_destination(*p.reply)) {
        if (answers_end(code)) open->end_answer = p.reply;
      } else if (ends_transaction(p.ph)) {
        open.reset();
      }
    }
  }
  if (!open) return std::nullopt;   // a MAIL not answered yet opened nothing
  for (const auto& t : c.transactions)
    if (t.start_us >= open->mail->t_us) return std::nullopt;   // its record is there

  transaction t;
  t.rebuilt = true;
  const auto mail = protocol::parse_command(open->mail->text).cmd;
  t.mail_from = mail.address.value_or(mail.argument);
  t.rcpt_codes = open->rcpt_codes;
  t.start_us = open->mail->t_us;
  std::uint64_t last = 0;
  for (const auto& e : c.events) last = std::max(last, event_time(e));
  for (const auto& s : c.stages) last = std::max(last, s.start_us + s.duration_us);
  t.end_us = std::max(last, t.start_us);

  // From the MAIL on: every recipient asked for (those not answered yet have no code, and
  // come last: replies come in command order), the body as received, and whether its end
  // went upstream: the dot after the 354, or anything after a BDAT LAST.
  bool after_mail = false, past_354 = false, in_body = false, past_bdat_last = false;
  bool end_went_upstream = false;
  bool end_went_before_answer = false;   // the destination's reply to the end came after the end went
  std::string client_tail, upstream_tail;   // the last five bytes, to recognise the terminator
  const auto keep_tail = [](std::string& tail, const std::string& more) {
    tail += more.size() > 5 ? more.substr(more.size() - 5) : more;
    if (tail.size() > 5) tail.erase(0, tail.size() - 5);
  };
  protocol::header_scanner headers;
  for (const event* e : timeline) {
    if (!after_mail) {
      after_mail = std::get_if<command_event>(e) == open->mail;
      continue;
    }
    if (e == open->data_from) {
      past_354 = in_body = true;
      continue;
    }
    if (const auto* cmd = std::get_if<command_event>(e); cmd && cmd->leg == protocol::leg::client) {
      const auto parsed = protocol::parse_command(cmd->text).cmd;
      if (parsed.ph == protocol::phase::rcpt && !past_354) t.rcpt_to.push_back(parsed.address.value_or(parsed.argument));
      if (parsed.ph == protocol::phase::bdat) {
        t.size += parsed.bdat_size;
        past_bdat_last = past_bdat_last || parsed.bdat_last;
      }
      continue;
    }
    if (const auto* r = std::get_if<reply_event>(e)) {
      in_body = false;
      if (r == open->end_answer) end_went_before_answer = end_went_upstream;
    }
    const auto* bytes = std::get_if<bytes_event>(e);
    if (!bytes) continue;
    if (in_body && bytes->leg == protocol::leg::client && bytes->dir == protocol::direction::in) {
      t.size += bytes->data.size();
      headers.feed(bytes->data);
      keep_tail(client_tail, bytes->data);
    }
    if (bytes->leg == protocol::leg::upstream && bytes->dir == protocol::direction::out) {
      if (past_bdat_last) end_went_upstream = true;
      if (past_354) {
        keep_tail(upstream_tail, bytes->data);
        end_went_upstream = end_went_upstream || upstream_tail == "\r\n.\r\n";
      }
    }
  }
  if (client_tail == "\r\n.\r\n") t.size -= 3;   // the terminator is not the message's
  t.message_id = headers.message_id();
  t.result = end_went_upstream ? protocol::outcome::unknown : protocol::outcome::aborted;
  // A reply before the end went (the destination gave up on the message early: the relay answers
  // 451 and sends no end) answers nothing delivered.
  if (open->end_answer && end_went_before_answer) {
    // The destination's word on the message decides, as the relay would have recorded it
    // (protocol/relay_fsm.cpp abandon_transactions): a 250 is delivered, though the client never had it.
    const protocol::reply& r = open->end_answer->reply;
    t.final_reply = reply_summary{r.code, r.enhanced, r.full_text()};
    t.result = protocol::outcome_of_code(r.code);
  }
  if (t.rcpt_codes.size() == t.rcpt_to.size())
    t.result = protocol::outcome_of_refused_recipients(t.rcpt_codes).value_or(t.result);
  return t;
}

}  // namespace mailtap::captures
