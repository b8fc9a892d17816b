// DATA framer: only <CRLF>.<CRLF> ends a message; dot-stuffing passes unchanged; the terminator
// is never forwarded and nothing after it is consumed; every SMTP-smuggling sequence from
// SMTP_NOTES is handled per mode (strict faults, normalize forwards nothing ambiguous, raw
// passes bytes); a line over 64 KiB faults. Every case is re-run with the input split at
// every byte boundary and one byte at a time, and must give identical results (HOUSE_STYLE 11).
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "protocol/action.hpp"
#include "protocol/data_framer.hpp"
#include "protocol/limits.hpp"

namespace mailtap::protocol {
namespace {

using namespace std::string_literals;

struct framed {
  std::string forward;
  std::size_t consumed = 0;
  bool ended = false;
  data_fault fault = data_fault::none;
  std::uint64_t message_bytes = 0;
  std::uint64_t normalized = 0;
};

framed run(bare_eol_mode mode, const std::vector<std::string_view>& pieces) {
  data_framer f(mode);
  framed out;
  for (auto piece : pieces) {
    std::size_t n = f.feed(piece, out.forward);
    out.consumed += n;
    if (f.ended()) break;
    EXPECT_EQ(n, piece.size()) << "a framer that has not ended consumes everything it is given";
  }
  if (f.ended()) {
    std::string more;
    EXPECT_EQ(f.feed("MAIL FROM:<a@b>\r\n", more), 0u) << "nothing is consumed after the terminator";
    EXPECT_EQ(more, "");
  }
  out.ended = f.ended();
  out.fault = f.fault();
  out.message_bytes = f.message_bytes();
  out.normalized = f.normalized();
  return out;
}

void expect_same(const framed& a, const framed& b, const std::string& how) {
  SCOPED_TRACE(how);
  EXPECT_EQ(a.forward.size(), b.forward.size());
  EXPECT_TRUE(a.forward == b.forward) << escape_bytes(a.forward) << "\n vs \n" << escape_bytes(b.forward);
  EXPECT_EQ(a.consumed, b.consumed);
  EXPECT_EQ(a.ended, b.ended);
  EXPECT_EQ(a.fault, b.fault);
  EXPECT_EQ(a.message_bytes, b.message_bytes);
  EXPECT_EQ(a.normalized, b.normalized);
}

// Frames `input` whole, then split into [0,k) + [k,n) for every k in 0..n, then one byte at a
// time, and checks every run agrees with the whole one. `boundary` limits the splits tried for
// very long inputs (see LineOver64KiBFaults); by default every boundary is tried.
framed frame(bare_eol_mode mode, std::string_view input,
             bool (*boundary)(std::size_t k, std::size_t n) = nullptr) {
  framed whole = run(mode, {input});
  for (std::size_t k = 0; k <= input.size(); ++k) {
    if (boundary && !boundary(k, input.size())) continue;
    expect_same(whole, run(mode, {input.substr(0, k), input.substr(k)}), "split at " + std::to_string(k));
    if (testing::Test::HasFailure()) return whole;   // one report per broken case is enough
  }
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < input.size(); ++i) bytes.push_back(input.substr(i, 1));
  expect_same(whole, run(mode, bytes), "one byte at a time");
  return whole;
}

// A CR not followed by LF, or an LF not preceded by CR.
// The fault a byte at i is, if any: a bare CR or LF, or a NUL (never legal in DATA).
data_fault fault_at(std::string_view s, std::size_t i) {
  if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n')) return data_fault::bare_cr_or_lf;
  if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return data_fault::bare_cr_or_lf;
  if (s[i] == '\0') return data_fault::nul_byte;
  return data_fault::none;
}

// Ambiguous bytes: bare CR, bare LF and NUL.
std::size_t count_bare(std::string_view s) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < s.size(); ++i) n += fault_at(s, i) != data_fault::none;
  return n;
}

// The fault strict mode reports: the first ambiguous byte's.
data_fault first_fault(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i)
    if (auto f = fault_at(s, i); f != data_fault::none) return f;
  return data_fault::none;
}

// What normalize mode should forward: each bare CR or LF, and each NUL, replaced by a space.
std::string normalized_reference(std::string_view s) {
  std::string out(s);
  for (std::size_t i = 0; i < s.size(); ++i)
    if (fault_at(s, i) != data_fault::none) out[i] = ' ';
  return out;
}

constexpr bare_eol_mode all_modes[] = {bare_eol_mode::strict, bare_eol_mode::normalize, bare_eol_mode::raw};

