// When a session's capture reaches the file: a buffer the size a session writes at is
// written by write_out_if_due (the session calls it after forwarding what it read), a buffer
// four times that within record() itself, whoever calls.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "captures/writer.hpp"

namespace fs = std::filesystem;
using namespace mailtap::captures;
namespace protocol = mailtap::protocol;

namespace {

fs::path scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return fs::path(::testing::TempDir()) /
         (std::string("mailtap_") + info->test_suite_name() + "_" + info->name() + "_" + std::to_string(::getpid()));
}

session_info info_named(const std::string& id) {
  session_info info;
  info.id = id;
  info.client = "192.0.2.1:1000";
  info.listen = "127.0.0.1:2525";
  info.upstream = "builtin";
  info.bare_eol = "strict";
  info.started_at = std::chrono::system_clock::now();
  return info;
}

}  // namespace

TEST(CaptureWriteOut, ABufferOfTheWriteSizeIsWrittenWhenTheSessionAsks) {
  const fs::path dir = scratch_dir();
  fs::remove_all(dir);
  std::string error;
  auto st = store::open(dir, error);
  ASSERT_TRUE(st) << error;
  auto cap = st->begin(info_named("write-out-due"));
  const fs::path file = dir / "write-out-due.jsonl";
  // Three quarters of a write, then more: due.
  cap->on_bytes(10, protocol::leg::upstream, protocol::direction::in, std::string(48 * 1024, 'a'));
  cap->on_bytes(20, protocol::leg::upstream, protocol::direction::in, std::string(32 * 1024, 'b'));
  cap->write_out_if_due();
  EXPECT_GT(fs::file_size(file), 80u * 1024);   // both records, by the time the call returns
  cap->on_end(30, "client_quit", "");
  cap.reset();
  st.reset();
  fs::remove_all(dir);
}

TEST(CaptureWriteOut, AFourfoldBufferIsWrittenByRecordItself) {
  const fs::path dir = scratch_dir();
  fs::remove_all(dir);
  std::string error;
  auto st = store::open(dir, error);
  ASSERT_TRUE(st) << error;
  auto cap = st->begin(info_named("write-out-now"));
  const fs::path file = dir / "write-out-now.jsonl";
  // A quarter of a MiB and more in one record, and no call from the session: written at once.
  cap->on_bytes(10, protocol::leg::upstream, protocol::direction::in, std::string(260 * 1024, 'c'));
  EXPECT_GT(fs::file_size(file), 260u * 1024);
  cap->on_end(20, "client_quit", "");
  cap.reset();
  st.reset();
  fs::remove_all(dir);
}
