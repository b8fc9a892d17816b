// A fresh directory under the test temp dir (or another base), named after the running test,
// removed at the end.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

class scratch_dir {
 public:
  explicit scratch_dir(const std::filesystem::path& base = ::testing::TempDir()) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = base /
            (std::string("mailtap_") + info->test_suite_name() + "_" + info->name() + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~scratch_dir() { std::filesystem::remove_all(path_); }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};
