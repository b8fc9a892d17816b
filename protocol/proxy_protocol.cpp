// PROXY protocol headers, versions 1 and 2 (see proxy_protocol.hpp). Section numbers are
// those of haproxy's proxy-protocol.txt.
#include "protocol/proxy_protocol.hpp"

#include <vector>

namespace mailtap::protocol::proxy {

namespace {

constexpr std::string_view v1_prefix = "PROXY ";

// 2.2: the 13th byte is the version (high nibble, 2) and the command (low nibble).
constexpr unsigned v2_version = 2;
constexpr unsigned v2_command_local = 0, v2_command_proxy = 1;
// The 14th byte: address family (high nibble) and transport (low nibble).
constexpr unsigned family_unspec = 0, family_inet = 1, family_inet6 = 2, family_unix = 3;
constexpr unsigned transport_unspec = 0, transport_stream = 1, transport_dgram = 2;
// Address block sizes: two addresses, then two ports.
constexpr std::size_t inet_block = 4 + 4 + 2 + 2;
constexpr std::size_t inet6_block = 16 + 16 + 2 + 2;

parse_result invalid(std::string why) {
  parse_result r;
  r.status = parse_status::invalid;
  r.error = std::move(why);
  return r;
}

parse_result incomplete(std::size_t more) {
  parse_result r;
  r.status = parse_status::incomplete;
  r.more = more;
  return r;
}

parse_result complete(version v, std::optional<endpoints> addresses, std::size_t length) {
  parse_result r;
  r.status = parse_status::complete;
  r.value.ver = v;
  r.value.addresses = std::move(addresses);
  r.value.length = length;
  return r;
}

std::uint8_t byte_at(std::string_view b, std::size_t i) { return static_cast<std::uint8_t>(b[i]); }
std::uint16_t u16_at(std::string_view b, std::size_t i) {
  return static_cast<std::uint16_t>(byte_at(b, i) << 8 | byte_at(b, i + 1));
}

template <std::size_t N>
std::array<std::uint8_t, N> bytes_at(std::string_view b, std::size_t i) {
  std::array<std::uint8_t, N> out{};
  for (std::size_t k = 0; k < N; ++k) out[k] = byte_at(b, i + k);
  return out;
}

// 2.1: ports are decimal, 0 to 65535. A leading zero is refused, as 2.1 refuses it in an IPv4
// address's numbers: "05555" is no port any sender writes, and a second reading of it (octal)
// is what the rule exists to rule out.
std::optional<std::uint16_t> parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return std::nullopt;
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

std::vector<std::string_view> split_spaces(std::string_view text) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    auto space = text.find(' ', start);
    if (space == std::string_view::npos) {
      out.push_back(text.substr(start));
      return out;
    }
    out.push_back(text.substr(start, space - start));
    start = space + 1;
  }
}

// One address of the family the line's protocol names: TCP4 dotted quad, TCP6 IPv6 text.
std::optional<ip_bytes> parse_v1_address(std::string_view text, bool v6) {
  if (v6) {
    if (auto a = parse_ipv6(text)) return ip_bytes{*a};
  } else if (auto a = parse_ipv4(text)) {
    return ip_bytes{*a};
  }
  return std::nullopt;
}

// 2.1: "PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP srcport SP dstport CRLF, one space
// each; "PROXY UNKNOWN" may be followed by anything up to the CRLF, which is ignored.
parse_result parse_v1(std::string_view bytes) {
  const std::size_t prefix = std::min(bytes.size(), v1_prefix.size());
  if (bytes.substr(0, prefix) != v1_prefix.substr(0, prefix)) return invalid("not a PROXY protocol header");
  const auto window = bytes.substr(0, std::min(bytes.size(), v1_max_line));
  const auto lf = window.find('\n');
  if (lf == std::string_view::npos) {
    if (bytes.size() >= v1_max_line) return invalid("PROXY v1 header: no CRLF within 107 bytes");
    if (bytes.size() < shortest_header) return incomplete(shortest_header - bytes.size());
    // The line can end no sooner than CRLF (or the LF after a CR already read).
    const std::size_t more = bytes.back() == '\r' ? 1 : 2;
    return incomplete(std::min(more, v1_max_line - bytes.size()));
  }
  const std::size_t length = lf + 1;
  if (lf == 0 || bytes[lf - 1] != '\r') return invalid("PROXY v1 header: the line does not end with CRLF");
  const auto line = bytes.substr(0, lf - 1);
  const auto parts = split_spaces(line);
  if (parts.size() >= 2 && parts[1] == "UNKNOWN") return complete(version::v1, std::nullopt, length);
  if (parts.size() < 2 || (parts[1] != "TCP4" && parts[1] != "TCP6"))
    return invalid("PROXY v1 header: the protocol is not TCP4, TCP6 or UNKNOWN");
  if (parts.size() != 6) return invalid("PROXY v1 header: expected two addresses and two ports, one space apart");
  const bool v6 = parts[1] == "TCP6";
  auto source = parse_v1_address(parts[2], v6);
  auto destination = parse_v1_address(parts[3], v6);
  if (!source || !destination)
    return invalid(std::string("PROXY v1 header: an address is not ") + (v6 ? "IPv6" : "IPv4 (dotted quad)"));
  auto source_port = parse_port(parts[4]);
  auto destination_port = parse_port(parts[5]);
  if (!source_port || !destination_port) return invalid("PROXY v1 header: a port is not a number from 0 to 65535 without leading zeros");
  return complete(version::v1, endpoints{{*source, *source_port}, {*destination, *destination_port}}, length);
}

