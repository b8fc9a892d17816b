// When a session's capture reaches the file: a buffer the size a session writes at is
// written by write_out_if_due (the session calls it after forwarding what it read), a buffer
// four times that within record() itself, whoever calls.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "captures/writer.hpp"

namespace fs = std::filesystem;
using namespace mailtap::captures;
namespace protocol = mailtap::protocol;

namespace {

// A store in a scratch directory, and one capture in it; the file is removed afterwards.
class CaptureWriteOut : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) / (std::string("mailtap_CaptureWriteOut_") + info->name() + "_" +
                                             std::to_string(::getpid()));
    fs::remove_all(dir_);
    std::string error;
    store_ = store::open(dir_, error);
    ASSERT_TRUE(store_) << error;
    session_info session;
    session.id = "write-out";
    session.client = "192.0.2.1:1000";
    session.listen = "127.0.0.1:2525";
    session.upstream = "builtin";
    session.bare_eol = "strict";
    session.started_at = std::chrono::system_clock::now();
    capture_ = store_->begin(session);
  }
  void TearDown() override {
    if (capture_) capture_->on_end(100, "client_quit", "");
    capture_.reset();
    store_.reset();
    fs::remove_all(dir_);
  }
  std::uintmax_t file_size() const { return fs::file_size(dir_ / "write-out.jsonl"); }

  fs::path dir_;
  std::unique_ptr<store> store_;
  std::unique_ptr<session_capture> capture_;
};

}  // namespace

TEST_F(CaptureWriteOut, ABufferOfTheWriteSizeIsWrittenWhenTheSessionAsks) {
  // Three quarters of a write, then more: due.
  capture_->on_bytes(10, protocol::leg::upstream, protocol::direction::in, std::string(48 * 1024, 'a'));
  capture_->on_bytes(20, protocol::leg::upstream, protocol::direction::in, std::string(32 * 1024, 'b'));
  capture_->write_out_if_due();
  EXPECT_GT(file_size(), 80u * 1024);   // both records, by the time the call returns
}

TEST_F(CaptureWriteOut, AFourfoldBufferIsWrittenByRecordItself) {
  // A quarter of a MiB and more in one record, and no call from the session: written at once.
  capture_->on_bytes(10, protocol::leg::upstream, protocol::direction::in, std::string(260 * 1024, 'c'));
  EXPECT_GT(file_size(), 260u * 1024);
}
