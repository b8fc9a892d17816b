// Printing of actions, for tests and debug logs.
#include "protocol/action.hpp"

#include <cstdio>

namespace mailtap::protocol {

std::string_view to_string(leg l) { return l == leg::client ? "client" : "upstream"; }

std::string escape_bytes(std::string_view bytes, std::size_t max) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size() && i < max; ++i) {
    unsigned char c = static_cast<unsigned char>(bytes[i]);
    switch (c) {
      case '\r': out += "\\r"; break;
      case '\n': out += "\\n"; break;
      case '\\': out += "\\\\"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[5];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  if (bytes.size() > max) out += "...(" + std::to_string(bytes.size()) + " bytes)";
  return out;
}

std::string to_string(const action& a) {
  struct printer {
    std::string operator()(const send_bytes& s) const {
      return "send to " + std::string(to_string(s.to)) + (s.sensitive ? " (sensitive)" : "") +
             ": \"" + escape_bytes(s.bytes) + "\"";
    }
    std::string operator()(const close_leg& c) const {
      return (c.reset ? "reset " : "close ") + std::string(to_string(c.which));
    }
    std::string operator()(const arm_fault_timer& t) const {
      if (t.after.count() == 0) return "disarm fault timer";
      return "arm fault timer " + std::to_string(t.after.count()) + "us";
    }
    std::string operator()(const shape_leg& s) const {
      return "shape " + std::string(to_string(s.which)) + ": " + std::to_string(s.shaping.bytes_per_second) +
             " B/s, segments of " + std::to_string(s.shaping.segment_bytes) + " B, gap " +
             std::to_string(s.shaping.gap_us) + "us";
    }
    std::string operator()(const segment_break& b) const {
      return "segment break on " + std::string(to_string(b.which)) + ", gap " + std::to_string(b.gap.count()) + "us";
    }
    std::string operator()(const reconnect_upstream&) const { return "reconnect upstream (plaintext)"; }
    std::string operator()(const connect_upstream&) const { return "connect upstream"; }
    std::string operator()(const capture_barrier&) const { return "capture barrier"; }
    std::string operator()(const await_capture&) const { return "await capture"; }
    std::string operator()(const pause_reading& p) const {
      return (p.paused ? "pause reading " : "resume reading ") + std::string(to_string(p.which));
    }
    std::string operator()(const start_tls& t) const {
      return "start tls on " + std::string(to_string(t.which));
    }
    std::string operator()(const arm_timer& t) const {
      if (t.after.count() == 0) return "disarm " + std::string(to_string(t.which)) + " timer";
      return "arm " + std::string(to_string(t.which)) + " timer " + std::to_string(t.after.count()) +
             "ms";
    }
  };
  return std::visit(printer{}, a);
}

}  // namespace mailtap::protocol
