// captures/retention: with real files in temp directories, finished captures past max_age or
// beyond max_bytes go oldest first; unfinished ones (no end record: in progress, or cut by a
// crash) and the ones a store has open stay; the store prunes at open and while it runs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>

#include "captures/retention.hpp"
#include "captures/writer.hpp"
#include "scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace mailtap::captures;
using namespace std::chrono_literals;

namespace {

std::string header_line(const std::string& id) {
  return R"({"type":"header","format":"mailtap-capture","version":5,"session":")" + id + "\"}\n";
}
const std::string end_line = R"({"type":"end","t_us":1,"reason":"client_quit"})" "\n";

// A capture of `bytes` bytes (padded with a note), finished or not, last written `age` ago.
fs::path make_capture(const fs::path& dir, const std::string& id, std::size_t bytes, bool finished,
                      std::chrono::seconds age) {
  std::string text = header_line(id);
  const std::string note_start = R"({"type":"note","t_us":0,"text":")";
  const std::size_t fixed = text.size() + note_start.size() + 3 + (finished ? end_line.size() : 0);
  text += note_start + std::string(bytes > fixed ? bytes - fixed : 0, 'x') + "\"}\n";
  if (finished) text += end_line;
  const fs::path p = dir / (id + ".jsonl");
  std::ofstream(p, std::ios::binary) << text;
  fs::last_write_time(p, fs::file_time_type::clock::now() - age);
  return p;
}

const auto now = [] { return std::chrono::system_clock::now(); };

TEST(CaptureRetention, FinishedMeansTheLastLineIsAnEndRecord) {
  scratch_dir dir;
  EXPECT_TRUE(is_finished_capture(make_capture(dir.path(), "done", 100, true, 0s)));
  EXPECT_FALSE(is_finished_capture(make_capture(dir.path(), "open", 100, false, 0s)));
  const fs::path cut = dir.path() / "cut.jsonl";
  std::ofstream(cut, std::ios::binary) << header_line("cut") << end_line.substr(0, end_line.size() - 1);   // no newline
  EXPECT_FALSE(is_finished_capture(cut));
  EXPECT_FALSE(is_finished_capture(dir.path() / "absent.jsonl"));
}

TEST(CaptureRetention, MaxAgeRemovesOnlyOldFinishedCaptures) {
  scratch_dir dir;
  const auto old_done = make_capture(dir.path(), "a-old-done", 200, true, 3h);
  const auto old_open = make_capture(dir.path(), "b-old-unfinished", 200, false, 3h);
  const auto new_done = make_capture(dir.path(), "c-new-done", 200, true, 10min);
  const auto r = prune(dir.path(), retention{.max_age = 1h, .max_bytes = {}}, now());
  EXPECT_EQ(r.removed, 1u);
  EXPECT_EQ(r.removed_bytes, 200u);
  EXPECT_FALSE(fs::exists(old_done));
  EXPECT_TRUE(fs::exists(old_open));
  EXPECT_TRUE(fs::exists(new_done));
  EXPECT_EQ(r.kept, 2u);
  EXPECT_EQ(r.left_unfinished, 1u);
  EXPECT_TRUE(r.errors.empty());
}

TEST(CaptureRetention, MaxBytesRemovesTheOldestFinishedFirst) {
  scratch_dir dir;
  const auto oldest = make_capture(dir.path(), "z-oldest", 1000, true, 4h);
  const auto unfinished = make_capture(dir.path(), "y-unfinished", 1000, false, 3h);
  const auto middle = make_capture(dir.path(), "x-middle", 1000, true, 2h);
  const auto newest = make_capture(dir.path(), "w-newest", 1000, true, 1h);
  const auto r = prune(dir.path(), retention{.max_age = {}, .max_bytes = 2500}, now());
  // 4000 bytes: the oldest goes (3000), the unfinished one is skipped, the middle one goes (2000).
  EXPECT_EQ(r.removed, 2u);
  EXPECT_FALSE(fs::exists(oldest));
  EXPECT_TRUE(fs::exists(unfinished));
  EXPECT_FALSE(fs::exists(middle));
  EXPECT_TRUE(fs::exists(newest));
  EXPECT_EQ(r.kept_bytes, 2000u);
  EXPECT_FALSE(r.over_max_bytes);
  EXPECT_EQ(r.left_unfinished, 1u);
}

