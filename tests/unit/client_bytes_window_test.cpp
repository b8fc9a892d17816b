// The relay's copies of the client's bytes recorded by reference (format version 4):
// captures/client_bytes_window finding them, and the reader resolving `bytes_ref` records,
// also across records, and refusing one that points past the client's bytes.
#include "captures/client_bytes_window.hpp"
#include "captures/reader.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "protocol/base64.hpp"
#include "scratch_dir.hpp"

namespace mailtap::captures {
namespace {

const std::string commands = "MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n";
std::string body(char c, std::size_t n = 600) { return "Subject: x\r\n\r\n" + std::string(n, c) + "\r\n"; }

TEST(ClientBytesWindow, FindsTheCopyAfterTheCommandsItSkips) {
  client_bytes_window w;
  w.recorded(commands + body('a'));
  EXPECT_EQ(w.find(body('a')), commands.size());
  EXPECT_EQ(w.kept(), 0u) << "every kept byte was passed";
  // The next message: its commands are not copied as bytes of the body; offsets go on.
  w.recorded(".\r\n" + commands + body('b'));
  EXPECT_EQ(w.find(body('b')), commands.size() + body('a').size() + 3 + commands.size());
}

TEST(ClientBytesWindow, FindsACopyThatSpansTwoReads) {
  client_bytes_window w;
  const std::string b = body('c', 2000);
  w.recorded(commands + b.substr(0, 700));
  w.recorded(b.substr(700));
  EXPECT_EQ(w.find(b.substr(0, 500)), commands.size());
  EXPECT_EQ(w.find(b.substr(500)), commands.size() + 500) << "right where the last copy ended";
}

TEST(ClientBytesWindow, BytesThatDifferAreNotFound) {
  client_bytes_window w;
  std::string b = body('d');
  w.recorded(b);
  std::string edited = b;
  edited[400] = 'X';   // past the 64 bytes searched for: found by the probe, refused by the compare
  EXPECT_EQ(w.find(edited), std::nullopt);
  EXPECT_EQ(w.find("never sent"), std::nullopt);
  EXPECT_EQ(w.find(b), 0u) << "a failed look moves nothing";
}

TEST(ClientBytesWindow, KeepsAtMostItsBound) {
  client_bytes_window w;
  const std::string chunk(64 * 1024, 'e');
  for (int i = 0; i < 40; ++i) w.recorded(chunk);   // 2.5 MiB, never copied
  EXPECT_LE(w.kept(), client_bytes_window::kept_max);
  const std::string recent(1000, 'e');
  EXPECT_NE(w.find(recent), std::nullopt) << "the newest bytes are still kept";
}

TEST(ClientBytesWindow, LetGoFreesWhatIsKeptAndOffsetsGoOn) {
  client_bytes_window w;
  w.recorded(commands + body('f', 100'000));   // never copied: normalized, say
  EXPECT_GT(w.kept_capacity(), 100'000u);
  w.let_go();   // the transaction ended
  EXPECT_EQ(w.kept(), 0u);
  EXPECT_EQ(w.kept_capacity(), std::string().capacity()) << "an idle session holds none of it";
  w.recorded(body('g'));
  EXPECT_EQ(w.find(body('g')), commands.size() + body('f', 100'000).size());
}

TEST(ClientBytesWindow, TheMessagesBufferGoesWithItsCopy) {
  client_bytes_window w;
  const std::string b = body('h', 200'000);
  w.recorded(commands + b + ".\r\n");
  EXPECT_EQ(w.find(b), commands.size());
  EXPECT_EQ(w.kept(), 3u) << "only the dot line is left";
  EXPECT_LT(w.kept_capacity(), 64u * 1024) << "without the buffer that held the message";
}

// ---------------------------------------------------------------- the reader

std::string header() {
  return R"({"type":"header","format":"mailtap-capture","version":4,"session":"s","seed":1,"client":"192.0.2.1:1",)"
         R"("listen":"127.0.0.1:25","upstream":"mx:25","started_at":"2026-01-01T00:00:00.000000Z",)"
         R"("started_mono_us":0,"relay":"mailtap 0.1.0","bare_eol":"strict"})"
         "\n";
}
std::string bytes_line(const char* leg, const char* dir, std::string_view data) {
  return std::string(R"({"type":"bytes","t_us":1,"leg":")") + leg + R"(","dir":")" + dir + R"(","b64":")" +
         protocol::base64_encode(data) + "\"}\n";
}
std::string ref_line(std::uint64_t at, std::uint64_t length) {
  return R"({"type":"bytes_ref","t_us":2,"leg":"upstream","dir":"out","client_in_at":)" + std::to_string(at) +
         R"(,"length":)" + std::to_string(length) + "}\n";
}

std::filesystem::path write(const scratch_dir& dir, const std::string& text) {
  auto p = dir.path() / "c.jsonl";
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

TEST(CaptureBytesRef, ResolvesAcrossTheClientsRecordsAndIgnoresOtherLegs) {
  scratch_dir dir;
  const std::string text = header() + bytes_line("client", "in", "EHLO x\r\nDATA\r\nhello ") +
                           bytes_line("upstream", "in", "354 go\r\n") + bytes_line("client", "in", "world\r\n.\r\n") +
                           ref_line(14, 15);
  std::string error;
  auto c = read_capture(write(dir, text), error);
  ASSERT_TRUE(c) << error;
  ASSERT_EQ(c->events.size(), 4u);
  const auto& copy = std::get<bytes_event>(c->events[3]);
  EXPECT_EQ(copy.leg, protocol::leg::upstream);
  EXPECT_EQ(copy.dir, protocol::direction::out);
  EXPECT_EQ(copy.data, "hello world\r\n.\r");
}

TEST(CaptureBytesRef, PastTheClientsBytesIsAnErrorNamingTheLine) {
  scratch_dir dir;
  const auto p = write(dir, header() + bytes_line("client", "in", "0123456789") + ref_line(5, 6));
  std::string error;
  EXPECT_FALSE(read_capture(p, error));
  EXPECT_EQ(error, p.string() + ":3: bytes_ref record: 6 bytes at 5 are past the client's 10 bytes recorded before it");
  const auto huge = write(dir, header() + bytes_line("client", "in", "0123456789") + ref_line(18446744073709551615u, 2));
  EXPECT_FALSE(read_capture(huge, error));
  EXPECT_NE(error.find("are past the client's 10 bytes"), std::string::npos) << error;
}

TEST(CaptureBytesRef, ACopyThatGoesBackIsRefused) {
  // mailtap's copies follow one another through the client's bytes; overlapping ones would let
  // a small file expand without bound.
  scratch_dir dir;
  const auto p = write(dir, header() + bytes_line("client", "in", "0123456789") + ref_line(0, 8) + ref_line(4, 4));
  std::string error;
  EXPECT_FALSE(read_capture(p, error));
  EXPECT_EQ(error, p.string() + ":4: bytes_ref record: bytes at 4 go back before the end of the previous copy (8)");
}

}  // namespace
}  // namespace mailtap::captures
