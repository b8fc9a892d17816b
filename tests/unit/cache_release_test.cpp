// captures/cache_release: which stretches of a growing capture are handed to writeback and
// which are dropped from the page cache (a recording of the calls), and on a real file that
// the dropped stretch has left the cache while the tail stays and every byte reads back.
#include "captures/cache_release.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "scratch_dir.hpp"

namespace mailtap::captures {
namespace {

constexpr std::uint64_t MiB = 1024 * 1024;

struct call {
  char kind;   // 'w' writeback started, 'd' dropped
  std::uint64_t from, length;
  bool operator==(const call&) const = default;
};

struct recording_calls final : page_cache_calls {
  std::vector<call> calls;
  void start_writeback(int, std::uint64_t from, std::uint64_t length) override { calls.push_back({'w', from, length}); }
  void drop(int, std::uint64_t from, std::uint64_t length) override { calls.push_back({'d', from, length}); }
};

TEST(CacheRelease, NothingUntilAStretchIsWritten) {
  recording_calls k;
  cache_release r(k);
  r.written(3, 4096);
  r.written(3, MiB - 1);
  EXPECT_TRUE(k.calls.empty());
}

TEST(CacheRelease, DropsEachStretchOneStretchAfterItsWritebackStarted) {
  recording_calls k;
  cache_release r(k);
  r.written(3, MiB + 100);   // the page holding the last 100 bytes is still being written
  EXPECT_EQ(k.calls, (std::vector<call>{{'w', 0, MiB}}));
  r.written(3, 2 * MiB + 5000);
  EXPECT_EQ(k.calls, (std::vector<call>{{'w', 0, MiB}, {'w', MiB, MiB + 4096}, {'d', 0, MiB}}));
  r.written(3, 3 * MiB);   // not a whole stretch past the last start: nothing yet
  EXPECT_EQ(k.calls.size(), 3u);
  r.written(3, 5 * MiB);
  EXPECT_EQ(k.calls, (std::vector<call>{{'w', 0, MiB},
                                         {'w', MiB, MiB + 4096},
                                         {'d', 0, MiB},
                                         {'w', 2 * MiB + 4096, 3 * MiB - 4096},
                                         {'d', MiB, MiB + 4096}}));
}

// How many of [from, from + length) of fd's pages are in the page cache.
std::size_t resident_pages(int fd, std::uint64_t from, std::uint64_t length) {
  void* map = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(from));
  if (map == MAP_FAILED) return 0;
  std::vector<unsigned char> in(length / 4096);
  std::size_t n = 0;
  if (::mincore(map, length, in.data()) == 0)
    for (auto c : in) n += c & 1;
  ::munmap(map, length);
  return n;
}

TEST(CacheRelease, OnAFileTheDroppedStretchLeavesTheCacheAndEveryByteStays) {
  // Under the working directory (ctest's is the build directory), not the temp dir: a tmpfs
  // /tmp keeps a file's pages as the file itself, and dropping them from the cache does nothing.
  scratch_dir dir(std::filesystem::current_path());
  const auto path = dir.path() / "capture.jsonl";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  cache_release r;
  std::string expected;
  for (char c : {'a', 'b', 'c'}) {
    const std::string stretch(MiB, c);
    ASSERT_EQ(::write(fd, stretch.data(), stretch.size()), static_cast<ssize_t>(stretch.size()));
    expected += stretch;
    // Written back before the next stretch: the drop then finds its pages clean.
    ASSERT_EQ(::fdatasync(fd), 0);
    r.written(fd, expected.size());
  }
  const int rfd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(rfd, 0);
  EXPECT_EQ(resident_pages(rfd, 0, 2 * MiB), 0u) << "the first two stretches were dropped";
  EXPECT_EQ(resident_pages(rfd, 2 * MiB, MiB), MiB / 4096) << "the last stretch stays cached";
  ::close(rfd);
  ::close(fd);
  std::ifstream in(path, std::ios::binary);
  const std::string back{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  EXPECT_TRUE(back == expected);
}

}  // namespace
}  // namespace mailtap::captures
