// The PROXY protocol reader (protocol/proxy_protocol.hpp) on arbitrary bytes from a load
// balancer: it never asks for a byte past the end of the header it finally reads, never
// reads one longer than the 536-byte cap, and what it reads is written back the same.
// The input also goes to the IP address parser, whose text must read back as the same bytes.
// Input: the bytes a listener received, as they are.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.hpp"
#include "protocol/ip_address.hpp"
#include "protocol/proxy_protocol.hpp"

namespace proxy = mailtap::protocol::proxy;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (auto ip = mailtap::protocol::parse_ip(bytes)) {
    auto again = mailtap::protocol::parse_ip(mailtap::protocol::format_ip(*ip));
    FUZZ_CHECK(again && *again == *ip, "an IP address's text does not read back as the same address");
  }
  const auto r = proxy::parse(bytes);
  if (r.status == proxy::parse_status::incomplete) {
    FUZZ_CHECK(r.more >= 1, "incomplete without asking for a byte");
    FUZZ_CHECK(bytes.size() + r.more <= proxy::max_header, "asks to read past the header cap");
    return 0;
  }
  if (r.status == proxy::parse_status::invalid) {
    FUZZ_CHECK(!r.error.empty(), "refused without a reason");
    return 0;
  }
  const std::size_t length = r.value.length;
  FUZZ_CHECK(length >= proxy::shortest_header && length <= bytes.size() && length <= proxy::max_header,
             "header length out of bounds");
  // Read the way the listener reads: from nothing, as much as asked each time; it must end at
  // exactly this header, never having asked for a byte after it.
  std::size_t got = 0;
  for (;;) {
    auto step = proxy::parse(bytes.substr(0, got));
    if (step.status == proxy::parse_status::complete) {
      FUZZ_CHECK(got == length && step.value.addresses == r.value.addresses, "incremental read ended elsewhere");
      break;
    }
    FUZZ_CHECK(step.status == proxy::parse_status::incomplete, "a prefix of a good header was refused");
    FUZZ_CHECK(got + step.more <= length, "asked for a byte past the end of the header");
    got += step.more;
  }
  if (r.value.addresses) {
    auto written = proxy::encode(r.value.ver, r.value.addresses);
    auto back = proxy::parse(written);
    FUZZ_CHECK(back.status == proxy::parse_status::complete && back.value.length == written.size() &&
                   back.value.addresses == r.value.addresses,
               "a header written from what was read does not read back the same");
  }
  return 0;
}
