// The fault holds (protocol/fault_holds.hpp) on their own, with a one-decision advisor and a
// recording host: without an advisor nothing is held; a delayed line is held parsed once and
// given back with its decision; a reply verdict takes the line's place in the reply queue; a
// refusing greeting answers 503 (221 to QUIT); a stall holds everything until its maximum; a
// reply-stage delay holds the head of the queue and arms the fault timer.
#include "protocol/fault_holds.hpp"

#include <gtest/gtest.h>

#include <map>

#include "relay_playbook.hpp"

namespace mailtap::protocol {
namespace {
using playbook::recording_observer;

// Answers the decision given for a (phase, stage) once; every other query proceeds.
class one_shot_advisor : public fault_advisor {
 public:
  void on(phase ph, fault_stage stage, fault_decision d) { script_[{ph, stage}] = std::move(d); }
  session_plan plan_session() override { return {}; }
  fault_decision decide(const fault_query& q) override {
    auto it = script_.find({q.ph, q.stage});
    if (it == script_.end()) return {};
    fault_decision d = std::move(it->second);
    script_.erase(it);
    return d;
  }

 private:
  std::map<std::pair<phase, fault_stage>, fault_decision> script_;
};

class fake_host : public fault_host {
 public:
  bool ended() const override { return !end_reason.empty(); }
  void end_session(std::uint64_t, std::string_view reason, std::string_view) override { end_reason = reason; }
  void upstream_unreachable(std::uint64_t, std::string_view reason, std::string_view) override { unreachable = reason; }
  void local_reply(std::uint64_t now, phase ph, int code, std::string_view enhanced, std::string_view text) override {
    owed->answer_locally(now, ph, make_reply(code, enhanced, text));
  }
  void flush_replies(std::uint64_t) override { ++flushes; }
  void resume_client_input(std::uint64_t) override { ++resumed; }
  void arm_upstream_for_head() override {}
  bool greeted() const override { return greeted_; }
  void greeting_answered_by_fault() override { greeted_ = true; }
  void release_banner(std::uint64_t, std::uint64_t, const reply& r, std::string) override { released_banner = r.code; }
  void reply_sent(std::uint64_t) override {}
  bool client_tls() const override { return false; }
  void announce_command(std::uint64_t, std::string_view body, const command&) override { announced.emplace_back(body); }
  void handle_command(std::uint64_t, std::string_view line, const parsed_command&, bool) override {
    handled.emplace_back(line);
  }
  std::uint64_t begin_transaction(std::uint64_t, const command&) override { return 0; }
  bool record_recipient(std::uint64_t, transaction&, std::string) override { return false; }
  void expect_bdat_payload(const command&, bool) override {}
  void take_empty_bdat_chunk(std::uint64_t) override {}
  void client_awaits_data_go() override {}
  void begin_data(std::uint64_t) override {}
  void client_back_to_commands() override {}
  void record_and_drop_client_input(std::uint64_t) override { ++dropped_input; }
  transaction* close_message(std::uint64_t) override { return nullptr; }
  void forward_end_of_data(std::uint64_t, std::uint64_t, std::uint64_t) override {}
  void release_withheld_bdat(std::uint64_t, std::uint64_t) override {}
  void drop_withheld_bdat() override {}
  void close_upstream_once_answered(std::uint64_t) override {}

  reply_queue* owed = nullptr;
  bool greeted_ = false;
  int flushes = 0, resumed = 0, dropped_input = 0, released_banner = 0;
  std::string end_reason, unreachable;
  std::vector<std::string> announced, handled;
};

struct FaultHolds : testing::Test {
  relay_options options;
  recording_observer obs;
  relay_outbox out{&obs};
  reply_queue owed;
  transaction_book txns;
  relay_stats stats;
  fake_host host;
  one_shot_advisor advisor;
  std::unique_ptr<fault_holds> holds;

