// captures/latin1_text: bytes as a JSON string of Latin-1 characters, read back by a JSON
// parser (Boost.JSON here, as the reader does), within the budget the writer gives it.
#include "captures/latin1_text.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>

using namespace mailtap::captures;
namespace json = boost::json;

namespace {

// What a JSON parser makes of the encoding, as bytes again.
std::string round_trip(const std::string& bytes) {
  std::string text = "\"";
  EXPECT_TRUE(append_latin1_json(text, bytes, bytes.size() * 6));
  text += '"';
  const json::value v = json::parse(text);
  auto back = latin1_bytes(v.as_string());
  EXPECT_TRUE(back) << text;
  return back.value_or("");
}

std::string every_byte() {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  return all;
}

}  // namespace

TEST(Latin1Text, EveryByteSurvivesAJsonParser) {
  const std::string all = every_byte();
  EXPECT_EQ(round_trip(all), all);
  EXPECT_EQ(round_trip(""), "");
}

TEST(Latin1Text, TextIsItselfWithItsLineEndsEscaped) {
  std::string out;
  ASSERT_TRUE(append_latin1_json(out, "MAIL FROM:<a@example.org>\r\n", 100));
  EXPECT_EQ(out, "MAIL FROM:<a@example.org>\\r\\n");
  out.clear();
  ASSERT_TRUE(append_latin1_json(out, std::string("\"\\\t\x01\x7f\xe9", 6), 100));
  EXPECT_EQ(out, "\\\"\\\\\\t\\u0001\x7f\xc3\xa9");
}

// Each special byte at every position of blocks around the 16-byte step, so the fast path's
// copies and the byte-by-byte path meet everywhere.
TEST(Latin1Text, SpecialBytesAtEveryPositionAcrossBlocks) {
  for (std::size_t length = 1; length <= 48; ++length) {
    for (std::size_t at = 0; at < length; ++at) {
      for (char special : {'\r', '\0', '"', '\\', '\xff', '\x80'}) {
        std::string bytes(length, 'a');
        for (std::size_t i = 0; i < length; ++i) bytes[i] = static_cast<char>('a' + i % 26);
        bytes[at] = special;
        ASSERT_EQ(round_trip(bytes), bytes) << length << " " << at << " " << int(special);
      }
    }
  }
}

// Two specials side by side at every position: a CRLF (encoded as one pair), a CR before
// another special or at a block's last byte (each on its own), an LF before a CR.
TEST(Latin1Text, PairsOfSpecialsAtEveryPosition) {
  const std::string pairs[] = {"\r\n", "\r\r", "\r\"", "\n\r", "\r\xff", std::string("\r\0", 2), "\r\n\r\n"};
  for (std::size_t length = 2; length <= 70; ++length) {
    for (std::size_t at = 0; at + 1 < length; ++at) {
      for (const auto& pair : pairs) {
        std::string bytes(length, 'a');
        for (std::size_t i = 0; i < length; ++i) bytes[i] = static_cast<char>('a' + i % 26);
        bytes.replace(at, std::min(pair.size(), length - at), pair.substr(0, length - at));
        ASSERT_EQ(round_trip(bytes), bytes) << length << " " << at;
      }
    }
  }
  std::string out;
  ASSERT_TRUE(append_latin1_json(out, std::string(40, 'x') + "\r\n" + std::string(40, 'y') + "\r\n", 1000));
  EXPECT_EQ(out, std::string(40, 'x') + "\\r\\n" + std::string(40, 'y') + "\\r\\n");
}

TEST(Latin1Text, OverTheBudgetLeavesTheOutputAsItWas) {
  std::string out = "kept";
  // 4 NULs are 24 characters; base64 of them would be 8.
  EXPECT_FALSE(append_latin1_json(out, std::string(4, '\0'), 8));
  EXPECT_EQ(out, "kept");
  // Exactly at the budget is within it, one past is not; also when the excess is in a block.
  const std::string text(40, 'x');
  EXPECT_TRUE(append_latin1_json(out, text, 40));
  EXPECT_EQ(out, "kept" + text);
  out = "kept";
  EXPECT_FALSE(append_latin1_json(out, text, 39));
  EXPECT_EQ(out, "kept");
  EXPECT_FALSE(append_latin1_json(out, text + "\r", 41));
  EXPECT_EQ(out, "kept");
  EXPECT_TRUE(append_latin1_json(out, text + "\r", 42));
  EXPECT_EQ(out, "kept" + text + "\\r");
}

TEST(Latin1Text, ACharacterPastU00FFIsNoByte) {
  EXPECT_FALSE(latin1_bytes("\xc4\x80"));       // U+0100
  EXPECT_FALSE(latin1_bytes("a\xe2\x82\xac"));  // U+20AC
  EXPECT_FALSE(latin1_bytes("\xc3"));           // cut
  EXPECT_EQ(latin1_bytes("\xc2\x80\xc3\xbf"), std::string("\x80\xff"));
}
