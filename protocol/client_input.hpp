// The client's input as the relay machine holds it: the bytes received and not yet recorded,
// how far they are parsed, the AUTH spans to mask when they are recorded, and where the
// newest read began (a '.' split from its CRLF, CSCds90792). What the bytes mean (command
// lines, DATA, BDAT, AUTH responses) is relay_fsm's; this owns the buffer and its offsets.
// Parsed bytes are handed to the recorder and dropped, so the buffer holds only what waits;
// above a high watermark the shell stops reading (ARCHITECTURE.md, "Invariants": bounded
// memory). Offsets are positions in the buffer as it is now.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/observer.hpp"

namespace mailtap::protocol {

class client_input {
 public:
  // Held unparsed input above this stops the shell reading (a per-direction high watermark).
  static constexpr std::size_t high_watermark = 64 * 1024;

  void append(std::string_view bytes);
  std::string_view unparsed() const { return std::string_view(buf_).substr(pos_); }
  std::size_t unparsed_size() const { return buf_.size() - pos_; }
  bool fully_parsed() const { return pos_ >= buf_.size(); }
  bool above_watermark() const { return unparsed_size() >= high_watermark; }
  std::size_t pos() const { return pos_; }
  std::size_t size() const { return buf_.size(); }
  // Where the parse position is in the client's whole stream (it survives recording).
  std::uint64_t stream_offset() const { return recorded_ + pos_; }

  void advance(std::size_t n) { pos_ += n; }
  void advance_to_end() { pos_ = buf_.size(); }
  // [from, to) is recorded masked ('*', line ends kept): AUTH material.
  // A span that continues the last one extends it: the masks stay few however many lines.
  void mask(std::size_t from, std::size_t to) {
    if (!masks_.empty() && masks_.back().second == from) masks_.back().second = to;
    else masks_.emplace_back(from, to);
  }
  // The end of a message just parsed (three bytes before the parse position) came in an
  // earlier read than its CRLF.
  bool dot_was_split() const;

  // What is parsed goes to the recorder (masked where asked) and leaves the buffer.
  void record_parsed(std::uint64_t now, session_observer* observer);
  // What is parsed and not yet recorded goes to the recorder; the buffer keeps it (views
  // into it stay valid) until record_parsed. Before the relay sends the client anything, so
  // that the capture has a command's bytes before the reply to it (relay_outbox).
  void record_parsed_so_far(std::uint64_t now, session_observer* observer);
  // The next `n` unparsed bytes go to the recorder too, now, though they are parsed later (a
  // command line a delay fault holds is recorded as it came).
  void record_ahead(std::size_t n, std::uint64_t now, session_observer* observer);
  // Nothing more will be parsed (a stall, the session's end): the rest is recorded, masked
  // where asked, and dropped.
  void record_and_drop_rest(std::uint64_t now, session_observer* observer);

 private:
  std::string buf_;
  std::size_t pos_ = 0;               // parse offset into buf_
  std::size_t recorded_in_buf_ = 0;   // buf_ before this is recorded (record_parsed_so_far)
  std::uint64_t recorded_ = 0;        // bytes recorded and erased from buf_ so far
  std::size_t newest_read_at_ = 0;    // where the latest read begins in buf_
  std::vector<std::pair<std::size_t, std::size_t>> masks_;
};

}  // namespace mailtap::protocol
