// The replay client machine: re-drives the recorded client side of a script
// (replay/script.hpp) against a live server and compares each reply with the recorded one.
// It sends each step's bytes as recorded (commands, BDAT chunks) and each message as the relay
// forwarded it to the recorded destination (under bare_eol normalize, a space where the client
// sent a bare LF; a CRLF in captures from before normalize_to), waits where the recorded client waited (a pipelined group goes out together,
// RFC 2920), pauses as the recorded client paused (scaled by the timing), secures the
// connection where STARTTLS was answered 220, and runs AUTH only with credentials it is given
// (captures hold no secrets). A message whose DATA the live server did not answer 354 is not
// sent; one the destination never got whole (step::withheld) goes only as far as the relay
// forwarded it, and the connection closes without its end, so that nothing is delivered that
// the recorded destination never received; a message a fault rule answered itself (the relay sent
// the destination RSET in place of its DATA or first BDAT chunk: step::sent_in_place) goes as
// the destination got it, RSET and none of the message, and the replay goes on; a command line the relay refused is not sent, nor
// what the recording shows the relay never sent on: behind a step whose reply from the relay (or
// a fault rule) ended the recorded session, all but what it had forwarded (sent, and compared
// with nothing, their live replies unread), and never a step that would end a message there (a BDAT
// ... LAST, a DATA message: the connection closes instead); in a session a fault's greeting answered, and after QUIT, everything. Where the recording ends without a reply, it sends and closes if the recorded client
// left first, and otherwise expects the live server to close as the recorded one did. It
// answers in protocol/action.hpp's vocabulary on the upstream leg: send_bytes, start_tls,
// arm_timer, close_leg. Sans-I/O: times come in with every event. Single-threaded.
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
#include "protocol/reply.hpp"
#include "replay/script.hpp"
#include "replay/timing.hpp"

namespace mailtap::replay {

struct client_options {
  timing pace;
  std::string auth_user, auth_password;   // both empty: AUTH is skipped
  bool compare_text = false;              // also compare each reply's text
  // RFC 5321 4.5.3.2 gives a client 5 to 10 minutes per reply; a replay is a test, and a
  // server that says nothing for this long has diverged.
  std::chrono::seconds reply_timeout{120};
  // --tls-on-connect: TLS from connect (true) or not (false) whatever the capture says; unset: as
  // recorded (script::implicit_tls). The notes say which of the two asked for it.
  std::optional<bool> tls_on_connect;
};

enum class step_status {
  matched,    // the live reply agrees with the recorded one
  diverged,   // it does not (`differences` says how)
  skipped,    // not sent (as recorded) on purpose: AUTH without credentials, a line the relay refused,
              // a message the destination never got whole, what came after it
  not_sent,   // not sent: the live conversation went elsewhere (DATA not answered 354, the server left)
  no_reply,   // sent, and no reply came (the server closed, or the reply timeout passed)
  sent,       // sent as recorded, nothing to compare: the recorded client closed before a reply
              // came, or the step is the unfinished last one (script::unfinished)
};
std::string_view to_string(step_status s);

struct step_result {
  bool greeting = false;            // the greeting (no step)
  // An unsolicited reply the recorded destination sent after the last step's, then closing (its
  // 421, RFC 5321 3.8; or the relay's 421 that stood for its close: recorded_reply::stands_for_close),
  // which the live server is expected to send and close too (no step).
  bool unsolicited = false;
  std::size_t step = 0;             // index in the script's steps
  std::string text;                 // the step as recorded (AUTH material masked)
  protocol::phase ph = protocol::phase::banner;
  step_status status = step_status::matched;
  std::optional<recorded_reply> recorded;
  std::optional<protocol::reply> live;
  std::uint64_t recorded_latency_us = 0;
  std::uint64_t live_latency_us = 0;
  std::vector<std::string> differences;   // "code: recorded 550, live 250", ...
  std::string note;                       // why skipped, not sent or unanswered
};

class client_fsm {
 public:
  client_fsm(const script& s, client_options options);

