// Reply pairing (protocol/reply_queue.hpp): upstream replies settle the oldest awaited slot,
// the relay's own replies keep their place in line, and what a slot answers is kept apart from
// its answer and from a fault riding on it.
#include "protocol/reply_queue.hpp"

#include <gtest/gtest.h>

namespace mailtap::protocol {
namespace {

TEST(ReplyQueue, TheFirstAwaitedSlotSkipsTheRelaysOwnReplies) {
  reply_queue q;
  EXPECT_EQ(q.first_awaited(), nullptr);
  q.answer_locally(1, phase::rcpt, make_reply(452, "4.5.3", "Too many recipients"));
  q.expect(2, phase::rcpt, command_kind::relayed, 7);
  q.expect(3, phase::data);
  reply_slot* awaited = q.first_awaited();
  ASSERT_NE(awaited, nullptr);
  EXPECT_EQ(awaited->asked.t_received, 2u);
  EXPECT_EQ(awaited->asked.txn, 7u);
  ASSERT_NE(q.ready_head(), nullptr) << "the relay's own reply is ready at once";
  awaited->answer.ready = true;   // the upstream answered the RCPT
  EXPECT_EQ(q.first_awaited()->asked.ph, phase::data);
  EXPECT_TRUE(q.awaiting_upstream());
}

TEST(ReplyQueue, RepliesLeaveInTheOrderOfTheirCommands) {
  reply_queue q;
  q.expect(1, phase::mail);
  q.answer_locally(2, phase::other, make_reply(500, "5.5.2", "Line too long"));
  EXPECT_EQ(q.ready_head(), nullptr) << "the MAIL's reply is not in: nothing after it may go";
  q.first_awaited()->answer.ready = true;
  EXPECT_EQ(q.pop_head().asked.ph, phase::mail);
  EXPECT_EQ(q.pop_head().answer.parsed->code, 500);
  EXPECT_TRUE(q.empty());
}

TEST(ReplyQueue, AnEndOfDataStillAwaitedIsKnown) {
  reply_queue q;
  q.expect(1, phase::data_end);
  EXPECT_TRUE(q.awaiting_end_of_data());
  q.front().answer.ready = true;
  EXPECT_FALSE(q.awaiting_end_of_data());
  reply_slot& last = q.expect(2, phase::bdat);
  EXPECT_FALSE(q.awaiting_end_of_data()) << "a chunk that is not the last ends nothing";
  last.asked.last_chunk = true;
  EXPECT_TRUE(q.awaiting_end_of_data());
}

// A throttle fault's pacing is the relay's time: a newcomer's trial saw 4 s of a throttled
// upload counted as the upstream's at data_end, and diagnose blamed a content scan. Each
// command awaited counts from the end of the paced write that carried it, and only that one.
TEST(ReplyQueue, ACommandCountsFromTheEndOfThePacedWriteThatCarriedIt) {
  reply_queue q;
  q.expect(10, phase::mail);
  q.expect(20, phase::rcpt);
  q.paced_write_ended(25, 1'000);   // carried MAIL and RCPT
  q.expect(500, phase::data_end);   // queued during that write: the next one carries it
  q.paced_write_ended(1'000, 4'000);
  EXPECT_EQ(q.front().asked.t_forwarded, 1'000u) << "MAIL's write ended at 1000, not at the later one";
  EXPECT_EQ(q.back().asked.t_forwarded, 4'000u);
  q.front().answer.ready = true;
  EXPECT_EQ(q.first_awaited()->asked.t_forwarded, 1'000u) << "RCPT went with MAIL";
  q.back().answer.ready = true;
  q.paced_write_ended(4'000, 9'000);
  EXPECT_EQ(q.back().asked.t_forwarded, 4'000u) << "an answered command is left alone";
}

TEST(ReplyQueue, AWithdrawnBdatLastIsNoLongerAwaited) {
  reply_queue q;
  q.expect(1, phase::bdat);
  q.expect(2, phase::bdat).asked.last_chunk = true;
  EXPECT_TRUE(q.withdraw_bdat_last());
  EXPECT_EQ(q.size(), 1u);
  EXPECT_FALSE(q.front().asked.last_chunk);
  EXPECT_FALSE(q.withdraw_bdat_last());
}

TEST(ReplyQueue, NothingAfterASlotIsAnsweredOnceItsUpstreamIsGone) {
  reply_queue q;
  q.expect(1, phase::mail);
  reply_slot& rcpt = q.expect(2, phase::rcpt);
  q.expect(3, phase::data);
  q.drop_after(rcpt);
  EXPECT_EQ(q.size(), 2u);
  q.erase(q.front());
  EXPECT_EQ(q.front().asked.ph, phase::rcpt);
}

TEST(ReplyQueue, AFaultMarkerHasNoReplyAndCarriesItsFollowUp) {
  reply_queue q;
  fault_decision d;
  d.what = verdict::stall;
  d.rule = "stall-at-rcpt";
  reply_slot& marker = q.fault_marker(5, phase::rcpt, d, then_do::stall);
  EXPECT_FALSE(marker.answer.parsed);
  EXPECT_EQ(marker.fault.then, then_do::stall);
  EXPECT_EQ(marker.fault.ph, phase::rcpt);
  EXPECT_EQ(q.ready_head(), &marker);
  EXPECT_FALSE(q.awaiting_upstream());
}

TEST(ReplyQueue, ADelayedReplyIsKnownUntilItsReleaseTime) {
  reply_queue q;
  q.expect(1, phase::mail).fault.release_us = 100;
  EXPECT_TRUE(q.delayed_past(99));
  EXPECT_FALSE(q.delayed_past(100));
}

}  // namespace
}  // namespace mailtap::protocol
