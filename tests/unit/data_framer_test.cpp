// DATA framer: only <CRLF>.<CRLF> ends a message; dot-stuffing passes unchanged; the terminator
// is never forwarded and nothing after it is consumed; every SMTP-smuggling sequence is handled
// per mode (strict faults; normalize forwards each bare CR/LF, and each NUL, as a space, so only
// CRLF.CRLF ends the message and what it forwards is unambiguous and is the message the upstream
// reads; raw passes bytes; normalize_line_ends, kept to replay older captures, reads bare CR/LF
// as CRLF and ends the message where the normalized stream ends it); lines of any length stream through
// unchanged and are counted. Every case is re-run with the input split at every byte boundary
// and one byte at a time, and must give identical results.
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
  std::uint64_t nuls_replaced = 0;
  std::uint64_t long_lines = 0;
  std::uint64_t longest_line = 0;
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
  out.nuls_replaced = f.nuls_replaced();
  out.long_lines = f.long_lines();
  out.longest_line = f.longest_line();
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
  EXPECT_EQ(a.nuls_replaced, b.nuls_replaced);
  EXPECT_EQ(a.long_lines, b.long_lines);
  EXPECT_EQ(a.longest_line, b.longest_line);
}

// Frames `input` whole, then split into [0,k) + [k,n) for every k in 0..n, then one byte at a
// time, and checks every run agrees with the whole one. `boundary` limits the splits tried for
// very long inputs (see near_edges); by default every boundary is tried.
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

// What normalize mode does to an input holding a terminator: each bare CR, bare LF and NUL (as
// fault_at finds them) becomes one space, in place, and the message ends at the first CRLF.CRLF
// of what that makes (a message's start counting as a line's).
framed normalize_reference(std::string_view s) {
  framed r;
  std::string spaced(s);
  for (std::size_t i = 0; i < s.size(); ++i)
    if (fault_at(s, i) != data_fault::none) spaced[i] = ' ';
  const std::size_t end = ("\r\n" + spaced).find("\r\n.\r\n");   // where the message's own bytes end
  EXPECT_NE(end, std::string::npos) << "normalize_reference takes inputs that hold a terminator";
  if (end == std::string::npos) return r;
  r.ended = true;
  r.consumed = end + 3;
  r.forward = spaced.substr(0, end);
  for (std::size_t i = 0; i < end; ++i) {
    r.normalized += s[i] != '\0' && fault_at(s, i) != data_fault::none;
    r.nuls_replaced += s[i] == '\0';
  }
  r.message_bytes = r.forward.size();
  return r;
}

// What normalize_line_ends (older captures' normalize) does, written line by line as a receiver that takes CRLF, a bare CR and a
// bare LF alike as a line ending reads the input: each line goes out with CRLF (NUL as a space)
// until a line that is exactly "."; an unfinished line goes out as far as it is known (a
// trailing CR, or a lone line-start ".", may still turn out to be a line ending or the end).
framed normalize_line_ends_reference(std::string_view s) {
  framed r;
  auto take = [&](std::string_view line) {
    for (char c : line) {
      r.forward += c == '\0' ? ' ' : c;
      r.nuls_replaced += c == '\0';
    }
  };
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t j = s.find_first_of("\r\n", i);
    if (j == std::string_view::npos || (s[j] == '\r' && j + 1 == s.size())) {
      std::string_view rest = s.substr(i, j == std::string_view::npos ? j : j - i);
      if (rest != ".") take(rest);
      break;
    }
    const std::size_t eol = s[j] == '\r' && s[j + 1] == '\n' ? 2 : 1;
    r.normalized += eol == 1;
    std::string_view line = s.substr(i, j - i);
    i = j + eol;
    if (line == ".") {
      r.ended = true;
      r.consumed = i;
      r.message_bytes = r.forward.size();
      return r;
    }
    take(line);
    r.forward += "\r\n";
    if (line.size() > limits::data_line_rfc_max) ++r.long_lines;
    r.longest_line = std::max<std::uint64_t>(r.longest_line, line.size());
  }
  r.consumed = s.size();
  r.message_bytes = r.forward.size();
  return r;
}

