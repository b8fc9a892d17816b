// Which command each recorded reply answers. Replies reach the client strictly in command
// order (RFC 2920; protocol/relay_fsm.cpp's flush_replies), so one FIFO of commands (the
// client's, and the relay's own upstream commands) pairs the destination's replies and the
// relay's alike. Three exceptions: the greeting answers no command; after a 354 the next
// reply answers the end of data; and a relay reply that repeats the destination's reply just
// before it (same code, same time, or a 354) is the relay's edit of it, unless that reply
// answered a relay command sent in a client's command's place (below), which is never passed
// on. A line the client sends after a 334 is part of its AUTH exchange: its reply is at
// `auth`. A relay command recorded with the client's command just before it, at the same
// time, was sent in that command's place (the RSET of a message a fault answers, FORMAT.md
// `command`): the destination's next reply answers the relay's command, and the client's
// command waits for the relay's reply (a 421 to that RSET reaches the client as it came: no
// reply record of its own; diagnose/conversation.hpp `in_place_of`). Used by diagnose's
// conversation view and by the reader's rebuilt open transaction; pure.
#pragma once
#include <vector>

#include "captures/reader.hpp"
#include "protocol/phase.hpp"

namespace mailtap::captures {

struct paired_reply {
  const reply_event* reply = nullptr;
  const command_event* command = nullptr;   // null for the greeting and an end of data
  protocol::phase ph = protocol::phase::other;
  bool edit = false;                        // the relay's edited copy of the reply before it
  // The client's command the relay's `command` was sent in place of, still waiting for its reply.
  const command_event* in_place_of = nullptr;
};

// Every event of `c`, by time (file order among equals). The pointers point into c.events.
std::vector<const event*> timeline_of(const capture& c);

// One entry per reply event of `timeline`, in its order.
std::vector<paired_reply> pair_replies(const std::vector<const event*>& timeline);

}  // namespace mailtap::captures
