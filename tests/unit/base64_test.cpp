// protocol/base64: RFC 4648's test vectors, and the fast (SSSE3) path against a plain
// bit-by-bit encoder at every length and alignment, so a wrong shuffle or table cannot hide.
#include "protocol/base64.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace mailtap::protocol {
namespace {

// RFC 4648 section 4, one 6-bit group at a time: slow and obviously right.
std::string reference_encode(std::string_view in) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t bits = 0;
  unsigned buffer = 0;
  for (unsigned char c : in) {
    buffer = (buffer << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += alphabet[(buffer >> bits) & 63];
    }
  }
  if (bits > 0) out += alphabet[(buffer << (6 - bits)) & 63];
  while (out.size() % 4 != 0) out += '=';
  return out;
}

TEST(Base64, Rfc4648Vectors) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_decode("Zm9vYmFy"), "foobar");
  EXPECT_EQ(base64_decode("Zm9vYg=="), "foob");
}

TEST(Base64, EveryAlphabetCharacterInEveryPosition) {
  // Bytes 0..255 three times over, shifted by one each round: every 6-bit value lands in every
  // one of the four positions of a group, and in every lane of a 16-byte step.
  for (int shift = 0; shift < 3; ++shift) {
    std::string in;
    for (int round = 0; round < 3; ++round)
      for (int b = 0; b < 256; ++b) in += static_cast<char>((b + shift * 85 + round) & 0xff);
    EXPECT_EQ(base64_encode(in), reference_encode(in)) << "shift " << shift;
  }
}

TEST(Base64, EveryLengthAndAlignmentMatchesTheReference) {
  std::mt19937 rng(20261203);
  std::string pool(4096 + 64, '\0');
  for (auto& c : pool) c = static_cast<char>(rng());
  for (std::size_t offset = 0; offset < 16; ++offset) {
    for (std::size_t length = 0; length <= 200; ++length) {
      const std::string_view in(pool.data() + offset, length);
      ASSERT_EQ(base64_encode(in), reference_encode(in)) << "offset " << offset << " length " << length;
    }
  }
  for (std::size_t length : {4095u, 4096u, 4097u}) {
    const std::string_view in(pool.data() + 3, length);
    EXPECT_EQ(base64_encode(in), reference_encode(in)) << "length " << length;
    EXPECT_EQ(base64_decode(base64_encode(in)), std::string(in));
  }
}

TEST(Base64, EncodeIntoAppends) {
  std::string line = "{\"b64\":\"";
  base64_encode_into(line, "hello, world\r\n");
  EXPECT_EQ(line, "{\"b64\":\"" + reference_encode("hello, world\r\n"));
}

TEST(Base64, DecodeRefusesWhatIsNotBase64) {
  EXPECT_EQ(base64_decode("Zm9"), std::nullopt);       // not a multiple of 4
  EXPECT_EQ(base64_decode("Zm9v!A=="), std::nullopt);  // outside the alphabet
  EXPECT_EQ(base64_decode("Zg==Zg=="), std::nullopt);  // padding before the end
}

}  // namespace
}  // namespace mailtap::protocol
