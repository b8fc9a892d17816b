// Watches the start of a message body for its Message-ID header (RFC 5322 3.6.4), so captures
// can name the message. Stops at the blank line ending the header section or after
// limits::header_scan_cap bytes. Single-threaded.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace mailtap::protocol {

class header_scanner {
 public:
  void feed(std::string_view bytes);
  const std::optional<std::string>& message_id() const { return message_id_; }

 private:
  void take_header(std::string_view field);
  std::string pending_;   // current (possibly folded) header field
  std::string line_;      // current line
  std::size_t seen_ = 0;
  bool done_ = false;
  std::optional<std::string> message_id_;
};

}  // namespace mailtap::protocol
