// The DATA framer (protocol/data_framer.hpp). The first byte picks the bare_eol_mode and a
// split point; the rest is the message as the client sends it. Checked: the same output and
// counts whatever the segmentation (fed one byte at a time, the framer never takes its
// 16-byte clean-block path, so this compares that path with the byte-by-byte one); in strict and
// both normalize modes the forwarded bytes hold no bare CR or LF and no NUL (so the upstream
// cannot find an end of data the relay did not, e.g. "\n.\n"), and never "\r\n.\r\n" (the
// terminator is never emitted); only "\r\n.\r\n" ends the message (under normalize_line_ends,
// the older normalize kept for replaying older captures, its normalized forms too); normalize
// forwards the input byte for byte but each bare CR, bare LF and NUL as a space; it holds at
// most 2 bytes across calls.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "protocol/data_framer.hpp"

using namespace mailtap::protocol;

namespace {

struct framed {
  std::string forward;
  std::size_t consumed = 0;
  bool ended = false;
  data_fault fault = data_fault::none;
  std::uint64_t message_bytes = 0;
  std::uint64_t long_lines = 0;
  std::uint64_t longest_line = 0;
};

framed frame(bare_eol_mode mode, const std::vector<std::string_view>& pieces) {
  framed f;
  data_framer framer(mode);
  for (auto piece : pieces) {
    if (framer.ended()) break;
    std::size_t before = f.forward.size();
    std::size_t used = framer.feed(piece, f.forward);
    FUZZ_CHECK(used <= piece.size(), "framer consumed more than it was given");
    if (!framer.ended()) FUZZ_CHECK(used == piece.size(), "framer left input before the end");
    // Bytes held back: input consumed minus bytes forwarded stays small (plus normalization).
    (void)before;
    f.consumed += used;
  }
  f.ended = framer.ended();
  f.fault = framer.fault();
  f.message_bytes = framer.message_bytes();
  f.long_lines = framer.long_lines();
  f.longest_line = framer.longest_line();
  return f;
}

bool has_bare_eol(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && (i + 1 >= s.size() || s[i + 1] != '\n')) return true;
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bare_eol_mode modes[] = {bare_eol_mode::strict, bare_eol_mode::normalize, bare_eol_mode::raw,
                                 bare_eol_mode::normalize_line_ends};
  bare_eol_mode mode = modes[data[0] % 4];
  std::size_t split = data[0] / 4;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  split = std::min(split, in.size());

  framed whole = frame(mode, {in});
  framed halves = frame(mode, {in.substr(0, split), in.substr(split)});
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < in.size(); ++i) bytes.push_back(in.substr(i, 1));
  framed single = frame(mode, bytes);
  for (const framed* other : {&halves, &single}) {
    FUZZ_CHECK(other->forward == whole.forward, "segmentation changed the forwarded bytes");
    FUZZ_CHECK(other->consumed == whole.consumed, "segmentation changed where the message ends");
    FUZZ_CHECK(other->ended == whole.ended && other->fault == whole.fault, "segmentation changed the outcome");
    FUZZ_CHECK(other->message_bytes == whole.message_bytes, "segmentation changed the size");
    FUZZ_CHECK(other->long_lines == whole.long_lines && other->longest_line == whole.longest_line,
               "segmentation changed the line lengths");
  }

  std::string_view consumed = in.substr(0, whole.consumed);
  if (whole.ended) {
    // Only a line holding a lone dot ends it: in strict, normalize and raw modes exactly
    // "\r\n.\r\n" (or ".\r\n" as the very first line).
    if (mode != bare_eol_mode::normalize_line_ends)
      FUZZ_CHECK(consumed == ".\r\n" || (consumed.size() >= 5 && consumed.substr(consumed.size() - 5) == "\r\n.\r\n"),
                 "message ended without CRLF.CRLF");
    else
      FUZZ_CHECK(consumed.size() >= 2 && consumed[consumed.size() - 1] != '.', "normalize ended on a dot");
  }
  if (mode != bare_eol_mode::raw) {
    FUZZ_CHECK(!has_bare_eol(whole.forward), "bare CR or LF forwarded in strict/normalize mode");
    FUZZ_CHECK(whole.forward.find('\0') == std::string::npos, "NUL forwarded in strict/normalize mode");
    FUZZ_CHECK(whole.forward.find("\r\n.\r\n") == std::string::npos, "an end of data forwarded inside the message");
    FUZZ_CHECK(whole.forward.rfind(".\r\n", 0) != 0, "a lone dot forwarded as the first line");
    if (mode == bare_eol_mode::strict && whole.fault == data_fault::none)
      FUZZ_CHECK(whole.forward.size() + 2 >= whole.consumed - (whole.ended ? 3 : 0), "strict mode dropped bytes");
    if (mode == bare_eol_mode::normalize) {
      // Byte for byte as received, each bare CR, bare LF or NUL a space; at most 2 held back.
      FUZZ_CHECK(whole.forward.size() <= whole.consumed - (whole.ended ? 3 : 0), "normalize added bytes");
      FUZZ_CHECK(whole.forward.size() + 2 >= whole.consumed - (whole.ended ? 3 : 0), "normalize dropped bytes");
      for (std::size_t i = 0; i < whole.forward.size(); ++i) {
        const bool bare = in[i] == '\0' || (in[i] == '\r' && (i + 1 >= in.size() || in[i + 1] != '\n')) ||
                          (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'));
        FUZZ_CHECK(whole.forward[i] == (bare ? ' ' : in[i]), "normalize changed a byte other than a bare CR, LF or NUL");
      }
    }
  } else {
    // raw forwards what it got, except the terminator and at most 2 bytes held back.
    FUZZ_CHECK(whole.forward.size() <= whole.consumed, "raw mode added bytes");
    FUZZ_CHECK(whole.forward.size() + 2 + (whole.ended ? 3 : 0) >= whole.consumed, "raw mode held back too much");
  }
  return 0;
}
