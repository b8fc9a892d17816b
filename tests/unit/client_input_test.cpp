// The client's input buffer (protocol/client_input.hpp): what is parsed is recorded (AUTH
// spans masked) and leaves the buffer; the stream offset survives that; a split dot is seen.
#include "protocol/client_input.hpp"

#include <gtest/gtest.h>

#include "relay_playbook.hpp"

namespace mailtap::protocol {
namespace {
using playbook::recording_observer;

TEST(ClientInput, ParsedBytesAreRecordedAndLeaveTheBuffer) {
  recording_observer obs;
  client_input in;
  in.append("NOOP\r\nQUIT\r\n");
  in.advance(6);
  EXPECT_EQ(in.unparsed(), "QUIT\r\n");
  in.record_parsed(1, &obs);
  EXPECT_EQ(obs.stream(leg::client, direction::in), "NOOP\r\n");
  EXPECT_EQ(in.pos(), 0u);
  EXPECT_EQ(in.stream_offset(), 6u) << "the offset in the client's stream survives recording";
  EXPECT_EQ(in.unparsed_size(), 6u);
  EXPECT_FALSE(in.fully_parsed());
}

TEST(ClientInput, MaskedSpansAreRecordedAsStarsWithTheirLineEnds) {
  recording_observer obs;
  client_input in;
  in.append("AUTH PLAIN c2VjcmV0\r\n");
  in.mask(11, 21);
  in.advance_to_end();
  in.record_parsed(1, &obs);
  EXPECT_EQ(obs.stream(leg::client, direction::in), "AUTH PLAIN ********\r\n");
}

TEST(ClientInput, ADotInAnEarlierReadThanItsCrlfIsSplit) {
  client_input in;
  in.append("body\r\n.");
  in.append("\r\n");
  in.advance(9);
  EXPECT_TRUE(in.dot_was_split());
  client_input whole;
  whole.append("body\r\n.\r\n");
  whole.advance(9);
  EXPECT_FALSE(whole.dot_was_split());
}

TEST(ClientInput, AboveTheWatermarkTheShellStopsReading) {
  client_input in;
  in.append(std::string(client_input::high_watermark - 1, 'x'));
  EXPECT_FALSE(in.above_watermark());
  in.append("x");
  EXPECT_TRUE(in.above_watermark());
  in.advance(1);
  EXPECT_FALSE(in.above_watermark()) << "only unparsed input counts";
}

TEST(ClientInput, AStallRecordsTheRestAsItCameAndDropsIt) {
  recording_observer obs;
  client_input in;
  in.append("MAIL FROM:<a@x>\r\nRCPT");
  in.advance(17);
  in.record_and_drop_rest(1, &obs);
  EXPECT_EQ(obs.stream(leg::client, direction::in), "MAIL FROM:<a@x>\r\nRCPT");
  EXPECT_EQ(in.size(), 0u);
}

}  // namespace
}  // namespace mailtap::protocol
