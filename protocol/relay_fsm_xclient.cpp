// XCLIENT (upstream_identity = "xclient", issue 13): telling an upstream that offers it who
// the client is (Postfix's XCLIENT_README). When the upstream's reply to the client's EHLO
// lists XCLIENT, the relay holds that reply, sends XCLIENT (protocol/xclient.hpp), takes the
// upstream's answer (220, a new greeting: the session starts over as the named client), says
// the client's EHLO again, and the client gets the reply to that one. Once per upstream
// connection; client commands wait while it runs. The client never sees XCLIENT, and its own
// XCLIENT stays refused (protocol/command.cpp).
#include "protocol/relay_fsm.hpp"

namespace mailtap::protocol {

bool relay_fsm::begin_xclient(std::uint64_t now, reply_slot& client_ehlo, const reply& r) {
  if (!options_.xclient || xclient_done_ || r.code != 250) return false;
  auto advertised = capabilities::from_reply(r).params("XCLIENT");
  if (!advertised) return false;
  xclient_done_ = true;   // whatever happens now, not again on this connection
  if (&client_ehlo != &owed_.back()) {
    // Commands pipelined behind the EHLO already went upstream; XCLIENT would reach the
    // upstream after them and its reply would be taken for theirs.
    out_.note(now, "XCLIENT not sent: the client sent commands before the reply to its EHLO");
    return false;
  }
  xclient_identity who = *options_.xclient;
  who.helo = parse_command(tls_.hello_line()).cmd.argument;
  auto line = xclient_command(who, *advertised);
  if (!line) {
    out_.note(now, "XCLIENT not sent: the upstream's XCLIENT does not take ADDR (it offers '" + *advertised + "')");
    return false;
  }
  xclient_in_flight_ = true;
  client_ehlo.asked.kind = command_kind::internal_xclient;
  const std::string text = line->substr(0, line->size() - 2);
  if (observer_) observer_->on_relay_command(now, text);
  out_.send(leg::upstream, *line, now);
  arm_upstream_for_head();
  return true;
}

void relay_fsm::take_xclient_reply(std::uint64_t now, reply_slot& client_ehlo, const reply& r) {
  if (r.code == 220)
    out_.note(now, "upstream accepted XCLIENT with a new greeting: it sees the client's address now");
  else
    out_.note(now, "upstream refused XCLIENT with " + std::to_string(r.code) + ": it sees the relay's address");
  // After a 220 the upstream starts over and expects EHLO (XCLIENT_README); after a refusal
  // the EHLO said again is harmless. Either way its reply is the one the client gets.
  client_ehlo.asked.kind = command_kind::xclient_hello;
  if (observer_) observer_->on_relay_command(now, tls_.hello_line());
  out_.send(leg::upstream, tls_.hello_line() + "\r\n", now);
  arm_upstream_for_head();
}

}  // namespace mailtap::protocol