TEST(CaptureRetention, OpenAndUnfinishedCapturesAreNeverRemovedEvenOverTheLimit) {
  scratch_dir dir;
  const auto open = make_capture(dir.path(), "open-one", 1000, true, 2h);   // its end is written, not yet closed
  const auto unfinished = make_capture(dir.path(), "crashed", 1000, false, 2h);
  const auto r = prune(dir.path(), retention{.max_age = 1h, .max_bytes = 10}, now(),
                       [](std::string_view id) { return id == "open-one"; });
  EXPECT_EQ(r.removed, 0u);
  EXPECT_TRUE(fs::exists(open));
  EXPECT_TRUE(fs::exists(unfinished));
  EXPECT_TRUE(r.over_max_bytes);
  EXPECT_EQ(r.left_unfinished, 2u);
}

TEST(CaptureRetention, OtherFilesAreLeftAlone) {
  scratch_dir dir;
  std::ofstream(dir.path() / "notes.txt") << std::string(5000, 'n');
  fs::create_directories(dir.path() / "sub.jsonl");
  const auto r = prune(dir.path(), retention{.max_age = 1s, .max_bytes = 1}, now());
  EXPECT_EQ(r.removed, 0u);
  EXPECT_EQ(r.kept, 0u);
  EXPECT_TRUE(fs::exists(dir.path() / "notes.txt"));
}

// A newcomer's trial: prune removed evidence-copy.jsonl, a renamed copy of a finished capture,
// and counted another program's JSON Lines as an unfinished capture.
TEST(CaptureRetention, OnlyAFileItsHeaderNamesIsACapture) {
  scratch_dir dir;
  const auto original = make_capture(dir.path(), "s-original", 1000, true, 3h);
  const fs::path copy = dir.path() / "evidence-copy.jsonl";
  fs::copy_file(original, copy);
  fs::last_write_time(copy, fs::file_time_type::clock::now() - 3h);
  const fs::path other = dir.path() / "events.jsonl";
  std::ofstream(other) << R"({"event":"x"})" "\n";
  fs::last_write_time(other, fs::file_time_type::clock::now() - 3h);
  const fs::path just_begun = dir.path() / "s-begun.jsonl";   // created, header not written yet
  std::ofstream(just_begun) << "";
  fs::last_write_time(just_begun, fs::file_time_type::clock::now() - 3h);
  const auto r = prune(dir.path(), retention{.max_age = 1h, .max_bytes = {}}, now());
  EXPECT_EQ(r.removed, 1u);
  EXPECT_FALSE(fs::exists(original));
  EXPECT_TRUE(fs::exists(copy));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_TRUE(fs::exists(just_begun));
  EXPECT_EQ(r.not_captures, 2u);
  EXPECT_EQ(r.left_unfinished, 1u);   // the one just begun
  EXPECT_EQ(r.kept, 1u);
}

// A hostile trial: another program's one-line file without a newline was taken for a capture
// just begun, and its bytes, counted against max_bytes, had two real captures removed.
TEST(CaptureRetention, AnotherProgramsFileWithoutANewlineCountsForNothing) {
  scratch_dir dir;
  const auto a = make_capture(dir.path(), "s-a", 1000, true, 2h);
  const auto b = make_capture(dir.path(), "s-b", 1000, true, 1h);
  std::ofstream(dir.path() / "app-state.jsonl") << "{\"k\":\"" << std::string(7990, 'v') << "\"}";
  fs::create_directory(dir.path() / "x.jsonl");
  const auto r = prune(dir.path(), retention{.max_age = {}, .max_bytes = 2500}, now());
  EXPECT_EQ(r.removed, 0u);
  EXPECT_TRUE(fs::exists(a));
  EXPECT_TRUE(fs::exists(b));
  EXPECT_EQ(r.kept_bytes, 2000u);
  EXPECT_EQ(r.not_captures, 2u);
  EXPECT_FALSE(r.over_max_bytes);
}