// ---------------------------------------------------------------- termination

TEST(DataFramer, OnlyCrlfDotCrlfEnds) {
  for (auto mode : all_modes) {
    SCOPED_TRACE(std::string(to_string(mode)));
    auto r = frame(mode, "Subject: hi\r\n\r\nbody\r\n.\r\n");
    EXPECT_TRUE(r.ended);
    EXPECT_EQ(r.consumed, 24u);
    EXPECT_EQ(r.forward, "Subject: hi\r\n\r\nbody\r\n");
    EXPECT_EQ(r.fault, data_fault::none);
    EXPECT_EQ(r.message_bytes, 21u);
  }
}

TEST(DataFramer, NoTerminatorNoEnd) {
  for (std::string_view in : {"body\r\n", "body\r\n.", "body\r\n.\r", "body", "body\r", ".", ".\r",
                              "body\r\n. \r\n", "body\r\n.x\r\n"}) {
    SCOPED_TRACE(escape_bytes(in));
    auto r = frame(bare_eol_mode::strict, in);
    EXPECT_FALSE(r.ended);
    EXPECT_EQ(r.consumed, in.size());
    EXPECT_EQ(r.fault, data_fault::none);
  }
}

TEST(DataFramer, HeldCrAndDotAreNotForwardedUntilDecided) {
  // A trailing CR or line-start dot may belong to the terminator; it is held as state only.
  auto a = frame(bare_eol_mode::strict, "line\r");
  EXPECT_EQ(a.forward, "line");
  auto b = frame(bare_eol_mode::strict, "line\r\n.");
  EXPECT_EQ(b.forward, "line\r\n");
  auto c = frame(bare_eol_mode::strict, "line\r\n.\r");
  EXPECT_EQ(c.forward, "line\r\n");
}

TEST(DataFramer, EmptyMessageRightAfter354) {
  for (auto mode : all_modes) {
    SCOPED_TRACE(std::string(to_string(mode)));
    auto r = frame(mode, ".\r\n");
    EXPECT_TRUE(r.ended);
    EXPECT_EQ(r.consumed, 3u);
    EXPECT_EQ(r.forward, "");
    EXPECT_EQ(r.message_bytes, 0u);
  }
}

TEST(DataFramer, BytesAfterTerminatorNotConsumed) {
  const std::string msg = "a\r\n.\r\n";
  for (std::string_view after : {"QUIT\r\n", "MAIL FROM:<x@y>\r\nRCPT TO:<z@y>\r\n", ".\r\n", "\r\n.\r\n"}) {
    SCOPED_TRACE(escape_bytes(after));
    auto r = frame(bare_eol_mode::strict, msg + std::string(after));
    EXPECT_TRUE(r.ended);
    EXPECT_EQ(r.consumed, msg.size());
    EXPECT_EQ(r.forward, "a\r\n");
  }
  auto empty = frame(bare_eol_mode::strict, ".\r\nQUIT\r\n");
  EXPECT_EQ(empty.consumed, 3u);
}

TEST(DataFramer, TerminatorNeverForwarded) {
  for (auto mode : all_modes) {
    auto r = frame(mode, "one\r\ntwo\r\n.\r\n");
    EXPECT_EQ(r.forward, "one\r\ntwo\r\n");
    EXPECT_EQ(r.forward.find("\r\n.\r\n"), std::string::npos);
  }
}

TEST(DataFramer, DotStuffedLinesForwardedUnchanged) {
  const std::string body = "..x\r\n..\r\n...\r\n.hidden\r\nend..\r\n. \r\n";
  for (auto mode : all_modes) {
    SCOPED_TRACE(std::string(to_string(mode)));
    auto r = frame(mode, body + ".\r\n");
    EXPECT_TRUE(r.ended);
    EXPECT_EQ(r.consumed, body.size() + 3);
    EXPECT_EQ(r.forward, body);
    EXPECT_EQ(r.message_bytes, body.size());
    EXPECT_EQ(r.fault, data_fault::none);
  }
  // A message whose first line is stuffed.
  auto first = frame(bare_eol_mode::strict, "..\r\n.\r\n");
  EXPECT_EQ(first.forward, "..\r\n");
  EXPECT_EQ(first.consumed, 7u);
}

TEST(DataFramer, EightBitPassesUnchanged) {
  const std::string body = "Subject: caf\xC3\xA9\r\n\r\n\x01\x7f\xff\r\n"s;
  auto r = frame(bare_eol_mode::strict, body + ".\r\n");
  EXPECT_TRUE(r.ended);
  EXPECT_EQ(r.forward, body);
  EXPECT_EQ(r.fault, data_fault::none);
}

