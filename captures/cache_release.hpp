// Keeps what a capture has written from piling up in the page cache. Each stretch of
// `release_step` bytes written is handed to writeback at once (sync_file_range(2),
// asynchronous), and the stretch before it, whose writeback has had a stretch of writing's
// time to finish, is dropped from the cache (posix_fadvise(2) POSIX_FADV_DONTNEED; pages
// still being written back are left). The cache pages are then taken again for the next
// bytes, instead of new ones: on a VM whose free memory goes back to its host, a new page
// costs a fault in the host (README "Performance"), and on any machine a relay recording
// all day no longer fills the cache with captures nobody reads. The last stretch stays
// cached, so a capture being read while it grows reads its tail from memory.
// Threading: one per capture file, used under that file's mutex.
#pragma once
#include <cstdint>

namespace mailtap::captures {

inline constexpr std::uint64_t release_step = 1024 * 1024;

// What cache_release asks of the kernel: the real calls, or a recording in unit tests.
struct page_cache_calls {
  virtual ~page_cache_calls() = default;
  virtual void start_writeback(int fd, std::uint64_t from, std::uint64_t length) = 0;
  virtual void drop(int fd, std::uint64_t from, std::uint64_t length) = 0;
};

// sync_file_range(SYNC_FILE_RANGE_WRITE) and posix_fadvise(POSIX_FADV_DONTNEED). Their
// failures are ignored: they cost the cache, never a capture's bytes.
page_cache_calls& kernel_page_cache();

class cache_release {
 public:
  explicit cache_release(page_cache_calls& calls = kernel_page_cache()) : calls_(&calls) {}
  // `total`: the bytes written to fd so far.
  void written(int fd, std::uint64_t total);

 private:
  page_cache_calls* calls_;
  std::uint64_t started_ = 0;   // writeback started for [0, started_)
  std::uint64_t dropped_ = 0;   // dropped for [0, dropped_)
};

}  // namespace mailtap::captures
