// The client's incoming bytes as the capture recorded them, kept until the relay's copy of
// them to the upstream is recorded: the writer then records that copy as a `bytes_ref` to
// them (FORMAT.md, since format version 4) instead of a second copy of the same message.
// Pure: no I/O, no locking (one session's writer calls it from the session's thread).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::captures {

class client_bytes_window {
 public:
  // Bytes not yet passed by a copy are kept up to this much; older ones are let go (a copy
  // of them is then recorded whole). A read is at most 64 KiB and its copy (DATA or BDAT) is
  // sent as it is parsed, so this only bounds what copies that differ (normalized, edited)
  // leave behind within a message; let_go frees the rest when a transaction ends.
  static constexpr std::size_t kept_max = 256 * 1024;

  // The client's incoming bytes just recorded, in record order: the stream a `bytes_ref`
  // offset counts in is exactly these bytes, concatenated.
  void recorded(std::string_view bytes);

  // Where `bytes` lie whole in that stream (the offset of their first byte), looked for where
  // the last copy ended and then after it; the next look starts after them. nullopt when they
  // are not there (edited, normalized, or no longer kept).
  std::optional<std::uint64_t> find(std::string_view bytes);

  // Nothing kept so far will be copied again (a transaction has ended): let it all go, so a
  // session idle after a message holds none of it.
  void let_go();

  std::size_t kept() const { return kept_.size(); }
  std::size_t kept_capacity() const { return kept_.capacity(); }

 private:
  // How many of the kept bytes lie before where the last copy ended.
  std::size_t passed() const;

  std::string kept_;
  std::uint64_t kept_at_ = 0;   // stream offset of kept_[0]
  std::uint64_t cursor_ = 0;    // stream offset where the last copy found ended
};

}  // namespace mailtap::captures
