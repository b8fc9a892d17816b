// The capture reader (captures/reader.hpp): any file content loads or is refused with one
// non-empty line, never a crash (what `show`, `replay` and `diagnose` rely on). The reader takes
// a path, so each input is written to a per-process temporary file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "captures/reader.hpp"
#include "fuzz_check.hpp"

namespace {

const std::filesystem::path& scratch_file() {
  static const std::filesystem::path p =
      std::filesystem::temp_directory_path() / ("mailtap-fuzz-capture-" + std::to_string(::getpid()) + ".jsonl");
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  {
    std::ofstream out(scratch_file(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  std::string error;
  auto c = mailtap::captures::read_capture(scratch_file(), error);
  if (!c) {
    FUZZ_CHECK(!error.empty(), "refused without an error");
    FUZZ_CHECK(error.find('\n') == std::string::npos, "error is not one line");
  } else {
    (void)mailtap::captures::session_outcome(*c);
  }
  return 0;
}