// 2.2: the signature, ver_cmd, fam, a 16-bit length, then that many bytes: the address
// block of the family, then TLVs (ignored here).
parse_result parse_v2(std::string_view bytes) {
  const std::size_t prefix = std::min(bytes.size(), v2_signature.size());
  if (bytes.substr(0, prefix) != v2_signature.substr(0, prefix)) return invalid("PROXY v2 header: bad signature");
  if (bytes.size() < v2_fixed_part) return incomplete(v2_fixed_part - bytes.size());
  const unsigned ver = byte_at(bytes, 12) >> 4, command = byte_at(bytes, 12) & 0xf;
  const unsigned family = byte_at(bytes, 13) >> 4, transport = byte_at(bytes, 13) & 0xf;
  if (ver != v2_version) return invalid("PROXY v2 header: version " + std::to_string(ver) + ", expected 2");
  if (command != v2_command_local && command != v2_command_proxy)
    return invalid("PROXY v2 header: unknown command " + std::to_string(command));
  if (family > family_unix || transport > transport_dgram)
    return invalid("PROXY v2 header: unknown address family or transport");
  const std::size_t length = v2_fixed_part + u16_at(bytes, 14);
  if (length > max_header)
    return invalid("PROXY v2 header: " + std::to_string(length) + " bytes, longer than " + std::to_string(max_header));
  if (bytes.size() < length) return incomplete(length - bytes.size());
  // LOCAL: the balancer's own connection (a health check); the addresses are ignored.
  if (command == v2_command_local) return complete(version::v2, std::nullopt, length);
  if (transport == transport_dgram) return invalid("PROXY v2 header: a datagram connection, not TCP");
  if (family == family_unspec || family == family_unix || transport == transport_unspec)
    return complete(version::v2, std::nullopt, length);
  const std::size_t block = length - v2_fixed_part;
  const std::size_t at = v2_fixed_part;
  if (family == family_inet) {
    if (block < inet_block) return invalid("PROXY v2 header: IPv4 address block shorter than 12 bytes");
    endpoints e{{bytes_at<4>(bytes, at), u16_at(bytes, at + 8)}, {bytes_at<4>(bytes, at + 4), u16_at(bytes, at + 10)}};
    return complete(version::v2, e, length);
  }
  if (block < inet6_block) return invalid("PROXY v2 header: IPv6 address block shorter than 36 bytes");
  endpoints e{{bytes_at<16>(bytes, at), u16_at(bytes, at + 32)}, {bytes_at<16>(bytes, at + 16), u16_at(bytes, at + 34)}};
  return complete(version::v2, e, length);
}

// Both addresses in one family: IPv4 mapped into IPv6 when the other is IPv6.
std::pair<ip_bytes, ip_bytes> same_family(const ip_bytes& a, const ip_bytes& b) {
  if (a.index() == b.index()) return {a, b};
  auto widen = [](const ip_bytes& x) -> ip_bytes {
    if (const auto* v4 = std::get_if<ipv4_bytes>(&x)) return ipv4_mapped(*v4);
    return x;
  };
  return {widen(a), widen(b)};
}

void put_u16(std::string& out, std::uint16_t v) {
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v & 0xff);
}

template <std::size_t N>
void put_bytes(std::string& out, const std::array<std::uint8_t, N>& a) {
  for (auto b : a) out += static_cast<char>(b);
}

std::string encode_v1(const std::optional<endpoints>& addresses) {
  if (!addresses) return "PROXY UNKNOWN\r\n";
  auto [src, dst] = same_family(addresses->source.ip, addresses->destination.ip);
  const bool v6 = std::holds_alternative<ipv6_bytes>(src);
  return std::string(v6 ? "PROXY TCP6 " : "PROXY TCP4 ") + format_ip(src) + " " + format_ip(dst) + " " +
         std::to_string(addresses->source.port) + " " + std::to_string(addresses->destination.port) + "\r\n";
}

std::string encode_v2(const std::optional<endpoints>& addresses) {
  std::string out(v2_signature);
  if (!addresses) {
    out += static_cast<char>(v2_version << 4 | v2_command_local);
    out += static_cast<char>(family_unspec << 4 | transport_unspec);
    put_u16(out, 0);
    return out;
  }
  auto [src, dst] = same_family(addresses->source.ip, addresses->destination.ip);
  const bool v6 = std::holds_alternative<ipv6_bytes>(src);
  out += static_cast<char>(v2_version << 4 | v2_command_proxy);
  out += static_cast<char>((v6 ? family_inet6 : family_inet) << 4 | transport_stream);
  put_u16(out, static_cast<std::uint16_t>(v6 ? inet6_block : inet_block));
  if (v6) {
    put_bytes(out, std::get<ipv6_bytes>(src));
    put_bytes(out, std::get<ipv6_bytes>(dst));
  } else {
    put_bytes(out, std::get<ipv4_bytes>(src));
    put_bytes(out, std::get<ipv4_bytes>(dst));
  }
  put_u16(out, addresses->source.port);
  put_u16(out, addresses->destination.port);
  return out;
}

}  // namespace

std::string to_string(const socket_address& a) {
  if (std::holds_alternative<ipv6_bytes>(a.ip)) return "[" + format_ip(a.ip) + "]:" + std::to_string(a.port);
  return format_ip(a.ip) + ":" + std::to_string(a.port);
}

parse_result parse(std::string_view bytes) {
  if (bytes.empty()) return incomplete(shortest_header);
  if (bytes.front() == v2_signature.front()) return parse_v2(bytes);
  return parse_v1(bytes);
}

std::string encode(version v, const std::optional<endpoints>& addresses) {
  return v == version::v1 ? encode_v1(addresses) : encode_v2(addresses);
}

}  // namespace mailtap::protocol::proxy
