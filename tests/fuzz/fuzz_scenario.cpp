// The scenario loader (policies/scenario_loader.hpp): any TOML document toml++ accepts becomes
// rules or one error line, never a crash or an exception; loaded rule names are checked too.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "fuzz_check.hpp"
#include "policies/scenario_loader.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  toml::table doc;
  try {
    doc = toml::parse(text, std::string_view("fuzz.toml"));
  } catch (const toml::parse_error&) {
    return 0;   // toml++'s own refusal; the loader is what is under test
  }
  auto result = mailtap::policies::rules_from_toml(doc, "fuzz.toml");
  if (result.ok()) {
    (void)mailtap::policies::duplicate_rule_name(result.rules);
  } else {
    FUZZ_CHECK(result.rules.empty(), "rules returned with an error");
    FUZZ_CHECK(result.error.find('\n') == std::string::npos, "error is not one line");
  }
  return 0;
}