// What the upstream reads from the forwarded bytes and the relay's own ".\r\n": a strict
// receiver ends the message at the first CRLF.CRLF. It must be the relay's, and nothing in
// the forwarded bytes may read differently to a lenient receiver (no bare CR or LF).
void expect_upstream_reads_exactly(std::string_view forward) {
  const std::string stream = "\r\n" + std::string(forward) + ".\r\n";
  EXPECT_EQ(stream.find("\r\n.\r\n"), stream.size() - 5) << "the upstream would end early: " << escape_bytes(forward);
  EXPECT_EQ(count_bare(forward), 0u) << escape_bytes(forward);
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
  EXPECT_EQ(normalized.nuls_replaced, 1u);
  EXPECT_EQ(normalized.normalized, 0u) << "a NUL is not a line ending";
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

// The hostile-peer trial with a real Postfix: under normalize, "hello\n.\nMAIL FROM:..." ended
// the message at "\n.\n" and the rest was read as commands, a second message smuggled through
// as clean CRLF. No sequence may end it: each bare CR or LF (and NUL) goes out as a space, the
// line goes on, and only the real CRLF.CRLF ends it.
TEST(DataFramer, SmugglingNormalizeNeverEndsEarlyAndForwardsNoBareEol) {
  for (const auto& seq : smuggling_sequences) {
    for (const auto& msg : messages_with(seq)) {
      SCOPED_TRACE(escape_bytes(msg));
      std::string input = msg + ".\r\nRSET\r\n";
      auto r = frame(bare_eol_mode::normalize, input);
      auto want = normalize_reference(input);
      EXPECT_TRUE(r.ended);
      EXPECT_EQ(r.consumed, msg.size() + 3) << "ended somewhere other than the real CRLF.CRLF";
      EXPECT_EQ(r.fault, data_fault::none);
      EXPECT_TRUE(r.forward == want.forward) << escape_bytes(r.forward) << "\n vs \n" << escape_bytes(want.forward);
      EXPECT_EQ(r.forward.size(), msg.size()) << "each bare CR, LF or NUL is one space";
      EXPECT_EQ(r.normalized + r.nuls_replaced, count_bare(msg));
      EXPECT_EQ(r.normalized, want.normalized);
      EXPECT_EQ(r.nuls_replaced, want.nuls_replaced);
      EXPECT_EQ(r.message_bytes, msg.size());
      expect_upstream_reads_exactly(r.forward);
    }
  }
}

// Older captures' normalize (replay only): ends where the stream normalized to CRLF ends it.
TEST(DataFramer, SmugglingNormalizeLineEndsEndsWhereTheNormalizedStreamEnds) {
  for (const auto& seq : smuggling_sequences) {
    for (const auto& msg : messages_with(seq)) {
      SCOPED_TRACE(escape_bytes(msg));
      std::string input = msg + ".\r\nRSET\r\n";
      auto r = frame(bare_eol_mode::normalize_line_ends, input);
      auto want = normalize_line_ends_reference(input);
      EXPECT_TRUE(r.ended);
      EXPECT_EQ(r.consumed, want.consumed) << "ended somewhere other than the normalized CRLF.CRLF";
      EXPECT_EQ(r.fault, data_fault::none);
      EXPECT_TRUE(r.forward == want.forward) << escape_bytes(r.forward) << "\n vs \n" << escape_bytes(want.forward);
      EXPECT_EQ(r.normalized, want.normalized);
      EXPECT_EQ(r.nuls_replaced, want.nuls_replaced);
      EXPECT_EQ(r.message_bytes, r.forward.size());
      expect_upstream_reads_exactly(r.forward);
    }
  }
}

TEST(DataFramer, NormalizeMakesBareLineEndingsSpaces) {
  struct example {
    std::string_view input, forward, next_command;
  };
  const example examples[] = {
      {"a\n.\nMAIL FROM:<x@y>\r\n.\r\n", "a . MAIL FROM:<x@y>\r\n", ""},
      {"a\r\n.\nMAIL\r\n.\r\nQUIT\r\n", "a\r\n. MAIL\r\n", "QUIT\r\n"},   // ".\n": a dot line's content
      {"a\r\n.\rMAIL\r\n.\r\n", "a\r\n. MAIL\r\n", ""},                   // ".\r" then not LF: the same
      {"a\r.\r\nMAIL\r\n.\r\n", "a .\r\nMAIL\r\n", ""},
      {"a\r\n.\r\r\n.\r\n", "a\r\n. \r\n", ""},
      {"a\rb\nc\r\r\n.\r\n", "a b c \r\n", ""},
      {".\n\r\n.\r\n", ". \r\n", ""},
      {"..\n.x\n. \n\r\n.\r\n", ".. .x .  \r\n", ""},                      // stuffed dots pass as they came
      {"\n\n.\n\r\n.\r\n", "  . \r\n", ""},
  };
  for (const auto& e : examples) {
    SCOPED_TRACE(escape_bytes(e.input));
    auto r = frame(bare_eol_mode::normalize, e.input);
    EXPECT_TRUE(r.ended);
    EXPECT_EQ(r.forward, e.forward);
    EXPECT_EQ(e.input.substr(r.consumed), e.next_command);
    expect_upstream_reads_exactly(r.forward);
  }
}

TEST(DataFramer, NormalizeLineEndsReadsBareLineEndingsAsCrlf) {
  struct example {
    std::string_view input, forward, next_command;
  };
  const example examples[] = {
      {"a\n.\nMAIL FROM:<x@y>\r\n", "a\r\n", "MAIL FROM:<x@y>\r\n"},
      {"a\r\n.\nMAIL\r\n", "a\r\n", "MAIL\r\n"},
      {"a\r\n.\rMAIL\r\n", "a\r\n", "MAIL\r\n"},            // ".\r" then not LF: the end
      {"a\r.\r\nMAIL\r\n", "a\r\n", "MAIL\r\n"},
      {"a\r\n.\r\r\n", "a\r\n", "\r\n"},                        // the CRLF after ".\r" is not data
      {"a\rb\nc\r\r\n.\r\n", "a\r\nb\r\nc\r\n\r\n", ""},
      {".\n", "", ""},                                             // empty message
      {"..\n.x\n. \n.\n", "..\r\n.x\r\n. \r\n", ""},                // stuffed lines pass as they came
      {"\n\n.\n", "\r\n\r\n", ""},
  };
  for (const auto& e : examples) {
    SCOPED_TRACE(escape_bytes(e.input));
    auto r = frame(bare_eol_mode::normalize_line_ends, e.input);
    EXPECT_TRUE(r.ended);
    EXPECT_EQ(r.forward, e.forward);
    EXPECT_EQ(e.input.substr(r.consumed), e.next_command);
    expect_upstream_reads_exactly(r.forward);
  }
}

TEST(DataFramer, NormalizeHoldsOnlyAPossibleLineEnding) {
  // A trailing CR may be half of a CRLF, a line-start '.' may be the end: both wait for the
  // next byte; everything else goes out at once.
  EXPECT_EQ(frame(bare_eol_mode::normalize, "line\r").forward, "line");
  EXPECT_EQ(frame(bare_eol_mode::normalize, "line\n").forward, "line ");
  EXPECT_EQ(frame(bare_eol_mode::normalize, "line\n.").forward, "line .") << "a '.' after a bare LF is mid-line";
  EXPECT_EQ(frame(bare_eol_mode::normalize, "line\n.\r").forward, "line .");
  EXPECT_EQ(frame(bare_eol_mode::normalize, "line\r\n.").forward, "line\r\n");
  EXPECT_EQ(frame(bare_eol_mode::normalize, "line\r\n.\r").forward, "line\r\n");
  EXPECT_FALSE(frame(bare_eol_mode::normalize, "line\n.\r").ended);
  EXPECT_FALSE(frame(bare_eol_mode::normalize, "line\r\n.\r").ended);
  // Older captures' normalize: a bare LF ended the line.
  EXPECT_EQ(frame(bare_eol_mode::normalize_line_ends, "line\n").forward, "line\r\n");
  EXPECT_EQ(frame(bare_eol_mode::normalize_line_ends, "line\n.").forward, "line\r\n");
  EXPECT_EQ(frame(bare_eol_mode::normalize_line_ends, "line\n.\r").forward, "line\r\n");
  EXPECT_FALSE(frame(bare_eol_mode::normalize_line_ends, "line\n.\r").ended);
}

// A recorded message step is the relay's bytes up to where it found the end; under the older
// normalize it ended "hello\r.\r" on the client's next byte, which is not in the step, so a
// framer given only the step holds ".\r" (replay/script.cpp copy_relayed). The step being
// complete, that held ".\r" ended it; in every other mode and state nothing changes.
TEST(DataFramer, EndOfCompleteInputEndsOnlyAnOlderNormalizesHeldDotCr) {
  for (std::string_view step : {"hello\r.\r", "hello\r\n.\r", "hello\n.\r"}) {
    SCOPED_TRACE(escape_bytes(step));
    data_framer f(bare_eol_mode::normalize_line_ends);
    std::string forward;
    EXPECT_EQ(f.feed(step, forward), step.size());
    EXPECT_FALSE(f.ended());
    const auto before = f.normalized();
    EXPECT_TRUE(f.end_of_complete_input());
    EXPECT_TRUE(f.ended());
    EXPECT_EQ(forward, "hello\r\n");
    EXPECT_EQ(f.normalized(), before + 1) << "the \r after the dot, read as a line ending";
    // The same as the live relay, which saw the next byte.
    auto live = run(bare_eol_mode::normalize_line_ends, {std::string(step) + "QUIT\r\n"});
    EXPECT_TRUE(live.ended);
    EXPECT_EQ(live.consumed, step.size());
    EXPECT_EQ(live.forward, forward);
    EXPECT_EQ(live.normalized, f.normalized());
  }
  for (auto mode : {bare_eol_mode::strict, bare_eol_mode::normalize, bare_eol_mode::raw, bare_eol_mode::normalize_line_ends}) {
    SCOPED_TRACE(std::string(to_string(mode)));
    for (std::string_view in : {"hello\r\n.", "hello\r", "hello", "hello\r\n.\r"}) {
      if (mode == bare_eol_mode::normalize_line_ends && in == "hello\r\n.\r") continue;
      data_framer f(mode);
      std::string forward;
      f.feed(in, forward);
      EXPECT_FALSE(f.end_of_complete_input()) << escape_bytes(in);
      std::string more;
      EXPECT_EQ(f.feed("\r\n", more), 2u) << "still framing";
    }
  }
}

// Every input of up to 6 bytes over {a . CR LF NUL}, followed by the real terminator, in every
// mode: the end is the right one for the mode, and what strict (before a fault) and normalize
// forward is read by the upstream exactly as the relay framed it.
TEST(DataFramer, EveryShortInputFramesConsistently) {
  static constexpr char alphabet[] = {'a', '.', '\r', '\n', '\0'};
  std::size_t tried = 0;
  for (std::size_t len = 0; len <= 6; ++len) {
    std::size_t combos = 1;
    for (std::size_t k = 0; k < len; ++k) combos *= std::size(alphabet);
    for (std::size_t code = 0; code < combos; ++code) {
      std::string msg;
      for (std::size_t k = 0, c = code; k < len; ++k, c /= std::size(alphabet)) msg += alphabet[c % std::size(alphabet)];
      const std::string input = "x\r\n" + msg + "\r\n.\r\nQUIT\r\n";
      SCOPED_TRACE(escape_bytes(input));
      const std::size_t end = input.find("\r\n.\r\n");   // only CRLF.CRLF ends it
      auto norm = frame(bare_eol_mode::normalize, input);
      auto want = normalize_reference(input);
      EXPECT_EQ(norm.forward, want.forward);
      EXPECT_EQ(norm.consumed, want.consumed);
      EXPECT_EQ(norm.consumed, end + 5);
      EXPECT_EQ(norm.normalized, want.normalized);
      EXPECT_EQ(norm.nuls_replaced, want.nuls_replaced);
      EXPECT_TRUE(norm.ended);
      expect_upstream_reads_exactly(norm.forward);
      auto older = frame(bare_eol_mode::normalize_line_ends, input);
      auto older_want = normalize_line_ends_reference(input);
      EXPECT_EQ(older.forward, older_want.forward);
      EXPECT_EQ(older.consumed, older_want.consumed);
      EXPECT_EQ(older.normalized, older_want.normalized);
      EXPECT_EQ(older.nuls_replaced, older_want.nuls_replaced);
      EXPECT_TRUE(older.ended);
      expect_upstream_reads_exactly(older.forward);
      auto strict = frame(bare_eol_mode::strict, input);
      EXPECT_EQ(strict.consumed, end + 5);
      EXPECT_EQ(strict.fault, first_fault(input.substr(0, end + 2)));
      if (strict.fault == data_fault::none) {
        expect_upstream_reads_exactly(strict.forward);
      } else {   // no dot follows what went before the fault; it must still be unambiguous
        EXPECT_EQ(("\r\n" + strict.forward).find("\r\n.\r\n"), std::string::npos);
        EXPECT_EQ(count_bare(strict.forward), 0u);
      }
      auto raw = frame(bare_eol_mode::raw, input);
      EXPECT_EQ(raw.consumed, strict.consumed);
      if (testing::Test::HasFailure()) return;
      ++tried;
    }
  }
  EXPECT_EQ(tried, 1u + 5 + 25 + 125 + 625 + 3125 + 15625);
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
  const std::string msg = "Subject: x\n\nbody\n.\n";   // a Unix-style sender (curl without --crlf)
  auto strict = frame(bare_eol_mode::strict, msg);
  EXPECT_FALSE(strict.ended);
  EXPECT_EQ(strict.fault, data_fault::bare_cr_or_lf);
  auto norm = frame(bare_eol_mode::normalize, msg);
  EXPECT_FALSE(norm.ended) << "only CRLF.CRLF ends it (RFC 5321 4.1.1.4)";
  EXPECT_EQ(norm.consumed, msg.size());
  EXPECT_EQ(norm.forward, "Subject: x  body . ");
  EXPECT_EQ(norm.message_bytes, norm.forward.size());
  EXPECT_EQ(norm.normalized, 4u);   // four LFs, each a space
  auto older = frame(bare_eol_mode::normalize_line_ends, msg);
  EXPECT_TRUE(older.ended) << "\\n.\\n read as CRLF.CRLF, as older Postfix and Exim read it";
  EXPECT_EQ(older.consumed, msg.size());
  EXPECT_EQ(older.forward, "Subject: x\r\n\r\nbody\r\n");
  EXPECT_EQ(older.message_bytes, older.forward.size());
  EXPECT_EQ(older.normalized, 4u);   // four LFs: three line endings and the terminator's
  auto raw = frame(bare_eol_mode::raw, msg);
  EXPECT_FALSE(raw.ended);
  EXPECT_EQ(raw.forward, msg);
}

// ---------------------------------------------------------------- line length

// Long inputs make every-boundary splitting quadratic; try every boundary near the start and
// the end and around RFC 5321's limit, and every 61st elsewhere.
bool near_edges(std::size_t k, std::size_t n) {
  const std::size_t rfc = limits::data_line_rfc_max;
  return k < 300 || k + 300 > n || (k + 300 > rfc && k < rfc + 300) || k % 61 == 0;
}

TEST(DataFramer, LinesAtRfcLimitAreNotCounted) {
  for (auto mode : all_modes) {
    SCOPED_TRACE(std::string(to_string(mode)));
    std::string at_limit(limits::data_line_rfc_max, 'x');   // 1000 octets with its CRLF
    auto r = frame(mode, at_limit + "\r\n.\r\n");
    EXPECT_EQ(r.long_lines, 0u);
    EXPECT_EQ(r.longest_line, limits::data_line_rfc_max);
    auto over = frame(mode, at_limit + "x\r\nshort\r\n.\r\n");
    EXPECT_EQ(over.long_lines, 1u);
    EXPECT_EQ(over.longest_line, limits::data_line_rfc_max + 1);
  }
}

TEST(DataFramer, TheDotOpeningALineIsNotCountedInItsLength) {
  // A 998-octet line of the message that starts with '.' is 999 octets on the wire, stuffed;
  // RFC 5321 4.5.3.1.6 does not count the duplicated dot, so it is not a long line.
  for (auto mode : all_modes) {
    SCOPED_TRACE(std::string(to_string(mode)));
    const std::string stuffed = "." + ("." + std::string(limits::data_line_rfc_max - 1, 'x'));
    auto r = frame(mode, "first\r\n" + stuffed + "\r\n.\r\n", near_edges);
    EXPECT_TRUE(r.ended);
    EXPECT_EQ(r.long_lines, 0u);
    EXPECT_EQ(r.longest_line, limits::data_line_rfc_max);
    auto over = frame(mode, "first\r\n" + stuffed + "x\r\n.\r\n", near_edges);
    EXPECT_EQ(over.long_lines, 1u);
    EXPECT_EQ(over.longest_line, limits::data_line_rfc_max + 1);
  }
}

TEST(DataFramer, LongLinesStreamThroughUnchanged) {
  // A 100 KiB HTML line (curl) and one just past the former 64 KiB cap: forwarded byte for
  // byte in every mode, the message ends where it should, and the lines are counted.
  for (auto mode : all_modes) {
    for (std::size_t length : {std::size_t{64 * 1024 + 1}, std::size_t{100 * 1024}}) {
      SCOPED_TRACE(std::string(to_string(mode)) + " " + std::to_string(length));
      std::string line = "<p>" + std::string(length - 7, 'x') + "</p>";
      std::string msg = "short\r\n" + line + "\r\n.dot-stuffed\r\n" + line + "\r\nafter\r\n";
      auto r = frame(mode, msg + ".\r\nQUIT\r\n", near_edges);
      EXPECT_TRUE(r.ended);
      EXPECT_EQ(r.consumed, msg.size() + 3);
      EXPECT_EQ(r.fault, data_fault::none);
      EXPECT_TRUE(r.forward == msg) << "the long lines were not forwarded unchanged";
      EXPECT_EQ(r.message_bytes, msg.size());
      EXPECT_EQ(r.long_lines, 2u);
      EXPECT_EQ(r.longest_line, length);
    }
  }
}

TEST(DataFramer, UnendingLineIsForwardedAsItArrives) {
  // Bounded memory: each piece of a 1 MiB line goes out in the call that brought it, so nothing
  // accumulates however long the line grows; at most a CR or a line-start '.' is held.
  for (auto mode : all_modes) {
    SCOPED_TRACE(std::string(to_string(mode)));
    data_framer f(mode);
    const std::string piece(4096, 'y');
    for (int n = 0; n < 256; ++n) {
      std::string forward;
      ASSERT_EQ(f.feed(piece, forward), piece.size());
      ASSERT_TRUE(forward == piece) << "piece " << n;
    }
    std::string forward;
    EXPECT_EQ(f.feed("\r", forward), 1u);
    EXPECT_EQ(forward, "");
    EXPECT_EQ(f.feed("\n.\r\n", forward), 4u);
    EXPECT_EQ(forward, "\r\n");
    EXPECT_TRUE(f.ended());
    EXPECT_EQ(f.fault(), data_fault::none);
    EXPECT_EQ(f.long_lines(), 1u);
    EXPECT_EQ(f.longest_line(), 256u * 4096);
  }
}

// ---------------------------------------------------------------- 16-byte clean blocks

// Messages of well-formed lines, each with at most one oddity placed at a random byte (a bare
// CR or LF, a NUL, a dot opening a line, CRLF split across a block edge by the line's length),
// and a terminator. Fed whole, well-formed lines take the 16-byte path; fed one byte at a time
// and at random splits, they take the byte-by-byte one; every run must agree, in every mode.
TEST(DataFramer, CleanBlocksAgreeWithTheByteByByteFraming) {
  std::uint64_t state = 0x9e3779b97f4a7c15u;
  const auto next = [&state](std::uint64_t bound) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state % bound;
  };
  const std::string oddities[] = {"\r", "\n", std::string(1, '\0'), "\r\n.", "\r\n..", "x\r"};
  for (int round = 0; round < 300; ++round) {
    std::string msg;
    const std::size_t lines = 1 + next(60);
    for (std::size_t l = 0; l < lines; ++l) {
      const std::size_t length = next(8) == 0 ? next(1100) : next(100);
      for (std::size_t b = 0; b < length; ++b) msg += static_cast<char>(' ' + next(95));
      msg += "\r\n";
    }
    if (round % 3 != 0) {
      const std::size_t at = next(msg.size() + 1);
      msg.insert(at, oddities[next(std::size(oddities))]);
    }
    const std::string input = msg + (msg.ends_with("\r\n") ? "" : "\r\n") + ".\r\nQUIT\r\n";
    for (auto mode : {bare_eol_mode::strict, bare_eol_mode::normalize, bare_eol_mode::raw, bare_eol_mode::normalize_line_ends}) {
      SCOPED_TRACE(std::string(to_string(mode)) + " round " + std::to_string(round));
      const framed whole = run(mode, {input});
      std::vector<std::string_view> bytes;
      for (std::size_t i = 0; i < input.size(); ++i) bytes.push_back(std::string_view(input).substr(i, 1));
      expect_same(whole, run(mode, bytes), "one byte at a time");
      std::vector<std::string_view> pieces;
      for (std::size_t from = 0; from < input.size();) {
        const std::size_t size = std::min<std::size_t>(1 + next(40), input.size() - from);
        pieces.push_back(std::string_view(input).substr(from, size));
        from += size;
      }
      expect_same(whole, run(mode, pieces), "random pieces");
      if (round % 3 == 0) {   // no oddity: the lines go out as they came, the terminator stays
        EXPECT_TRUE(whole.ended);
        EXPECT_EQ(whole.fault, data_fault::none);
        EXPECT_TRUE(whole.forward == msg);
      }
      if (testing::Test::HasFailure()) return;
    }
  }
}

// ---------------------------------------------------------------- names

TEST(DataFramer, ModeNames) {
  for (auto mode : all_modes) EXPECT_EQ(parse_bare_eol_mode(to_string(mode)), mode);
  // Only a capture's header selects the older normalize: no configured name gives it.
  EXPECT_EQ(parse_bare_eol_mode(to_string(bare_eol_mode::normalize_line_ends)), std::nullopt);
  EXPECT_EQ(parse_bare_eol_mode("lenient"), std::nullopt);
  EXPECT_EQ(to_string(data_fault::none), "none");
}

}  // namespace
}  // namespace mailtap::protocol
