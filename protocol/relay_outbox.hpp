// What the relay machine says to its shell and its recorder: the actions of one event, in
// order, and the bytes each leg is sent, recorded as they go (AUTH material masked,
// auth_redaction.hpp). Owns the two "closed" flags: nothing is sent on a leg once it is
// closed. A pipelined group of sends to one leg becomes one write (RFC 2920: the client's
// segmentation is kept), and a timer re-armed at once keeps one action. Used by relay_fsm and
// its parts; single-threaded.
#pragma once
#include <chrono>
#include <cstdint>
#include <string_view>
#include <vector>

#include "protocol/action.hpp"
#include "protocol/client_input.hpp"
#include "protocol/observer.hpp"
#include "protocol/reply.hpp"

namespace mailtap::protocol {

class relay_outbox {
 public:
  explicit relay_outbox(session_observer* observer) : observer_(observer) {}
  // The client input whose parsed bytes are recorded before anything is sent to the client,
  // so that a capture never has a reply before the command it answers (the relay's own
  // replies are sent while it is still parsing the input that asked for them).
  void record_client_input_first(client_input* in) { client_in_ = in; }

  // Bytes for a leg, recorded as sent (`sensitive`: an AUTH line, recorded masked).
  void send(leg to, std::string_view bytes, std::uint64_t now, bool sensitive = false);
  // The same for bytes the caller gives away (DATA as forwarded): moved into the action
  // when there is no earlier send to join, so a message's bytes are not copied once more.
  void send_owned(leg to, std::string&& bytes, std::uint64_t now);
  // The relay's own reply to the client, sent and recorded as a reply.
  void say(std::uint64_t now, const reply& r);
  void note(std::uint64_t now, std::string_view text);
  void close(leg which);
  void close_with_reset(leg which);
  // The leg is gone without a close of ours (it was never connected, or the peer left).
  void mark_closed(leg which);
  bool closed(leg which) const { return which == leg::client ? client_closed_ : upstream_closed_; }
  void arm(leg which, std::chrono::milliseconds after);
  void push(action a) { actions_.push_back(std::move(a)); }
  // What follows must wait for the recorder: the barrier goes before this event's actions.
  void barrier_first();
  // A handshake already asked for is withdrawn (its leg is being closed).
  void withdraw_start_tls();
  std::vector<action> take();
  // An empty vector with room (the shell's spare: relay/session.hpp borrow_spare_actions) for the
  // next actions, so that an event's actions allocate no vector; taken only while the outbox has
  // none with room of its own.
  void give_back(std::vector<action>&& used);

 private:
  // The last send_bytes to `to` that new bytes may join (timers looked past), or null.
  send_bytes* joinable_send(leg to, bool sensitive);

  // Before bytes to the client are recorded: the client's parsed input is recorded first.
  void client_input_recorded(leg to, std::uint64_t now) {
    if (to == leg::client && client_in_) client_in_->record_parsed_so_far(now, observer_);
  }

  session_observer* observer_;
  client_input* client_in_ = nullptr;
  std::vector<action> actions_;
  bool client_closed_ = false;
  bool upstream_closed_ = false;
};

}  // namespace mailtap::protocol
