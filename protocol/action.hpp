// The closed action vocabulary the protocol machines return and relay/ carries out:
// send bytes on a leg, close (or reset) a leg, arm or disarm a leg's timer, start TLS on a leg,
// connect the upstream or replace it with a plaintext one, wait for the recorder (capture
// barrier), pause or resume reading a leg, and the fault shell's timer, write shaping and
// segment breaks. Actions print themselves, so a failing playbook test reads as
// a sentence. Pure value types.
#pragma once
#include <chrono>
#include <string>
#include <variant>

#include "protocol/fault.hpp"

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
// Close a leg in both directions (pending writes are flushed first). `reset`: abortively
// (SO_LINGER 0, the peer sees RST), without flushing.
struct close_leg {
  leg which;
  bool reset = false;
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

// Replace the upstream connection with a new plaintext one to the same upstream (RFC 7435
// opportunistic TLS: a failed STARTTLS handshake falls back to plaintext, as Postfix does).
// The old connection is dropped as it is, without a TLS close_notify or a QUIT: it is
// unusable after the failed handshake. The shell answers with
// relay_fsm::on_upstream_reconnected or on_upstream_unreachable.
struct reconnect_upstream {
  bool operator==(const reconnect_upstream&) const = default;
};

// Open the upstream connection (the machine decided at on_start that the session needs one;
// a connect-phase fault that answers the client itself does not ask). The shell answers with
// relay_fsm::on_upstream_connected or on_upstream_unreachable.
struct connect_upstream {
  bool operator==(const connect_upstream&) const = default;
};

// Actions that follow this one wait until every record reported to the observer so far is
// written by the recorder: no reply overtakes the transaction record it settles
// (ARCHITECTURE.md, "Invariants": a message's record is written before its end-of-data reply).
struct capture_barrier {
  bool operator==(const capture_barrier&) const = default;
};

// The end of a message (the dot, or the last BDAT chunk's last byte) waits here until the
// recorder has handled every record reported so far; the shell answers with
// relay_fsm::on_capture_settled, saying whether the capture failed. A capture that cannot be
// written thus stops the message before the upstream can accept it (README.md, "Captures").
// Asked only with relay_options::end_waits_for_capture.
struct await_capture {
  bool operator==(const await_capture&) const = default;
};

// Stop (or resume) reading a leg: the machine holds more unparsed input than its cap.
struct pause_reading {
  leg which;
  bool paused = true;
  bool operator==(const pause_reading&) const = default;
};

// Call on_fault_timer after `after` (a held reply, command or banner is due); replaces any
// earlier request. Zero disarms.
struct arm_fault_timer {
  std::chrono::microseconds after;
  bool operator==(const arm_fault_timer&) const = default;
};

// Shape every later write on a leg (throttle, slice).
struct shape_leg {
  leg which;
  leg_shaping shaping;
  bool operator==(const shape_leg&) const = default;
};

// Everything queued on the leg so far goes out as its own segment; the writer then pauses
// `gap` before writing what follows (split_dot).
struct segment_break {
  leg which;
  std::chrono::microseconds gap;
  bool operator==(const segment_break&) const = default;
};

using action = std::variant<send_bytes, close_leg, arm_timer, start_tls, arm_fault_timer, shape_leg, segment_break,
                            reconnect_upstream, connect_upstream, capture_barrier, pause_reading,
                            await_capture>;

std::string to_string(const action& a);

// An overload set of lambdas for std::visit over `action`: every shell dispatches with one, so
// an action added to the variant does not compile until each shell says what it does with it.
template <typename... Handlers>
struct overloaded : Handlers... {
  using Handlers::operator()...;
};
template <typename... Handlers>
overloaded(Handlers...) -> overloaded<Handlers...>;
// Printable form of raw bytes: CR, LF, NUL and other controls escaped.
std::string escape_bytes(std::string_view bytes, std::size_t max = 200);

}  // namespace mailtap::protocol
