// The closed action vocabulary the protocol machines return and relay/ carries out:
// send bytes on a leg, close a leg, arm or disarm a leg's timer, start TLS on a leg. Actions print themselves,
// so a failing playbook test reads as a sentence. Pure value types.
#pragma once
#include <chrono>
#include <string>
#include <variant>

namespace mailtap::protocol {

enum class leg : unsigned char { client, upstream };
std::string_view to_string(leg l);

// Write bytes to a leg. `sensitive` marks AUTH material: captures record it masked.
struct send_bytes {
  leg to;
  std::string bytes;
  bool sensitive = false;
  bool operator==(const send_bytes&) const = default;
};
// Close a leg in both directions (pending writes are flushed first).
struct close_leg {
  leg which;
  bool operator==(const close_leg&) const = default;
};
// Call on_timeout(which) after `after` unless re-armed; zero disarms.
struct arm_timer {
  leg which;
  std::chrono::milliseconds after;
  bool operator==(const arm_timer&) const = default;
};

// Start a TLS handshake on a leg once everything queued for it is written: mailtap is the
// TLS server on the client leg and the TLS client on the upstream leg. The shell answers
// with relay_fsm::on_tls_ready or on_tls_failed. Read buffers are empty when it is asked.
struct start_tls {
  leg which;
  bool operator==(const start_tls&) const = default;
};

using action = std::variant<send_bytes, close_leg, arm_timer, start_tls>;

std::string to_string(const action& a);
// Printable form of raw bytes: CR, LF, NUL and other controls escaped.
std::string escape_bytes(std::string_view bytes, std::size_t max = 200);

}  // namespace mailtap::protocol
