// The XCLIENT exchange of the relay machine (upstream_identity = "xclient"): telling an
// upstream that offers it who the client is (Postfix's XCLIENT_README). When the upstream's
// reply to the client's EHLO lists XCLIENT, that reply is held, XCLIENT goes upstream
// (protocol/xclient.hpp builds the line), the upstream answers (220, a new greeting: the
// session starts over as the named client), the client's EHLO is said again, and the client
// gets the reply to that one. Once per upstream connection; client commands wait while it
// runs. The client never sees XCLIENT, and its own XCLIENT stays refused
// (protocol/command.cpp). Owns whether the exchange ran on this connection and whether it is
// running; rides on the client's EHLO slot in the reply queue instead of a slot of its own.
// Asks the machine that composes it (relay_fsm) for the rest through xclient_host.
#pragma once
#include <cstdint>
#include <string_view>

#include "protocol/observer.hpp"
#include "protocol/relay_options.hpp"
#include "protocol/relay_outbox.hpp"
#include "protocol/reply_queue.hpp"

namespace mailtap::protocol {

// What the exchange needs of the machine around it.
class xclient_host {
 public:
  // A command went upstream: its reply timer follows the oldest slot awaited.
  virtual void arm_upstream_for_head() = 0;

 protected:
  virtual ~xclient_host() = default;
};

class xclient_exchange {
 public:
  xclient_exchange(const relay_options& options, relay_outbox& out, reply_queue& owed, session_observer* observer,
                   xclient_host& host);

  // While it runs, no client command goes upstream.
  bool in_flight() const { return in_flight_; }
  // The upstream answered the client's EHLO (`hello_line`, without CRLF) with `r`. When it
  // offers XCLIENT and the settings ask for it, XCLIENT goes upstream and the reply is held:
  // true. False: the reply is the client's, as it is.
  bool begin(std::uint64_t now, reply_slot& client_ehlo, const reply& r, std::string_view hello_line);
  // The upstream's answer to XCLIENT (a slot of kind internal_xclient): the client's EHLO is
  // said again, and the reply to it is the client's.
  void take_reply(std::uint64_t now, reply_slot& client_ehlo, const reply& r, std::string_view hello_line);
  // The reply to the EHLO said again came (a slot of kind xclient_hello): it is relayed as
  // the client's, and held client commands may go on.
  void hello_answered(reply_slot& client_ehlo);
  // A new upstream connection (the plaintext fall-back): XCLIENT again at the client's next EHLO.
  void new_connection() { done_ = false; }

 private:
  const relay_options& options_;
  relay_outbox& out_;
  reply_queue& owed_;
  session_observer* observer_;
  xclient_host& host_;

  bool done_ = false;        // XCLIENT was considered on this connection: not again
  bool in_flight_ = false;   // XCLIENT, the new 220, the client's EHLO again
};

}  // namespace mailtap::protocol
