// The client's input buffer (client_input.hpp).
#include "protocol/client_input.hpp"

#include <algorithm>

namespace mailtap::protocol {

void client_input::append(std::string_view bytes) {
  newest_read_at_ = buf_.size();
  buf_.append(bytes);
}

bool client_input::dot_was_split() const {
  // pos_ < 3: the '.' came in an earlier read, already recorded.
  return pos_ < 3 || pos_ - 3 < newest_read_at_;
}

void client_input::record_parsed_so_far(std::uint64_t now, session_observer* observer) {
  if (recorded_in_buf_ >= pos_) return;
  if (observer) {
    const std::string_view slice = std::string_view(buf_).substr(recorded_in_buf_, pos_ - recorded_in_buf_);
    bool masked = false;
    for (auto [from, to] : masks_) masked = masked || (from < pos_ && to > recorded_in_buf_);
    if (!masked) {
      observer->on_bytes(now, leg::client, direction::in, slice);
    } else {
      std::string copy(slice);
      for (auto [from, to] : masks_)
        for (std::size_t i = std::max(from, recorded_in_buf_); i < to && i < pos_; ++i)
          if (copy[i - recorded_in_buf_] != '\r' && copy[i - recorded_in_buf_] != '\n') copy[i - recorded_in_buf_] = '*';
      observer->on_bytes(now, leg::client, direction::in, copy);
    }
  }
  recorded_in_buf_ = pos_;
}

void client_input::record_ahead(std::size_t n, std::uint64_t now, session_observer* observer) {
  const std::size_t parsed = pos_;
  pos_ = std::min(pos_ + n, buf_.size());
  record_parsed_so_far(now, observer);
  pos_ = parsed;
}

void client_input::record_parsed(std::uint64_t now, session_observer* observer) {
  record_parsed_so_far(now, observer);
  if (pos_ == 0) return;
  // Masks of what is recorded ahead (record_ahead) were used already.
  masks_.clear();
  recorded_ += pos_;
  buf_.erase(0, pos_);
  newest_read_at_ = newest_read_at_ > pos_ ? newest_read_at_ - pos_ : 0;
  recorded_in_buf_ = recorded_in_buf_ > pos_ ? recorded_in_buf_ - pos_ : 0;
  pos_ = 0;
}

void client_input::record_and_drop_rest(std::uint64_t now, session_observer* observer) {
  pos_ = buf_.size();   // the rest counts as taken: recorded with its masks, then dropped
  record_parsed(now, observer);
}

}  // namespace mailtap::protocol
