// Shared by the relay_fsm playbook tests (relay_fsm_test.cpp, relay_fsm_faults_test.cpp): a
// recording session_observer that keeps what the recorder would see, the printed forms of the
// actions tests expect, and the common upstream greeting and EHLO reply. Test-only; header-only.
#pragma once
#include <gmock/gmock.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/action.hpp"
#include "protocol/fault.hpp"
#include "protocol/observer.hpp"
#include "protocol/relay_fsm.hpp"

namespace mailtap::protocol::playbook {

inline std::string describe(const fault_event& e) {
  return e.rule + "/" + e.type + "/" + e.decision + "/" + std::string(to_string(e.ph)) + "/planned " +
         std::to_string(e.planned_delay_us) + "/actual " + std::to_string(e.actual_delay_us) + "/" + e.detail;
}

class recording_observer : public session_observer {
 public:
  struct bytes_record { leg l; direction d; std::string bytes; std::uint64_t t_us = 0; };
  struct reply_record { leg l; direction d; reply r; };
  struct end_record { std::string reason; std::string detail; };

  void on_bytes(std::uint64_t t, leg l, direction d, std::string_view b) override {
    bytes.push_back({l, d, std::string(b), t});
    last_bytes_call = ++calls;
  }
  void on_command(std::uint64_t, std::string_view text) override { commands.emplace_back(text); }
  void on_relay_command(std::uint64_t, std::string_view text) override { relay_commands.emplace_back(text); }
  void on_reply(std::uint64_t, leg l, direction d, const reply& r) override { replies.push_back({l, d, r}); }
  void on_note(std::uint64_t, std::string_view text) override { notes.emplace_back(text); }
  void on_tls(std::uint64_t, leg l, const tls_summary& t) override { tls.emplace_back(l, t); }
  void on_stage(const stage_record& s) override { stages.push_back(s); }
  void on_transaction(const transaction_record& t) override { transactions.push_back(t); }
  void on_fault(std::uint64_t t, const fault_event& f) override {
    faults.push_back(f);
    fault_times.push_back(t);
  }
  void on_end(std::uint64_t, std::string_view reason, std::string_view detail) override {
    ends.push_back({std::string(reason), std::string(detail)});
    end_call = ++calls;
  }

  // Everything recorded for one leg and direction, concatenated.
  std::string stream(leg l, direction d) const {
    std::string out;
    for (const auto& b : bytes)
      if (b.l == l && b.d == d) out += b.bytes;
    return out;
  }
  // The fault events with this decision ("reply", "delay", "rewrite", "plan", ...).
  std::vector<fault_event> faults_with(std::string_view decision) const {
    std::vector<fault_event> out;
    for (const auto& f : faults)
      if (f.decision == decision) out.push_back(f);
    return out;
  }
  std::string all_faults() const {
    std::string out;
    for (const auto& f : faults) out += describe(f) + "\n";
    return out;
  }
  // Every piece of text the recorder was given, for secret-leak checks.
  std::string everything() const {
    std::string out;
    for (const auto& b : bytes) out += b.bytes + "\n";
    for (const auto& c : commands) out += c + "\n";
    for (const auto& c : relay_commands) out += c + "\n";
    for (const auto& r : replies) {
      out += r.r.raw + "\n";
      for (const auto& l : r.r.lines) out += l + "\n";
    }
    for (const auto& n : notes) out += n + "\n";
    for (const auto& t : transactions) {
      out += t.mail_from + "\n";
      for (const auto& r : t.rcpt_to) out += r + "\n";
      if (t.message_id) out += *t.message_id + "\n";
      if (t.final_reply) out += t.final_reply->raw + "\n";
    }
    for (const auto& e : ends) out += e.reason + " " + e.detail + "\n";
    return out;
  }

  std::vector<bytes_record> bytes;
  std::vector<std::string> commands;
  std::vector<std::string> relay_commands;   // the relay's own, sent upstream
  std::vector<reply_record> replies;
  std::vector<std::string> notes;
  std::vector<std::pair<leg, tls_summary>> tls;
  std::vector<stage_record> stages;
  std::vector<transaction_record> transactions;
  std::vector<fault_event> faults;
  std::vector<std::uint64_t> fault_times;
  std::vector<end_record> ends;
  std::size_t calls = 0, last_bytes_call = 0, end_call = 0;
};


// ---------------------------------------------------------------- printed actions

inline std::string to_upstream(std::string_view b, bool sensitive = false) {
  return to_string(action{send_bytes{leg::upstream, std::string(b), sensitive}});
}
inline std::string to_client(std::string_view b) { return to_string(action{send_bytes{leg::client, std::string(b)}}); }
inline std::string closes(leg l) { return to_string(action{close_leg{l}}); }
inline std::string resets(leg l) { return to_string(action{close_leg{l, true}}); }
inline std::string timer(leg l, std::chrono::milliseconds ms) { return to_string(action{arm_timer{l, ms}}); }
inline std::string fault_timer(std::uint64_t us) {
  return to_string(action{arm_fault_timer{std::chrono::microseconds(us)}});
}
inline std::string shapes(leg l, leg_shaping s) { return to_string(action{shape_leg{l, s}}); }
inline std::string segment_break_on(leg l, std::uint64_t us) {
  return to_string(action{segment_break{l, std::chrono::microseconds(us)}});
}
// A send to the client whose bytes start with `starts` (escaped as actions print them).
inline auto client_reply(std::string_view starts) {
  return testing::StartsWith("send to client: \"" + escape_bytes(starts));
}
inline auto any_client_send() { return testing::StartsWith("send to client"); }
inline auto any_upstream_send() { return testing::StartsWith("send to upstream"); }

// Every session ends in exactly one on_end, and nothing happens after it: ends the session (as
// the client leaving, then the relay giving up if replies are still owed) if it is still open, then feeds every kind of event and expects no
// action and no second end. `tick` advances the test clock; `take` drains the actions.
template <typename Tick, typename Take>
void check_session_end(relay_fsm& fsm, const recording_observer& obs, Tick tick, Take take) {
  if (!fsm.finished()) fsm.on_client_eof(tick());
  if (!fsm.finished()) fsm.on_abort(tick(), "test over");   // a FIN waits for replies still owed
  take();
  EXPECT_TRUE(fsm.finished());
  EXPECT_EQ(obs.ends.size(), 1u) << "on_end must be reported exactly once";
  EXPECT_LT(obs.last_bytes_call, obs.end_call) << "a bytes record came after the end record";
  fsm.on_client_bytes(tick(), "NOOP\r\n");
  fsm.on_upstream_bytes(tick(), "250 2.0.0 Ok\r\n");
  fsm.on_timeout(tick(), leg::client);
  fsm.on_timeout(tick(), leg::upstream);
  fsm.on_fault_timer(tick());
  fsm.on_drain(tick());
  fsm.on_upstream_eof(tick());
  fsm.on_client_eof(tick());
  EXPECT_TRUE(take().empty()) << "no actions after the session ended";
  EXPECT_EQ(obs.ends.size(), 1u);
}

inline const std::string banner = "220 mx.example.org ESMTP Postfix\r\n";
// As Postfix 3.4 and later offer it: with CHUNKING, so the relay lets BDAT through.
inline const std::string plain_ehlo_reply =
    "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-CHUNKING\r\n250 8BITMIME\r\n";

}  // namespace mailtap::protocol::playbook
