// A capture's written bytes leave the page cache one stretch behind the writer (cache_release.hpp).
#include "captures/cache_release.hpp"

#include <fcntl.h>

namespace mailtap::captures {

namespace {

constexpr std::uint64_t page = 4096;

struct kernel_calls final : page_cache_calls {
  void start_writeback(int fd, std::uint64_t from, std::uint64_t length) override {
    ::sync_file_range(fd, static_cast<off64_t>(from), static_cast<off64_t>(length), SYNC_FILE_RANGE_WRITE);
  }
  void drop(int fd, std::uint64_t from, std::uint64_t length) override {
    ::posix_fadvise(fd, static_cast<off_t>(from), static_cast<off_t>(length), POSIX_FADV_DONTNEED);
  }
};

}  // namespace

page_cache_calls& kernel_page_cache() {
  static kernel_calls calls;
  return calls;
}

void cache_release::written(int fd, std::uint64_t total) {
  // Whole pages only: the page the next write goes on stays out of both.
  const std::uint64_t end = total / page * page;
  if (end < started_ + release_step) return;
  calls_->start_writeback(fd, started_, end - started_);
  if (started_ > dropped_) {
    calls_->drop(fd, dropped_, started_ - dropped_);
    dropped_ = started_;
  }
  started_ = end;
}

}  // namespace mailtap::captures