TEST(DataFramer, NulFailsStrictBecomesSpaceInNormalizePassesRaw) {
  const std::string body = "Subject: s\r\n\r\na\x00" "b\r\n"s;
  auto strict = frame(bare_eol_mode::strict, body + ".\r\n");
  EXPECT_TRUE(strict.ended);
  EXPECT_EQ(strict.fault, data_fault::nul_byte);
  EXPECT_EQ(strict.forward.find('\0'), std::string::npos);
  auto normalized = frame(bare_eol_mode::normalize, body + ".\r\n");
  EXPECT_EQ(normalized.forward, "Subject: s\r\n\r\na b\r\n");
  EXPECT_EQ(normalized.normalized, 1u);
  auto raw = frame(bare_eol_mode::raw, body + ".\r\n");
  EXPECT_EQ(raw.forward, body);
}

// ---------------------------------------------------------------- SMTP smuggling

const std::vector<std::string> smuggling_sequences = {
    "\n.\n",      "\n.\r\n",      "\r.\r",          "\r.\n",           "\n.\r",        "\r\n.\n",
    "\r\n.\r",    "\r.\r\n",      "\r\n.\r\r\n",    "\r\r\n.\r\r\n",   "\r\n\x00.\r\n"s, "\r\n.\x00\r\n"s,
};

// Each sequence at the start of the message, mid-line, after a CRLF, and just before the end.
std::vector<std::string> messages_with(const std::string& seq) {
  return {
      seq + "after\r\n",
      "Subject: s\r\n\r\nbefore" + seq + "after\r\n",
      "Subject: s\r\n\r\nline\r\n" + seq + "after\r\n",
      "Subject: s\r\n\r\nbefore" + seq + "\r\n",
  };
}

TEST(DataFramer, SmugglingStrictNeverEndsEarlyAndBareEolFaults) {
  for (const auto& seq : smuggling_sequences) {
    for (const auto& msg : messages_with(seq)) {
      SCOPED_TRACE(escape_bytes(msg));
      std::string input = msg + ".\r\nRSET\r\n";
      auto r = frame(bare_eol_mode::strict, input);
      EXPECT_TRUE(r.ended);
      EXPECT_EQ(r.consumed, msg.size() + 3) << "ended somewhere other than the real CRLF.CRLF";
      EXPECT_EQ(r.message_bytes, msg.size());
      bool bare = count_bare(msg) > 0;
      EXPECT_EQ(r.fault, first_fault(msg));
      if (!bare) {
        EXPECT_EQ(r.forward, msg);
      }
      // Whatever was forwarded before the fault is unambiguous.
      EXPECT_EQ(count_bare(r.forward), 0u) << escape_bytes(r.forward);
      EXPECT_EQ(r.forward.find("\r\n.\r\n"), std::string::npos);
    }
  }
}

TEST(DataFramer, SmugglingNormalizeForwardsNothingAmbiguous) {
  for (const auto& seq : smuggling_sequences) {
    for (const auto& msg : messages_with(seq)) {
      SCOPED_TRACE(escape_bytes(msg));
      std::string input = msg + ".\r\nRSET\r\n";
      auto r = frame(bare_eol_mode::normalize, input);
      EXPECT_TRUE(r.ended);
      EXPECT_EQ(r.consumed, msg.size() + 3);
      EXPECT_EQ(r.fault, data_fault::none);
      // No LF without CR before it, no CR without LF after it.
      for (std::size_t i = 0; i < r.forward.size(); ++i) {
        if (r.forward[i] == '\n') {
          EXPECT_TRUE(i > 0 && r.forward[i - 1] == '\r') << "bare LF at " << i;
        }
        if (r.forward[i] == '\r') {
          EXPECT_TRUE(i + 1 < r.forward.size() && r.forward[i + 1] == '\n') << "bare CR at " << i;
        }
      }
      EXPECT_EQ(r.forward, normalized_reference(msg)) << escape_bytes(r.forward);
      EXPECT_EQ(r.normalized, count_bare(msg));
      EXPECT_EQ(r.forward.find("\r\n.\r\n"), std::string::npos);
    }
  }
}

