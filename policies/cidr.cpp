// Address parsing uses inet_pton (libc, no I/O); prefix comparison is bytewise.
#include "policies/cidr.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace mailtap::policies {
namespace {

// inet_pton needs a NUL-terminated string; the longest textual IPv6 address is 45 characters.
constexpr std::size_t max_address_chars = 64;

std::optional<ip_address> parse_address(std::string_view text) {
  if (text.empty() || text.size() >= max_address_chars) return std::nullopt;
  char buf[max_address_chars];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  ip_address a;
  if (text.find(':') == std::string_view::npos) {
    if (::inet_pton(AF_INET, buf, a.bytes.data()) != 1) return std::nullopt;
    a.v4 = true;
    return a;
  }
  if (::inet_pton(AF_INET6, buf, a.bytes.data()) != 1) return std::nullopt;
  static constexpr std::uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(a.bytes.data(), mapped_prefix, sizeof mapped_prefix) == 0) {
    ip_address v4;
    v4.v4 = true;
    std::memcpy(v4.bytes.data(), a.bytes.data() + 12, 4);
    return v4;
  }
  return a;
}

bool prefix_equal(const ip_address& a, const ip_address& b, unsigned prefix) {
  const unsigned full = prefix / 8;
  if (std::memcmp(a.bytes.data(), b.bytes.data(), full) != 0) return false;
  const unsigned rest = prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
  return (a.bytes[full] & mask) == (b.bytes[full] & mask);
}

}  // namespace

bool cidr::contains(const ip_address& a) const {
  return a.v4 == network.v4 && prefix_equal(a, network, prefix);
}

std::string to_string(const ip_address& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(a.v4 ? AF_INET : AF_INET6, a.bytes.data(), buf, sizeof buf);
  return buf;
}

std::string cidr::to_string() const { return policies::to_string(network) + "/" + std::to_string(prefix); }

std::optional<cidr> parse_cidr(std::string_view text, std::string& problem) {
  problem.clear();
  const auto slash = text.find('/');
  const std::string_view addr = text.substr(0, slash);
  auto a = parse_address(addr);
  if (!a || addr.find('%') != std::string_view::npos) {
    problem = "not an IPv4 or IPv6 address";
    return std::nullopt;
  }
  // A v4-mapped IPv6 block is written as IPv6 but parsed as IPv4: refuse it rather than guess.
  if (a->v4 && addr.find(':') != std::string_view::npos) {
    problem = "write a v4-mapped block as IPv4 (it matches v4-mapped clients)";
    return std::nullopt;
  }
  const unsigned max_prefix = a->v4 ? 32 : 128;
  unsigned prefix = max_prefix;
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) {
      problem = "prefix length must be a number from 0 to " + std::to_string(max_prefix);
      return std::nullopt;
    }
    prefix = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') {
        problem = "prefix length must be a number from 0 to " + std::to_string(max_prefix);
        return std::nullopt;
      }
      prefix = prefix * 10 + static_cast<unsigned>(c - '0');
    }
    if (prefix > max_prefix) {
      problem = "prefix length must be a number from 0 to " + std::to_string(max_prefix);
      return std::nullopt;
    }
  }
  cidr c{*a, prefix};
  ip_address masked{};
  masked.v4 = a->v4;
  const unsigned full = prefix / 8;
  std::memcpy(masked.bytes.data(), a->bytes.data(), full);
  if (prefix % 8) masked.bytes[full] = static_cast<std::uint8_t>(a->bytes[full] & (0xff << (8 - prefix % 8)));
  if (!(masked == *a)) {
    c.network = masked;
    problem = "host bits set beyond the prefix (did you mean " + c.to_string() + "?)";
    return std::nullopt;
  }
  return c;
}

std::optional<ip_address> parse_client_address(std::string_view text) {
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    text = text.substr(1, close - 1);
  } else if (const auto colon = text.find(':');
             colon != std::string_view::npos && text.find(':', colon + 1) == std::string_view::npos) {
    text = text.substr(0, colon);   // "192.0.2.1:4711"
  }
  if (const auto zone = text.find('%'); zone != std::string_view::npos) text = text.substr(0, zone);
  return parse_address(text);
}

}  // namespace mailtap::policies
