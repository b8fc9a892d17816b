// The command parser (protocol/command.hpp): any line parses without crashing, and a line
// holding NUL, a bare CR or a bare LF is never accepted as a command to forward.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.hpp"
#include "protocol/command.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  auto parsed = mailtap::protocol::parse_command(line);
  if (parsed.fault == mailtap::protocol::command_fault::none) {
    FUZZ_CHECK(line.find('\0') == std::string_view::npos, "a line with NUL accepted");
    FUZZ_CHECK(line.find_first_of("\r\n") == std::string_view::npos, "a line with CR or LF accepted");
  }
  return 0;
}
