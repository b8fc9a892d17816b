// The whole relay machine (protocol/relay_fsm.hpp), fed an interleaved sequence of events
// decoded from the input, with the invariants of relay_harness.hpp checked after every step.
// Input: one options byte (options_from), one byte for the connection (bit 0: upstream
// unreachable when all of bits 0-2 are set; bit 3: implicit client TLS; bit 4: a recorder is
// attached, so each message's end awaits the capture), then events. Each event
// is one byte: the low 4 bits the kind, the high 4 bits how far the clock moves first; bytes
// events take a length byte (255: two more bytes, big-endian) and that many bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "relay_harness.hpp"

using namespace mailtap::fuzz;

namespace {

class reader {
 public:
  reader(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
  bool empty() const { return i_ >= n_; }
  std::uint8_t byte() { return i_ < n_ ? d_[i_++] : 0; }
  std::string_view bytes() {
    std::size_t len = byte();
    if (len == 255) len = (std::size_t{byte()} << 8) | byte();
    len = std::min(len, n_ - std::min(i_, n_));
    std::string_view s(reinterpret_cast<const char*>(d_ + i_), len);
    i_ += len;
    return s;
  }

 private:
  const std::uint8_t* d_;
  std::size_t n_;
  std::size_t i_ = 0;
};

// Clock steps from the high nibble: nothing, milliseconds, up to past every default timeout.
constexpr std::uint64_t clock_steps_us[16] = {
    0, 0, 0, 0, 1'000, 10'000, 100'000, 1'000'000, 2'000'000, 10'000'000, 30'000'000, 60'000'000,
    120'000'000, 300'000'000, 600'000'000, 3'600'000'000};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  reader in(data, size);
  relay_options options = options_from(in.byte());
  std::uint8_t connection = in.byte();
  options.tls.implicit_client_tls = (connection & 8) != 0;
  options.end_waits_for_capture = (connection & 16) != 0;
  relay_harness h(options);
  h.start((connection & 7) != 7, options.tls.implicit_client_tls);
  for (int steps = 0; !in.empty() && steps < 4096 && !h.fsm().finished(); ++steps) {
    std::uint8_t op = in.byte();
    h.advance(clock_steps_us[op >> 4]);
    switch (op & 15) {
      case 0: case 1: case 2: case 3: h.client_bytes(in.bytes()); break;
      case 4: case 5: case 6: h.upstream_bytes(in.bytes()); break;
      case 7: h.client_eof(); break;
      case 8: h.client_gone(); break;
      case 9: h.upstream_eof(); break;
      case 10: h.timeout(leg::client); break;
      case 11: h.timeout(leg::upstream); break;
      case 12: h.fault_timer(); break;
      case 13: {
        std::uint8_t how = in.byte();   // bit 2: the capture settles (bit 3: failed); else a handshake ends
        if (how & 4) h.capture_settled((how & 8) != 0);
        else h.tls_result((how & 1) ? leg::upstream : leg::client, (how & 2) == 0);
        break;
      }
      case 14: h.drain(); break;
      case 15: h.drain_deadline(); break;
    }
  }
  h.finish();
  return 0;
}
