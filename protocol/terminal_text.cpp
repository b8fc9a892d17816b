#include "protocol/terminal_text.hpp"

#include <algorithm>
#include <cstdio>

namespace mailtap::protocol {

std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  auto at = [&](std::size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
  const unsigned lead = at(0);
  auto cont = [&](std::size_t k, unsigned lo = 0x80, unsigned hi = 0xbf) { return at(k) >= lo && at(k) <= hi; };
  if (lead >= 0xc2 && lead <= 0xdf) return cont(1) ? 2 : 0;
  if (lead == 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if (lead == 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (lead >= 0xe1 && lead <= 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (lead == 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (lead == 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  if (lead >= 0xf1 && lead <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

std::string terminal_safe(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  auto escape = [&](unsigned char c) {
    char buf[5];
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  };
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) escape(c);
      else out += static_cast<char>(c);
      ++i;
      continue;
    }
    std::size_t n = utf8_sequence_length(s, i);
    bool c1_control = n == 2 && c == 0xc2 && static_cast<unsigned char>(s[i + 1]) <= 0x9f;
    bool bidi_control = n == 2 && c == 0xd8 && static_cast<unsigned char>(s[i + 1]) == 0x9c;   // U+061C
    if (n == 3 && c == 0xe2) {
      const auto b1 = static_cast<unsigned char>(s[i + 1]), b2 = static_cast<unsigned char>(s[i + 2]);
      bidi_control = (b1 == 0x80 && ((b2 >= 0x8e && b2 <= 0x8f) || (b2 >= 0xa8 && b2 <= 0xae))) ||
                     (b1 == 0x81 && b2 >= 0xa6 && b2 <= 0xa9);
    }
    if (n == 0 || c1_control || bidi_control) {
      for (std::size_t k = 0; k < std::max<std::size_t>(n, 1); ++k) escape(static_cast<unsigned char>(s[i + k]));
      i += std::max<std::size_t>(n, 1);
      continue;
    }
    out.append(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace mailtap::protocol