TEST(DataFramer, SmugglingRawPassesBytesButOnlyCrlfDotCrlfEnds) {
  for (const auto& seq : smuggling_sequences) {
    for (const auto& msg : messages_with(seq)) {
      SCOPED_TRACE(escape_bytes(msg));
      auto r = frame(bare_eol_mode::raw, msg + ".\r\nRSET\r\n");
      EXPECT_TRUE(r.ended);
      EXPECT_EQ(r.consumed, msg.size() + 3);
      EXPECT_EQ(r.forward, msg);
      EXPECT_EQ(r.fault, data_fault::none);
      EXPECT_EQ(r.message_bytes, msg.size());
    }
  }
}

TEST(DataFramer, StrictFaultStopsForwardingButKeepsFraming) {
  auto r = frame(bare_eol_mode::strict, "ok line\r\nbad\nline\r\nmore\r\n.\r\nQUIT\r\n");
  EXPECT_TRUE(r.ended);
  EXPECT_EQ(r.consumed, 28u);
  EXPECT_EQ(r.fault, data_fault::bare_cr_or_lf);
  EXPECT_EQ(r.forward, "ok line\r\nbad");
  EXPECT_EQ(r.message_bytes, 25u);
}

TEST(DataFramer, LfOnlyMessageInEachMode) {
  const std::string msg = "Subject: x\n\nbody\n.\n";   // a Unix-style sender: never terminates
  auto strict = frame(bare_eol_mode::strict, msg);
  EXPECT_FALSE(strict.ended);
  EXPECT_EQ(strict.fault, data_fault::bare_cr_or_lf);
  auto norm = frame(bare_eol_mode::normalize, msg);
  EXPECT_FALSE(norm.ended);
  EXPECT_EQ(norm.forward, "Subject: x  body . ");
  EXPECT_EQ(norm.normalized, 4u);   // four LFs, four spaces
  auto raw = frame(bare_eol_mode::raw, msg);
  EXPECT_FALSE(raw.ended);
  EXPECT_EQ(raw.forward, msg);
}

// ---------------------------------------------------------------- line length

// Long inputs make every-boundary splitting quadratic (64 KiB x 64 KiB framer bytes); try
// every boundary near the start, near the end and around the cap, and every 61st elsewhere.
bool near_edges(std::size_t k, std::size_t n) {
  const std::size_t cap = limits::data_line_cap;
  return k < 300 || k + 300 > n || (k + 300 > cap && k < cap + 300) || k % 61 == 0;
}

TEST(DataFramer, LongLinesUnderTheCapPass) {
  // RFC 5321's 1000 is not enforced: lines are forwarded unchanged up to the cap.
  std::string line(limits::data_line_cap - 2, 'x');   // exactly 64 KiB with its CRLF
  std::string msg = "short\r\n" + line + "\r\n";
  auto r = frame(bare_eol_mode::strict, msg + ".\r\n", near_edges);
  EXPECT_TRUE(r.ended);
  EXPECT_EQ(r.fault, data_fault::none);
  EXPECT_TRUE(r.forward == msg);
}

TEST(DataFramer, LineOver64KiBFaults) {
  for (auto mode : all_modes) {
    for (std::size_t extra : {std::size_t{0}, std::size_t{1}, std::size_t{100}}) {
      SCOPED_TRACE(std::string(to_string(mode)) + " +" + std::to_string(extra));
      std::string line(limits::data_line_cap + extra, 'x');
      std::string msg = "short\r\n" + line + "\r\nafter\r\n";
      auto r = frame(mode, msg + ".\r\nQUIT\r\n", near_edges);
      EXPECT_TRUE(r.ended);
      EXPECT_EQ(r.consumed, msg.size() + 3);
      EXPECT_EQ(r.fault, data_fault::line_too_long);
      EXPECT_EQ(r.message_bytes, msg.size());
      EXPECT_LT(r.forward.size(), msg.size());
      EXPECT_EQ(r.forward.find("after"), std::string::npos) << "nothing after the fault is forwarded";
    }
  }
}

TEST(DataFramer, UnendingLineFaultsWithoutWaitingForItsEnd) {
  std::string line(limits::data_line_cap + 10, 'y');
  auto r = frame(bare_eol_mode::strict, line, near_edges);
  EXPECT_FALSE(r.ended);
  EXPECT_EQ(r.fault, data_fault::line_too_long);
  EXPECT_LE(r.forward.size(), limits::data_line_cap + 1);
}

// ---------------------------------------------------------------- names

TEST(DataFramer, ModeNames) {
  for (auto mode : all_modes) EXPECT_EQ(parse_bare_eol_mode(to_string(mode)), mode);
  EXPECT_EQ(parse_bare_eol_mode("lenient"), std::nullopt);
  EXPECT_EQ(to_string(data_fault::none), "none");
}

}  // namespace
}  // namespace mailtap::protocol
