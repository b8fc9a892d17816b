// The client's input buffer (client_input.hpp).
#include "protocol/client_input.hpp"

namespace mailtap::protocol {

void client_input::append(std::string_view bytes) {
  newest_read_at_ = buf_.size();
  buf_.append(bytes);
}

bool client_input::dot_was_split() const {
  // pos_ < 3: the '.' came in an earlier read, already recorded.
  return pos_ < 3 || pos_ - 3 < newest_read_at_;
}

void client_input::record_parsed(std::uint64_t now, session_observer* observer) {
  if (pos_ == 0) return;
  if (observer) {
    if (masks_.empty()) {
      observer->on_bytes(now, leg::client, direction::in, std::string_view(buf_).substr(0, pos_));
    } else {
      std::string copy = buf_.substr(0, pos_);
      for (auto [from, to] : masks_)
        for (std::size_t i = from; i < to && i < copy.size(); ++i)
          if (copy[i] != '\r' && copy[i] != '\n') copy[i] = '*';
      observer->on_bytes(now, leg::client, direction::in, copy);
    }
  }
  masks_.clear();
  recorded_ += pos_;
  buf_.erase(0, pos_);
  newest_read_at_ = newest_read_at_ > pos_ ? newest_read_at_ - pos_ : 0;
  pos_ = 0;
}

void client_input::record_and_drop_rest(std::uint64_t now, session_observer* observer) {
  record_parsed(now, observer);
  if (observer && !buf_.empty()) observer->on_bytes(now, leg::client, direction::in, buf_);
  recorded_ += buf_.size();
  buf_.clear();
  newest_read_at_ = 0;
}

}  // namespace mailtap::protocol
