// Header section scanning for Message-ID, with folded lines joined.
#include "protocol/header_scanner.hpp"

#include "protocol/command.hpp"
#include "protocol/limits.hpp"

namespace mailtap::protocol {

void header_scanner::take_header(std::string_view field) {
  auto colon = field.find(':');
  if (colon == std::string_view::npos) return;
  std::string_view name = field.substr(0, colon);
  while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
  if (!iequals(name, "Message-ID")) return;
  std::string_view value = field.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  if (!message_id_) message_id_ = std::string(value);
}

void header_scanner::feed(std::string_view bytes) {
  while (!done_ && !bytes.empty()) {
    auto lf = bytes.find('\n');
    std::string_view piece = bytes.substr(0, lf == std::string_view::npos ? bytes.size() : lf + 1);
    bytes.remove_prefix(piece.size());
    seen_ += piece.size();
    line_.append(piece);
    if (seen_ > limits::header_scan_cap) { done_ = true; break; }
    if (line_.back() != '\n') break;
    std::string_view line = line_;
    line.remove_suffix(1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      take_header(pending_);
      done_ = true;
    } else if (line.front() == ' ' || line.front() == '\t') {
      pending_.append(line);                        // folded continuation
    } else {
      take_header(pending_);
      pending_.assign(line);
    }
    line_.clear();
  }
}

}  // namespace mailtap::protocol
