// The replay server machine: impersonates the recorded server for one live client. It plays
// the greeting and each reply of a script (replay/script.hpp) as the client heard it, byte
// for byte (multi-line replies, the EHLO capabilities, STARTTLS when the recording offered
// it), each after the recorded delay (the time from the step's last byte to its reply, scaled
// by the timing), and notes where the live client's steps differ from the recorded ones. It
// answers in protocol/action.hpp's vocabulary on the client leg: send_bytes, start_tls (after
// a recorded 220 to STARTTLS), arm_timer (the next reply is due, or the client's idle time
// ends), close_leg (after a 221, where the recording ended, after a client idle for
// client_idle, answered 421 4.4.2 as the relay answers it, or when the server stops). Sans-I/O: times come in with every event. Single-threaded.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/action.hpp"
#include "protocol/data_framer.hpp"
#include "replay/script.hpp"
#include "replay/timing.hpp"

namespace mailtap::replay {

// Where the live client left the recording.
struct divergence {
  enum class what {
    command,     // a different command line than recorded
    message,     // a different message body, or MAIL's SIZE (a divergence only with compare_message, else noted)
    client_name, // EHLO or HELO with another name (a divergence only with compare_client_name, else noted)
    extra,       // a step after the recording's last (answered 221 to QUIT, else 421 and closed)
    missing,     // the client closed while the recording went on
    unexpected,  // bytes after STARTTLS before the handshake (discarded, RFC 3207 4.2)
    timeout,     // the client sent nothing for client_idle (answered 421 4.4.2 and closed)
    stopped,     // the replay server was stopped (SIGINT, SIGTERM) before the recording ended
  };
  what kind = what::command;
  std::size_t step = 0;         // index in the script's steps (its size for an extra step)
  std::uint64_t t_us = 0;       // live time since the connection
  std::string recorded;         // what the recording has there
  std::string live;             // what the client sent (AUTH material masked, as captures mask it)
};
std::string_view to_string(divergence::what w);

// What the replay server counts as the live client leaving the recording.
struct server_options {
  // A message (DATA, or BDAT chunks) that differs from the recorded one is a divergence, and so
  // is the SIZE its MAIL declares. Off by default: a live client writes its own Date,
  // Message-ID and Received headers, so its message is reported (noted) without making the
  // session diverge.
  bool compare_message = false;
  // An EHLO or HELO (the same verb) that names another client than recorded is a divergence.
  // Off by default: the name is the live client's host (swaks sends its own), as a Date header is.
  bool compare_client_name = false;
  // A client that sends nothing for this long while the machine waits for it is answered
  // 421 4.4.2 and closed, as the relay does (README "timeouts", client_idle, 300 s).
  std::chrono::milliseconds client_idle{300'000};
};

// One live step and the reply played for it.
struct played_step {
  std::size_t step = 0;
  std::string live;             // the live step, printable (AUTH material masked, as captures mask it)
  int code = 0;                 // the reply played (0: none)
  reply_source source = reply_source::server;
  std::string rule;             // the fault rule, when the recorded reply was injected
  std::uint64_t received_us = 0;   // its last byte arrived (live)
  std::uint64_t delay_us = 0;      // the delay played before the reply
  // The reply left: false when the session ended (stopped, the client gone) while its delay ran.
  bool sent = true;
  // The recording's delay fault that held this reply (its rule), when one did: the delay played
  // is then partly the relay's injection, not the recorded server's own pace.
  std::string delay_rule{};
};

class server_fsm {
 public:
  server_fsm(const script& s, timing t, server_options o = {});

  void on_start(std::uint64_t now_us);
  void on_client_bytes(std::string_view bytes, std::uint64_t now_us);
  void on_timer(std::uint64_t now_us);   // an arm_timer ran out
  void on_tls_ready(std::uint64_t now_us);
  void on_tls_failed(std::uint64_t now_us);
  void on_client_closed(std::uint64_t now_us);   // FIN or loss
  // The replay server is stopping: 421 4.3.2 at once and closed, as the relay's drain answers;
  // a divergence (`stopped`) unless the recording was already played to its end.
  void on_stop(std::uint64_t now_us);
  std::vector<protocol::action> take_actions() { return std::exchange(actions_, {}); }

  bool finished() const { return finished_; }
  const std::vector<divergence>& divergences() const { return divergences_; }
  // Differences reported without counting as a divergence (a message, without compare_message).
  const std::vector<divergence>& noted() const { return noted_; }
  const std::vector<played_step>& played() const { return played_; }

 private:
  enum class mode { command, auth, message, bdat_payload };
  enum class then { nothing, tls, close };
  struct outgoing {
    std::uint64_t due_us;
    std::string bytes;
    then after;
    std::optional<std::size_t> played;   // the played_ entry this reply is, once sent
  };
  // Replies still queued when the session ends were never sent: their played_ entries say so.
  void drop_unsent();

  // The live step being read, compared with the recorded one as its bytes arrive.
  struct live_unit {
    std::string line;             // its command line without CRLF (empty for a message)
    std::string shown;            // the line as reports show it: printable, AUTH material masked
    std::size_t seen = 0;         // bytes so far
    bool matches = true;          // every byte so far is the recorded step's
    std::size_t first_difference = 0;
    void append(std::string_view bytes, const script& s, std::size_t step);
  };

  void take_input(std::uint64_t now_us);
  void take_step(step_kind kind, std::uint64_t now_us);
  void compare(const step& recorded, step_kind kind, std::uint64_t now_us);
  void queue(std::uint64_t due_us, std::string bytes, then after);
  void queue_after_last(std::uint64_t now_us);
  void send_due(std::uint64_t now_us);
  void diverge(divergence::what w, std::size_t step, std::uint64_t now_us, std::string recorded, std::string live);
  void message_differs(std::size_t step, std::uint64_t now_us, std::string recorded, std::string live);
  bool client_name_differs(const step& recorded, std::size_t step, std::uint64_t now_us, const std::string& shown);
  bool size_differs(const step& recorded, std::size_t step, std::uint64_t now_us, const std::string& shown);
  bool waiting_for_client() const;
  void time_out(std::uint64_t now_us);

  const script& script_;
  timing timing_;
  server_options options_;
  std::string in_;
  mode mode_ = mode::command;
  std::uint64_t bdat_remaining_ = 0;
  std::optional<protocol::data_framer> framer_;
  live_unit unit_;
  std::size_t next_step_ = 0;
  std::deque<outgoing> out_;
  std::uint64_t last_due_us_ = 0;
  std::uint64_t idle_deadline_us_ = 0;   // the client's silence ends the session then (waiting for it)
  bool tls_pending_ = false;     // a start_tls was handed out: nothing is read until it ends
  bool live_auth_exchange_ = false;   // the live client's last lines were AUTH and its exchange
  bool closing_ = false;         // a close is queued: input is ignored
  bool finished_ = false;
  std::vector<protocol::action> actions_;
  std::vector<divergence> divergences_;
  std::vector<divergence> noted_;
  std::vector<played_step> played_;
};

}  // namespace mailtap::replay