  void on_connected(std::uint64_t now_us);
  void on_server_bytes(std::string_view bytes, std::uint64_t now_us);
  void on_timer(std::uint64_t now_us);   // an arm_timer ran out
  void on_tls_ready(std::uint64_t now_us);
  void on_tls_failed(std::uint64_t now_us);
  void on_server_closed(std::uint64_t now_us);   // FIN or loss
  // The connection could not be made (after on_connected): every step unsent, saying why.
  void on_connect_failed(std::uint64_t now_us, const std::string& why);
  std::vector<protocol::action> take_actions() { return std::exchange(actions_, {}); }

  bool finished() const { return finished_; }
  // The greeting first, then one entry per step, then one per unsolicited reply expected of the
  // live server (step_result::unsolicited).
  const std::vector<step_result>& results() const { return results_; }
  bool diverged() const;

 private:
  void advance(std::uint64_t now_us);
  bool ready_to_send(std::size_t i, std::uint64_t now_us, std::uint64_t& due_us) const;
  void send_step(std::size_t i, std::uint64_t now_us);
  std::string after_rset_in_place(std::size_t i) const;
  bool session_closed_at(std::size_t i) const;
  void stop_where_the_session_closed(std::size_t i);
  void stop_sending(std::size_t from, std::uint64_t now_us, const std::string& why);
  std::string auth_bytes(std::size_t i);
  void take_reply(protocol::reply r, std::uint64_t now_us);
  void settle(std::size_t result, std::uint64_t now_us);
  void finish(std::uint64_t now_us, const std::string& why_unanswered);
  void expect_the_recorded_ending(std::uint64_t now_us);
  void arm(std::uint64_t now_us);

  const script& script_;
  std::vector<const step*> steps_;          // the script's steps, then its unfinished one
  client_options options_;
  std::vector<step_result> results_;
  std::vector<std::uint64_t> settled_at_;   // live time each result settled (0: not yet)
  std::vector<std::uint64_t> sent_at_;      // live time each step went out
  std::size_t settled_prefix_ = 0;          // leading results that are settled
  std::size_t next_ = 0;                    // the next step to send
  // Where the unsolicited results begin (results_.size() when none is expected): after the last
  // step they are awaited as replies (`ending_awaited_`), then the live server's close, until the
  // reply timeout (`awaiting_close_`). Not where the replay stopped sending on purpose (stop_sending).
  std::size_t first_unsolicited_ = 0;
  bool ending_awaited_ = false;
  bool awaiting_close_ = false;
  std::deque<std::size_t> inflight_;        // results waiting for a reply, in order
  std::uint64_t connected_at_ = 0;
  std::uint64_t reply_deadline_us_ = 0;
  std::uint64_t send_due_us_ = 0;           // a think pause is running until then (0: none)
  protocol::reply_parser parser_;
  bool tls_pending_ = false;
  // Whether the live server's last EHLO (or HELO) reply offered CHUNKING (RFC 3030 2); unknown
  // before one is answered. Where it did not, a BDAT chunk would be read as commands, so no BDAT
  // step is sent.
  std::optional<bool> live_chunking_;
  // The same for PIPELINING (RFC 2920): where it is not known to be offered, a step the recorded
  // client pipelined goes only once the replies in flight are in, and its note says so (held_back_).
  std::optional<bool> live_pipelining_;
  std::vector<bool> held_back_;
  bool waits_for_pipelining(std::size_t i);
  bool tls_at_connect_ = false;   // the handshake in progress is the one at connect (implicit TLS)
  bool tls_from_connect() const { return options_.tls_on_connect.value_or(script_.implicit_tls); }
  bool finished_ = false;
  // Set where the relay's (or a fault's) reply to a step ended the recorded session: who, with
  // what, and the end reason, for the notes of the steps behind it (stop_where_the_session_closed).
  std::string closing_;
  bool auth_skipping_ = false;              // inside an AUTH exchange that is not replayed
  std::vector<std::string> auth_material_;  // base64 credentials still to send
  std::vector<protocol::action> actions_;
};

}  // namespace mailtap::replay
