// The built-in sink: an SMTP server that accepts every message, sans-I/O. Fed client
// bytes, it appends replies to an output string and says when to close. Advertises
// PIPELINING, SIZE, 8BITMIME, SMTPUTF8, CHUNKING, ENHANCEDSTATUSCODES, DSN, AUTH PLAIN
// LOGIN and (when the shell can do TLS) STARTTLS; answers end-of-data with
// "250 2.0.0 Ok: queued as <id>". AUTH accepts any credentials unless a user is configured.
// Single-threaded, one per connection.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

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
  // Consumes client bytes, appending replies to `out`. Returns false once the connection
  // should be closed after `out` is written (QUIT, or input past the line cap).
  bool feed(std::string_view bytes, std::string& out);
  std::uint64_t messages_accepted() const { return accepted_; }
  // True once after a STARTTLS was answered with 220: the shell must now run the TLS
  // handshake. Input after STARTTLS in the same read was discarded (RFC 3207 4.2).
  bool take_tls_request() { return std::exchange(tls_requested_, false); }
  // The shell's handshake finished: the session starts over (RFC 3207 4.2).
  void tls_started();

 private:
  enum class mode { command, data, bdat, auth_plain, auth_login_user, auth_login_password };
  bool take_line(std::string_view line, std::string& out);
  void take_auth(std::string_view line, std::string& out);
  void check_credentials(std::string_view user, std::string_view password, std::string& out);
  void accept_message(std::string& out);
  void finish_chunk(std::string& out);
  void reset_envelope();

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
  std::uint64_t accepted_ = 0;
  bool closing_ = false;
  bool tls_active_ = false;
  bool tls_requested_ = false;
  bool authenticated_ = false;
  std::string login_user_;
};

}  // namespace mailtap::protocol
