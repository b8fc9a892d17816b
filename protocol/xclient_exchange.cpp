// The XCLIENT exchange (xclient_exchange.hpp).
#include "protocol/xclient_exchange.hpp"

#include <string>

#include "protocol/capabilities.hpp"
#include "protocol/command.hpp"
#include "protocol/xclient.hpp"

namespace mailtap::protocol {

xclient_exchange::xclient_exchange(const relay_options& options, relay_outbox& out, reply_queue& owed,
                                   session_observer* observer, xclient_host& host)
    : options_(options), out_(out), owed_(owed), observer_(observer), host_(host) {}

bool xclient_exchange::begin(std::uint64_t now, reply_slot& client_ehlo, const reply& r, std::string_view hello_line) {
  if (!options_.xclient || done_ || r.code != 250) return false;
  auto advertised = capabilities::from_reply(r).params("XCLIENT");
  if (!advertised) return false;
  done_ = true;   // whatever happens now, not again on this connection
  if (&client_ehlo != &owed_.back()) {
    // Commands pipelined behind the EHLO already went upstream; XCLIENT would reach the
    // upstream after them and its reply would be taken for theirs.
    out_.note(now, "XCLIENT not sent: the client sent commands before the reply to its EHLO");
    return false;
  }
  xclient_identity who = *options_.xclient;
  who.helo = parse_command(hello_line).cmd.argument;
  auto line = xclient_command(who, *advertised);
  if (!line) {
    out_.note(now, "XCLIENT not sent: the upstream's XCLIENT does not take ADDR (it offers '" + *advertised + "')");
    return false;
  }
  in_flight_ = true;
  client_ehlo.asked.kind = command_kind::internal_xclient;
  if (observer_) observer_->on_relay_command(now, std::string_view(*line).substr(0, line->size() - 2));
  out_.send(leg::upstream, *line, now);
  host_.arm_upstream_for_head();
  return true;
}

void xclient_exchange::take_reply(std::uint64_t now, reply_slot& client_ehlo, const reply& r,
                                  std::string_view hello_line) {
  if (r.code == 220)
    out_.note(now, "upstream accepted XCLIENT with a new greeting: it sees the client's address now");
  else
    out_.note(now, "upstream refused XCLIENT with " + std::to_string(r.code) + ": it sees the relay's address");
  // After a 220 the upstream starts over and expects EHLO (XCLIENT_README); after a refusal
  // the EHLO said again is harmless. Either way its reply is the one the client gets.
  client_ehlo.asked.kind = command_kind::xclient_hello;
  if (observer_) observer_->on_relay_command(now, hello_line);
  out_.send(leg::upstream, std::string(hello_line) + "\r\n", now);
  host_.arm_upstream_for_head();
}

void xclient_exchange::hello_answered(reply_slot& client_ehlo) {
  client_ehlo.asked.kind = command_kind::relayed;
  in_flight_ = false;   // held client commands go on after this reply
}

}  // namespace mailtap::protocol
