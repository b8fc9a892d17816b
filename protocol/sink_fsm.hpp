// The built-in sink: an SMTP server that accepts every message, sans-I/O, in effect a canned
// replay server. Fed events on its one leg (the client's), it answers in the action
// vocabulary of protocol/action.hpp, like relay_fsm: send_bytes (replies), start_tls (after
// a 220 to STARTTLS), close_leg (after QUIT's 221, a bad BDAT or an overlong line). Advertises
// PIPELINING, SIZE, 8BITMIME, SMTPUTF8, CHUNKING, ENHANCEDSTATUSCODES, DSN, AUTH PLAIN
// LOGIN and (when the shell can do TLS) STARTTLS; answers end-of-data with
// "250 2.0.0 Ok: queued as <id>", or 552 5.3.4 past the advertised SIZE (declared at MAIL, or
// sent: RFC 1870). AUTH accepts any credentials unless a user is configured. Like Postfix it
// closes with 421 4.7.0 a session that makes too many errors, or sends too many NOOP, VRFY or
// HELP commands, without delivering mail (limits::sink_junk_commands, sink_hard_errors).
// Single-threaded, one per connection.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <vector>

#include "protocol/action.hpp"
#include "protocol/command.hpp"
#include "protocol/data_framer.hpp"

namespace mailtap::protocol {

struct sink_options {
  std::string hostname = "mailtap-sink";
  std::uint64_t max_message_size = 100ull * 1024 * 1024;   // advertised as SIZE
  bool offer_starttls = false;
  std::string auth_user;       // empty: any credentials are accepted
  std::string auth_password;
};

class sink_fsm {
 public:
  // `connection_id` makes queue ids unique across connections of one process.
  sink_fsm(sink_options options, std::uint64_t connection_id);

  std::string greeting() const;

  // Events from the shell.
  void on_start();   // the connection is open: the greeting
  // Client bytes: their replies; input after STARTTLS in the same read is discarded (RFC 3207 4.2).
  void on_client_bytes(std::string_view bytes);
  void on_tls_ready();    // the handshake finished: the session starts over (RFC 3207 4.2)
  void on_tls_failed();   // the connection is closed
  // The actions the events asked for, in order; the shell carries them out.
  std::vector<action> take_actions() { return std::exchange(actions_, {}); }
  // A close_leg was handed out: nothing more is read.
  bool finished() const { return closing_; }
  std::uint64_t messages_accepted() const { return accepted_; }

 private:
  bool feed(std::string_view bytes, std::string& out);
  enum class mode { command, data, bdat, auth_plain, auth_login_user, auth_login_password };
  bool take_line(std::string_view line, std::string& out);
  void take_auth(std::string_view line, std::string& out);
  void check_credentials(std::string_view user, std::string_view password, std::string& out);
  void accept_message(std::string& out);
  void finish_chunk(std::string& out);
  void reset_envelope();
  bool answer(const command& cmd, std::string& out);
  // Counts an error or junk command; false, with 421 added to `out`, at the limit.
  bool count_errors(phase ph, std::string_view reply, std::string& out);

  sink_options options_;
  std::uint64_t connection_id_;
  std::string in_;
  mode mode_ = mode::command;
  std::optional<data_framer> framer_;
  std::uint64_t bdat_remaining_ = 0;
  bool bdat_last_ = false;
  bool bdat_failed_ = false;
  bool have_mail_ = false;
  std::uint64_t rcpts_ = 0;
  std::uint64_t message_bytes_ = 0;   // of the message in transfer (DATA as sent, BDAT chunk sizes)
  std::uint64_t accepted_ = 0;
  std::size_t junk_commands_ = 0;   // since the last message accepted
  std::size_t errors_ = 0;          // since the last message accepted
  bool closing_ = false;
  bool tls_active_ = false;
  bool tls_requested_ = false;
  std::vector<action> actions_;
  bool authenticated_ = false;
  std::string login_user_;
};

}  // namespace mailtap::protocol
