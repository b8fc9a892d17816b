// IP address text <-> bytes (see ip_address.hpp).
#include "protocol/ip_address.hpp"

#include <vector>

namespace mailtap::protocol {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// One IPv6 group: 1 to 4 hex digits.
std::optional<std::uint16_t> parse_group(std::string_view g) {
  if (g.empty() || g.size() > 4) return std::nullopt;
  unsigned value = 0;
  for (char c : g) {
    int v = hex_value(c);
    if (v < 0) return std::nullopt;
    value = value * 16 + static_cast<unsigned>(v);
  }
  return static_cast<std::uint16_t>(value);
}

// Splits on ':' keeping empty pieces.
std::vector<std::string_view> split_colons(std::string_view text) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    auto colon = text.find(':', start);
    if (colon == std::string_view::npos) {
      out.push_back(text.substr(start));
      return out;
    }
    out.push_back(text.substr(start, colon - start));
    start = colon + 1;
  }
}

// Groups (16-bit values) of one side of "::", the last one possibly an IPv4 tail (two groups).
bool parse_groups(std::string_view side, bool may_end_in_ipv4, std::vector<std::uint16_t>& out) {
  if (side.empty()) return true;
  auto pieces = split_colons(side);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const bool last = i + 1 == pieces.size();
    if (last && may_end_in_ipv4 && pieces[i].find('.') != std::string_view::npos) {
      auto v4 = parse_ipv4(pieces[i]);
      if (!v4) return false;
      out.push_back(static_cast<std::uint16_t>((*v4)[0] << 8 | (*v4)[1]));
      out.push_back(static_cast<std::uint16_t>((*v4)[2] << 8 | (*v4)[3]));
      continue;
    }
    auto g = parse_group(pieces[i]);
    if (!g) return false;
    out.push_back(*g);
  }
  return true;
}

}  // namespace

std::optional<ipv4_bytes> parse_ipv4(std::string_view text) {
  ipv4_bytes out{};
  std::size_t part = 0, i = 0;
  while (part < 4) {
    std::size_t start = i;
    unsigned value = 0;
    while (i < text.size() && is_digit(text[i]) && i - start < 3) value = value * 10 + static_cast<unsigned>(text[i++] - '0');
    const std::size_t digits = i - start;
    if (digits == 0 || value > 255 || (digits > 1 && text[start] == '0')) return std::nullopt;
    out[part++] = static_cast<std::uint8_t>(value);
    if (part < 4) {
      if (i >= text.size() || text[i] != '.') return std::nullopt;
      ++i;
    }
  }
  if (i != text.size()) return std::nullopt;
  return out;
}

std::optional<ipv6_bytes> parse_ipv6(std::string_view text) {
  // The longest text form: 8 groups of 4 and 7 colons (39), or 6 groups and an IPv4 tail (45).
  if (text.size() < 2 || text.size() > 45) return std::nullopt;
  std::vector<std::uint16_t> head, tail;
  auto gap = text.find("::");
  bool ok;
  if (gap == std::string_view::npos) {
    ok = parse_groups(text, true, head) && head.size() == 8;
  } else {
    auto rest = text.substr(gap + 2);
    if (rest.find("::") != std::string_view::npos) return std::nullopt;
    ok = parse_groups(text.substr(0, gap), false, head) && parse_groups(rest, true, tail) &&
         head.size() + tail.size() <= 7;
  }
  if (!ok) return std::nullopt;
  std::array<std::uint16_t, 8> groups{};
  for (std::size_t i = 0; i < head.size(); ++i) groups[i] = head[i];
  for (std::size_t i = 0; i < tail.size(); ++i) groups[8 - tail.size() + i] = tail[i];
  ipv6_bytes out{};
  for (std::size_t i = 0; i < 8; ++i) {
    out[2 * i] = static_cast<std::uint8_t>(groups[i] >> 8);
    out[2 * i + 1] = static_cast<std::uint8_t>(groups[i] & 0xff);
  }
  return out;
}

std::optional<ip_bytes> parse_ip(std::string_view text) {
  if (text.find(':') != std::string_view::npos) {
    if (auto v6 = parse_ipv6(text)) return ip_bytes{*v6};
    return std::nullopt;
  }
  if (auto v4 = parse_ipv4(text)) return ip_bytes{*v4};
  return std::nullopt;
}

std::string format_ipv4(const ipv4_bytes& a) {
  return std::to_string(a[0]) + "." + std::to_string(a[1]) + "." + std::to_string(a[2]) + "." + std::to_string(a[3]);
}

ipv6_bytes ipv4_mapped(const ipv4_bytes& a) {
  ipv6_bytes out{};
  out[10] = 0xff;
  out[11] = 0xff;
  for (std::size_t i = 0; i < 4; ++i) out[12 + i] = a[i];
  return out;
}

bool is_ipv4_mapped(const ipv6_bytes& a) {
  for (std::size_t i = 0; i < 10; ++i)
    if (a[i] != 0) return false;
  return a[10] == 0xff && a[11] == 0xff;
}

std::string format_ipv6(const ipv6_bytes& a) {
  if (is_ipv4_mapped(a)) return "::ffff:" + format_ipv4({a[12], a[13], a[14], a[15]});
  std::array<unsigned, 8> groups{};
  for (std::size_t i = 0; i < 8; ++i) groups[i] = static_cast<unsigned>(a[2 * i] << 8 | a[2 * i + 1]);
  // The longest run of zero groups, at least two long (RFC 5952 4.2.2), the first if tied (4.2.3).
  std::size_t best_start = 8, best_len = 0;
  for (std::size_t i = 0; i < 8;) {
    if (groups[i] != 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < 8 && groups[j] == 0) ++j;
    if (j - i > best_len && j - i >= 2) {
      best_start = i;
      best_len = j - i;
    }
    i = j;
  }
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < 8; ++i) {
    if (i == best_start) {
      out += "::";
      i += best_len - 1;
      continue;
    }
    if (!out.empty() && out.back() != ':') out += ':';
    std::string group;
    unsigned g = groups[i];
    do {
      group.insert(group.begin(), digits[g & 0xf]);
      g >>= 4;
    } while (g != 0);
    out += group;
  }
  return out;
}

std::string format_ip(const ip_bytes& a) {
  if (const auto* v4 = std::get_if<ipv4_bytes>(&a)) return format_ipv4(*v4);
  return format_ipv6(std::get<ipv6_bytes>(a));
}

}  // namespace mailtap::protocol
