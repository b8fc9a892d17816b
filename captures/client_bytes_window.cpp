// The client's recorded bytes, kept for finding the relay's copies of them (see the header).
#include "captures/client_bytes_window.hpp"

#include <algorithm>
#include <cstring>

namespace mailtap::captures {
namespace {
// How much of a copy's start is searched for when it is not where the last one ended; the
// rest is then compared. memmem (two-way) keeps the search linear whatever the bytes are.
constexpr std::size_t probe_size = 64;
// After a copy, what is left of the kept bytes (a message's ".\r\n", pipelined commands) up
// to this much is moved out of the buffer that held the message, which is freed.
constexpr std::size_t left_after_copy_max = 4 * 1024;
}  // namespace

std::size_t client_bytes_window::passed() const {
  return cursor_ > kept_at_ ? static_cast<std::size_t>(std::min<std::uint64_t>(cursor_ - kept_at_, kept_.size())) : 0;
}

void client_bytes_window::recorded(std::string_view bytes) {
  // What the copies have passed is not looked at again.
  const std::size_t gone = passed();
  kept_.erase(0, gone);
  kept_at_ += gone;
  kept_.append(bytes);
  if (kept_.size() > kept_max) {
    const std::size_t drop = kept_.size() - kept_max / 2;
    kept_.erase(0, drop);
    kept_at_ += drop;
  }
}

void client_bytes_window::let_go() {
  kept_at_ += kept_.size();
  cursor_ = std::max(cursor_, kept_at_);
  std::string().swap(kept_);
}

std::optional<std::uint64_t> client_bytes_window::find(std::string_view bytes) {
  if (bytes.empty()) return std::nullopt;
  const std::size_t from = passed();
  const std::string_view rest = std::string_view(kept_).substr(from);
  std::size_t pos = 0;
  if (rest.substr(0, bytes.size()) != bytes) {
    const std::size_t probe = std::min(bytes.size(), probe_size);
    const void* hit = ::memmem(rest.data(), rest.size(), bytes.data(), probe);
    if (!hit) return std::nullopt;
    pos = static_cast<std::size_t>(static_cast<const char*>(hit) - rest.data());
    if (rest.substr(pos, bytes.size()) != bytes) return std::nullopt;
  }
  const std::uint64_t at = kept_at_ + from + pos;
  cursor_ = at + bytes.size();
  // What is left after the copy (a message's ".\r\n", pipelined commands) is kept without
  // the large buffer that held the message.
  const std::size_t copied_to = passed();
  if (kept_.size() - copied_to <= left_after_copy_max) {
    std::string left(kept_, copied_to);
    kept_.swap(left);   // swap, not assign: assigning a short string keeps the large buffer
    kept_at_ = cursor_;
  }
  return at;
}

}  // namespace mailtap::captures
