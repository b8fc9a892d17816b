// The transaction book (protocol/transaction_book.hpp): which transaction is open, the
// recipient recording cap, and the outcome a settled record carries.
#include "protocol/transaction_book.hpp"

#include <gtest/gtest.h>

#include "protocol/limits.hpp"

namespace mailtap::protocol {
namespace {

TEST(TransactionBook, OnlyTheNewestUnsealedTransactionIsOpen) {
  transaction_book book;
  EXPECT_EQ(book.open(), nullptr);
  EXPECT_EQ(book.next_id(), 1u);
  auto first = book.begin(10, "a@x");
  EXPECT_EQ(book.open()->id, first);
  book.open()->sealed = true;   // its dot went upstream; its reply is still awaited
  EXPECT_EQ(book.open(), nullptr);
  EXPECT_EQ(book.newest()->id, first) << "a sealed transaction is still the newest";
  auto second = book.begin(20, "b@x");   // pipelined: the next MAIL before the first's reply
  EXPECT_EQ(book.open()->id, second);
  EXPECT_EQ(book.oldest()->id, first);
  EXPECT_EQ(book.find(first)->rec.mail_from, "a@x");
  EXPECT_EQ(book.find(99), nullptr);
}

TEST(TransactionBook, SettlingRemovesTheTransactionAndStampsItsRecord) {
  transaction_book book;
  auto id = book.begin(10, "a@x");
  reply ok = make_reply(250, "2.0.0", "queued");
  auto rec = book.settle(30, id, outcome::delivered, ok, false);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->result, outcome::delivered);
  EXPECT_EQ(rec->start_us, 10u);
  EXPECT_EQ(rec->end_us, 30u);
  EXPECT_EQ(rec->final_reply->code, 250);
  EXPECT_TRUE(book.empty());
  EXPECT_FALSE(book.settle(40, id, outcome::aborted, std::nullopt, false)) << "settled once";
}

TEST(TransactionBook, ARelayMade2xxIsBlackholed) {
  transaction_book book;
  auto id = book.begin(0, "a@x");
  EXPECT_EQ(book.settle(1, id, outcome::delivered, make_reply(250, "", "Ok"), true)->result, outcome::blackholed);
}

TEST(TransactionBook, EveryRecipientRefusedReadsAsTheRefusals) {
  transaction_book book;
  auto id = book.begin(0, "a@x");
  transaction& t = *book.open();
  for (auto [rcpt, code] : {std::pair{"b@y", 550}, std::pair{"c@y", 450}}) {
    EXPECT_EQ(book.record_recipient(t, rcpt), recipient_recording::recorded);
    t.rec.rcpt_codes.push_back(code);
  }
  EXPECT_EQ(book.settle(1, id, outcome::aborted, std::nullopt, false)->result, outcome::tempfailed);
}

TEST(TransactionBook, RecipientsPastTheCapAreNotRecordedAndTheRuleNoLongerApplies) {
  transaction_book book;
  auto id = book.begin(0, "a@x");
  transaction& t = *book.open();
  for (std::size_t i = 0; i < limits::recipients_recorded_cap; ++i) {
    ASSERT_EQ(book.record_recipient(t, "r@y"), recipient_recording::recorded);
    t.rec.rcpt_codes.push_back(550);
  }
  EXPECT_EQ(book.record_recipient(t, "late@y"), recipient_recording::cap_reached) << "said once";
  EXPECT_EQ(book.record_recipient(t, "later@y"), recipient_recording::not_recorded);
  EXPECT_EQ(t.rec.rcpt_to.size(), limits::recipients_recorded_cap);
  // An unrecorded recipient may have been accepted: the outcome is what the session said.
  EXPECT_EQ(book.settle(1, id, outcome::aborted, std::nullopt, false)->result, outcome::aborted);
}

}  // namespace
}  // namespace mailtap::protocol
