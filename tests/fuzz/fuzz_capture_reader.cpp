// The capture reader (captures/reader.hpp): any file content loads or is refused with one
// non-empty line, never a crash (what `show`, `replay` and `diagnose` rely on). The reader takes
// a path, so each input is written to a per-process temporary file.
// The same input, as bytes a session recorded, also goes through the writer's `latin1` text
// (captures/latin1_text.hpp) and back: within a budget it is exact, and past one it is refused
// with the output left as it was.
#include <unistd.h>

#include <boost/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "captures/latin1_text.hpp"
#include "captures/reader.hpp"
#include "fuzz_check.hpp"

namespace {

const std::filesystem::path& scratch_file() {
  static const std::filesystem::path p =
      std::filesystem::temp_directory_path() / ("mailtap-fuzz-capture-" + std::to_string(::getpid()) + ".jsonl");
  return p;
}

}  // namespace

// The text of `bytes` with a budget every byte fits in (6 characters each), read as a JSON
// string the way the reader reads it (Boost.JSON, then latin1_bytes), is the bytes again; a
// budget of a third of the bytes never fits a non-empty input and leaves the output as it was.
void check_latin1_text(std::string_view bytes) {
  std::string text = "\"";
  FUZZ_CHECK(mailtap::captures::append_latin1_json(text, bytes, bytes.size() * 6), "a generous budget refused");
  FUZZ_CHECK(text.size() >= 1 + bytes.size() && text.size() <= 1 + bytes.size() * 6, "text of an impossible size");
  text += '"';
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(text, ec);
  FUZZ_CHECK(!ec && v.is_string(), "text is not a JSON string");
  const auto back = mailtap::captures::latin1_bytes(v.get_string());
  FUZZ_CHECK(back && *back == bytes, "text did not decode to its bytes");
  if (!bytes.empty()) {
    std::string tight = "kept";
    FUZZ_CHECK(!mailtap::captures::append_latin1_json(tight, bytes, bytes.size() / 3), "text past its budget");
    FUZZ_CHECK(tight == "kept", "a refused text left something behind");
  }
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  check_latin1_text(std::string_view(reinterpret_cast<const char*>(data), size));
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