  void make(bool with_advisor = true) {
    host.owed = &owed;
    holds = std::make_unique<fault_holds>(with_advisor ? &advisor : nullptr, options, out, owed, txns, stats, &obs, host);
  }
  std::vector<std::string> actions() {
    std::vector<std::string> printed;
    for (const auto& a : out.take()) printed.push_back(to_string(a));
    return printed;
  }
  static fault_decision decision(verdict v, int code = 0) {
    fault_decision d;
    d.what = v;
    d.rule = "rule-1";
    d.type = "test";
    d.reply.code = code;
    return d;
  }
  static reply parsed_reply(std::string_view raw) {
    std::vector<reply> got;
    reply_parser().feed(raw, got);
    return got.at(0);
  }
};

TEST_F(FaultHolds, WithoutAnAdvisorNothingIsHeldOrAsked) {
  make(false);
  holds->start(1);
  EXPECT_TRUE(holds->upstream_wanted());
  reply banner = parsed_reply("220 mx ESMTP\r\n");
  std::string bytes = banner.raw;
  EXPECT_FALSE(holds->banner(2, banner, bytes));
  const std::string line = "RCPT TO:<b@example.org>\r\n";
  parsed_command cmd = parse_command("RCPT TO:<b@example.org>");
  std::optional<fault_decision> decided;
  EXPECT_FALSE(holds->hold_line(3, 3, line, cmd, decided));
  EXPECT_FALSE(decided);
  EXPECT_FALSE(holds->take_decided_line(3, line, cmd, decided));
  EXPECT_FALSE(holds->holds_conversation());
  EXPECT_FALSE(holds->hold_active(3));
  EXPECT_TRUE(actions().empty());
  EXPECT_TRUE(obs.faults.empty());
}

TEST_F(FaultHolds, ADelayedLineIsHeldParsedOnceAndGivenBackWithItsDecision) {
  fault_decision d = decision(verdict::delay);
  d.delay_us = 5'000;
  advisor.on(phase::mail, fault_stage::command, d);
  make();
  holds->start(1);
  const std::string line = "MAIL FROM:<a@example.org>\r\n";
  parsed_command cmd = parse_command("MAIL FROM:<a@example.org>");
  std::optional<fault_decision> decided;
  ASSERT_TRUE(holds->hold_line(10, 10, line, cmd, decided));
  EXPECT_TRUE(holds->line_held());
  EXPECT_TRUE(holds->input_waits());
  EXPECT_THAT(actions(), testing::ElementsAre(to_string(action{arm_fault_timer{std::chrono::microseconds(5'000)}})));
  EXPECT_TRUE(holds->line_waits(12)) << "its delay still runs";
  EXPECT_FALSE(holds->line_waits(5'010)) << "its delay is over";
  parsed_command back = holds->take_held_line(5'010, decided);
  EXPECT_EQ(back.cmd.verb, "MAIL");
  ASSERT_TRUE(decided);
  EXPECT_EQ(decided->what, verdict::delay);
  EXPECT_FALSE(holds->line_held());
  ASSERT_EQ(obs.faults.size(), 1u);
  EXPECT_EQ(obs.faults[0].actual_delay_us, 5'000u);
  EXPECT_FALSE(holds->take_decided_line(5'010, line, back, decided)) << "a delay, once over, forwards the line";
}

TEST_F(FaultHolds, AReplyVerdictTakesTheCommandsPlaceInTheReplyQueue) {
  advisor.on(phase::rcpt, fault_stage::command, decision(verdict::reply, 550));
  make();
  holds->start(1);
  txns.begin(1, "a@example.org");   // RCPT outside a transaction is never a rule's to answer
  const std::string line = "RCPT TO:<b@example.org>\r\n";
  parsed_command cmd = parse_command("RCPT TO:<b@example.org>");
  std::optional<fault_decision> decided;
  ASSERT_FALSE(holds->hold_line(2, 2, line, cmd, decided));
  ASSERT_TRUE(decided);
  ASSERT_TRUE(holds->take_decided_line(2, line, cmd, decided));
  EXPECT_EQ(host.announced, (std::vector<std::string>{"RCPT TO:<b@example.org>"}));
  EXPECT_TRUE(host.handled.empty()) << "never forwarded";
  ASSERT_EQ(owed.size(), 1u);
  EXPECT_EQ(owed.front().answer.parsed->code, 550);
  EXPECT_EQ(owed.front().answer.parsed->text(), "Rejected") << "what a server says, never a word about faults";
  ASSERT_TRUE(owed.front().fault.decision);
  EXPECT_EQ(owed.front().fault.then, then_do::nothing);
  EXPECT_FALSE(holds->stops_parsing()) << "a reply does not stop the conversation";
  EXPECT_EQ(stats.faults_injected, 0u) << "queued: applied when it goes out";
  reply_slot head = owed.pop_head();
  holds->reply_releasing(3, head);
  EXPECT_EQ(stats.faults_injected, 1u);
}

TEST_F(FaultHolds, ARefusingGreetingAnswers503AndQuit221) {
  advisor.on(phase::connect, fault_stage::command, decision(verdict::reply, 554));
  make();
  holds->start(1);
  EXPECT_FALSE(holds->upstream_wanted()) << "the client is answered without an upstream";
  EXPECT_TRUE(holds->refusing());
  EXPECT_TRUE(host.greeted_);
  EXPECT_EQ(obs.stream(leg::client, direction::out), "554 Rejected\r\n");
  holds->answer_refused_session(2, "MAIL FROM:<a@example.org>", parse_command("MAIL FROM:<a@example.org>").cmd);
  holds->answer_refused_session(3, "QUIT", parse_command("QUIT").cmd);
  ASSERT_EQ(owed.size(), 2u);
  EXPECT_EQ(owed.front().answer.parsed->code, 503);
  EXPECT_EQ(owed.back().answer.parsed->code, 221);
  EXPECT_EQ(owed.back().asked.ph, phase::quit);
}

TEST_F(FaultHolds, AStallHoldsEverythingUntilItsMaximum) {
  fault_decision d = decision(verdict::stall);
  d.stall_max_us = 1'000;
  advisor.on(phase::connect, fault_stage::command, d);
  make();
  holds->start(1);
  EXPECT_TRUE(holds->stalled());
  EXPECT_TRUE(holds->holds_conversation());
  EXPECT_TRUE(holds->stops_parsing());
  EXPECT_TRUE(holds->hold_active(2));
  EXPECT_EQ(host.dropped_input, 1) << "what the client sent is recorded, never read";
  holds->timer(500);
  EXPECT_TRUE(host.end_reason.empty()) << "before its maximum the timer is set again";
  holds->timer(1'001);
  EXPECT_EQ(host.end_reason, "fault_stall");
}

TEST_F(FaultHolds, AReplyStageDelayHoldsTheHeadOfTheQueue) {
  fault_decision d = decision(verdict::delay);
  d.delay_us = 2'000;
  advisor.on(phase::mail, fault_stage::reply, d);
  make();
  holds->start(1);
  reply_slot& slot = owed.expect(10, phase::mail);
  reply r = parsed_reply("250 2.1.0 Ok\r\n");
  slot.answer.t_upstream = 20;
  holds->reply_stage(20, slot, r);
  slot.answer.parsed = r;
  EXPECT_TRUE(holds->hold_active(21));
  EXPECT_TRUE(holds->reply_delayed(21, slot));
  EXPECT_THAT(actions(), testing::Contains(to_string(action{arm_fault_timer{std::chrono::microseconds(1'999)}})));
  EXPECT_FALSE(holds->reply_delayed(2'020, slot));
  holds->reply_releasing(2'020, slot);
  ASSERT_EQ(obs.faults.size(), 1u);
  EXPECT_EQ(obs.faults[0].decision, "delay");
  EXPECT_EQ(obs.faults[0].actual_delay_us, 2'000u);
}

}  // namespace
}  // namespace mailtap::protocol