// A pruner that runs again (the relay's store) reads each file's first line once: what it
// learnt is kept by name and inode, a removed file is forgotten, a capture just begun is not
// remembered (its header is read again next time).
TEST(CaptureRetention, WhatAPruneReadOfEachFileIsKeptForTheNext) {
  scratch_dir dir;
  make_capture(dir.path(), "s-old", 100, true, 3h);
  make_capture(dir.path(), "s-new", 100, true, 0s);
  std::ofstream(dir.path() / "copy.jsonl") << R"({"type":"header","session":"s-new"})" "\n";
  std::ofstream(dir.path() / "s-begun.jsonl") << "";
  capture_kinds kinds;
  auto r = prune(dir.path(), retention{.max_age = 1h, .max_bytes = {}}, now(), {}, &kinds);
  EXPECT_EQ(r.removed, 1u);
  EXPECT_EQ(kinds.known.size(), 2u);
  EXPECT_TRUE(kinds.known.at("s-new.jsonl").second);
  EXPECT_FALSE(kinds.known.at("copy.jsonl").second);
  // The copy's first line now names it, in place (same inode): the remembered kind stands.
  std::ofstream(dir.path() / "copy.jsonl", std::ios::in | std::ios::out) << R"({"type":"header","session":"copy"} )";
  r = prune(dir.path(), retention{.max_age = 1h, .max_bytes = {}}, now(), {}, &kinds);
  EXPECT_EQ(r.not_captures, 1u);
  EXPECT_EQ(r.kept, 2u);
}

// The store prunes when it opens and while it runs, counts what it removed, tells its
// listener, and leaves the capture it is writing alone.
TEST(CaptureRetention, TheStorePrunesButNeverTheCaptureItIsWriting) {
  scratch_dir dir;
  const auto before = make_capture(dir.path(), "before-start", 1000, true, 2h);
  std::string error;
  store_options options;
  options.retain = retention{.max_age = 1h, .max_bytes = {}};
  options.prune_every = 0s;   // every writer tick
  std::promise<void> pruned_later;
  int prunes_that_removed = 0;   // writer thread only
  options.on_prune = [&](const prune_result& r) {
    if (r.removed == 0) return;
    if (++prunes_that_removed == 2) pruned_later.set_value();   // the first: the capture from before the start
  };
  auto st = store::open(dir.path(), error, options);
  ASSERT_TRUE(st) << error;
  session_info info;
  info.id = "in-progress";
  info.started_at = std::chrono::system_clock::now();
  auto cap = st->begin(info);
  cap->on_note(1, "recording");
  // Still in progress (no end record: that closes the file), and older on disk than the limit.
  std::promise<void> written;
  cap->when_written([&] { written.set_value(); });
  ASSERT_EQ(written.get_future().wait_for(10s), std::future_status::ready);
  const fs::path mine = dir.path() / "in-progress.jsonl";
  fs::last_write_time(mine, fs::file_time_type::clock::now() - 2h);
  const auto later = make_capture(dir.path(), "after-start", 1000, true, 2h);
  ASSERT_EQ(pruned_later.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_FALSE(fs::exists(before));
  EXPECT_FALSE(fs::exists(later));
  EXPECT_TRUE(fs::exists(mine));
  EXPECT_EQ(st->counters().pruned.load(), 2u);
  EXPECT_EQ(st->counters().pruned_bytes.load(), 2000u);
}

// A capture is open from before its file is made: a reader of the directory (the pruner, the
// admin API's list) that finds the file finds it open, never an empty file nobody has open,
// which the list once called "unreadable". begin()'s one call out while it makes the file is
// the failure listener: here the name is taken, and the listener asks.
TEST(CaptureRetention, ACaptureIsOpenFromBeforeItsFileIsMade) {
  scratch_dir dir;
  std::ofstream(dir.path() / "taken.jsonl") << "another program's file\n";
  std::string error;
  auto st = store::open(dir.path(), error);
  ASSERT_TRUE(st) << error;
  int asked = 0;
  bool open_while_made = false;
  st->on_write_failure([&](const std::string& id, const std::string&) {
    ++asked;
    open_while_made = st->is_open(id);
  });
  session_info info;
  info.id = "taken";
  info.started_at = std::chrono::system_clock::now();
  auto cap = st->begin(info);
  EXPECT_EQ(asked, 1);
  EXPECT_TRUE(open_while_made);
  EXPECT_TRUE(st->is_open("taken"));
  cap->on_end(1, "client_quit", "");
  cap.reset();
  EXPECT_FALSE(st->is_open("taken")) << "closed, and out of the ids being created";
  st.reset();
}

}  // namespace
