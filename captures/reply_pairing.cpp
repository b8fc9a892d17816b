// Pairs replies with commands (reply_pairing.hpp).
#include "captures/reply_pairing.hpp"

#include <algorithm>
#include <deque>

#include "protocol/command.hpp"

namespace mailtap::captures {

std::vector<const event*> timeline_of(const capture& c) {
  std::vector<const event*> timeline;
  timeline.reserve(c.events.size());
  for (const auto& e : c.events) timeline.push_back(&e);
  std::stable_sort(timeline.begin(), timeline.end(),
                   [](const event* a, const event* b) { return event_time(*a) < event_time(*b); });
  return timeline;
}

namespace {

// The oldest command waiting is the client's, and the relay's own command after it, recorded at
// the same time, went upstream in its place (reply_pairing.hpp).
bool sent_in_place(const std::deque<const command_event*>& awaiting) {
  return awaiting.size() > 1 && awaiting[0]->leg == protocol::leg::client && awaiting[1]->leg == protocol::leg::upstream &&
         awaiting[1]->t_us == awaiting[0]->t_us;
}

}  // namespace

std::vector<paired_reply> pair_replies(const std::vector<const event*>& timeline) {
  std::vector<paired_reply> out;
  std::deque<const command_event*> awaiting;   // commands not answered yet, in order
  bool greeted = false, after_354 = false;
  bool in_auth = false;   // a 334 answered AUTH: the client's next line is part of the exchange (RFC 4954 4)
  for (const event* e : timeline) {
    if (const auto* cmd = std::get_if<command_event>(e)) {
      awaiting.push_back(cmd);
      continue;
    }
    const auto* r = std::get_if<reply_event>(e);
    if (!r) continue;
    paired_reply x;
    x.reply = r;
    const paired_reply* previous = out.empty() ? nullptr : &out.back();
    // The reply to a relay command sent in a client's command's place is never passed on
    // (only a 421 reaches the client, as it came): a relay reply behind it answers the client's
    // command, the same code at the same time notwithstanding (the relay's 250 to a chunk of a
    // BDAT message a blackhole answers, behind the destination's 250 to the RSET).
    if (r->leg == protocol::leg::client && previous && previous->reply->leg == protocol::leg::upstream &&
        !previous->in_place_of && previous->reply->reply.code == r->reply.code &&
        (previous->reply->t_us == r->t_us || r->reply.code == 354)) {
      x.edit = true;
      x.ph = previous->ph;
      x.command = previous->command;
    } else if (!greeted) {
      x.ph = protocol::phase::banner;
      greeted = true;
    } else if (after_354 && r->reply.code != 354) {
      x.ph = protocol::phase::data_end;
      after_354 = false;
    } else if (r->leg == protocol::leg::upstream && sent_in_place(awaiting)) {
      x.in_place_of = awaiting.front();
      x.command = awaiting[1];
      awaiting.erase(awaiting.begin() + 1);
      x.ph = protocol::parse_command(x.command->text).cmd.ph;
    } else if (!awaiting.empty()) {
      x.command = awaiting.front();
      awaiting.pop_front();
      x.ph = in_auth ? protocol::phase::auth : protocol::parse_command(x.command->text).cmd.ph;
    }
    if (!x.edit) in_auth = x.ph == protocol::phase::auth && r->reply.code == 334;
    if (r->reply.code == 354 && !x.edit) after_354 = true;
    out.push_back(x);
  }
  return out;
}

}  // namespace mailtap::captures
