// protocol/ stays sans-I/O: no source under it includes an I/O library (ARCHITECTURE.md, "Layers").
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#ifndef MAILTAP_SOURCE_DIR
#error "MAILTAP_SOURCE_DIR must be defined"
#endif

TEST(ProtocolSansIo, NoIoLibraryIncluded) {
  const std::regex io_include(R"(#\s*include\s*[<"](boost/asio|asio|openssl|spdlog|sys/socket|unistd))");
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(MAILTAP_SOURCE_DIR) + "/protocol")) {
    if (entry.path().extension() != ".hpp" && entry.path().extension() != ".cpp") continue;
    ++files;
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) EXPECT_FALSE(std::regex_search(line, io_include)) << entry.path() << ": " << line;
  }
  EXPECT_GT(files, 5);
}
