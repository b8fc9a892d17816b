// The TOML config loader (relay/config.hpp load_config_text): any text loads or is refused with
// one non-empty line, never a crash or an exception.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "relay/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string error;
  auto cfg = mailtap::load_config_text(text, "fuzz.toml", mailtap::config{}, error);
  if (!cfg) {
    FUZZ_CHECK(!error.empty(), "refused without an error");
    FUZZ_CHECK(error.find('\n') == std::string::npos, "error is not one line");
  }
  return 0;
}
