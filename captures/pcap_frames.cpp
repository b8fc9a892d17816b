// Synthesizing a capture's TCP connections (pcap_frames.hpp): addresses from the header,
// one connection per leg (two when STARTTLS secured it), frames built byte by byte with
// their IPv4/IPv6 and TCP checksums.
#include "captures/pcap_frames.hpp"

#include <algorithm>
#include <array>
#include <optional>

#include "captures/index_summary.hpp"
#include "protocol/ip_address.hpp"
#include "protocol/starttls_sequencer.hpp"

namespace mailtap::captures {

namespace {

using protocol::ip_bytes;
using protocol::ipv4_bytes;
using protocol::ipv6_bytes;

constexpr std::uint16_t smtp_port = 25;
constexpr std::uint16_t submission_port = 587;
// Where an address was not recorded (an upstream named by host name, the built-in sink, a
// wildcard listener): RFC 5737 and RFC 3849 documentation addresses.
constexpr ipv4_bytes relay_v4{192, 0, 2, 1};
constexpr ipv4_bytes upstream_v4{198, 51, 100, 25};
constexpr ipv4_bytes client_v4{203, 0, 113, 1};
// mailtap's own port toward the upstream is not recorded: the first of the dynamic range (RFC 6335 6).
constexpr std::uint16_t relay_source_port = 49152;
constexpr std::uint8_t flag_fin = 0x01, flag_syn = 0x02, flag_psh = 0x08, flag_ack = 0x10;
constexpr std::array<std::uint8_t, 6> mac_client{0x02, 0, 0, 0, 0, 0x01}, mac_server{0x02, 0, 0, 0, 0, 0x02};

struct endpoint {
  ip_bytes ip;
  std::uint16_t port = 0;
};

// The port of "ip:port", "[ip6]:port" or "host:port".
std::optional<std::uint16_t> port_of(const std::string& text) {
  std::size_t colon;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
    colon = close + 1;
  } else {
    colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) return std::nullopt;
  }
  if (colon + 1 >= text.size() || text.size() - colon - 1 > 5) return std::nullopt;
  unsigned port = 0;
  for (std::size_t i = colon + 1; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
    port = port * 10 + static_cast<unsigned>(text[i] - '0');
  }
  if (port > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(port);
}

bool unspecified(const ip_bytes& ip) {
  return std::visit([](const auto& b) { return std::all_of(b.begin(), b.end(), [](auto x) { return x == 0; }); }, ip);
}

// "ip:port", "[ip6]:port", "host:port" or "builtin"; `fallback` for what is not an address.
endpoint parse_endpoint(const std::string& text, const ipv4_bytes& fallback, std::uint16_t fallback_port) {
  endpoint e{fallback, port_of(text).value_or(fallback_port)};
  if (auto ip = protocol::parse_ip(address_of_endpoint(text)); ip && !unspecified(*ip)) e.ip = *ip;
  return e;
}

bool is_v4(const ip_bytes& ip) { return std::holds_alternative<ipv4_bytes>(ip); }
ipv6_bytes as_v6(const ip_bytes& ip) {
  if (const auto* v4 = std::get_if<ipv4_bytes>(&ip)) return protocol::ipv4_mapped(*v4);
  return std::get<ipv6_bytes>(ip);
}

std::uint16_t server_port(std::uint16_t recorded, const pcap_options& o) {
  return o.keep_ports || recorded == smtp_port || recorded == submission_port ? recorded : smtp_port;
}

void put16(std::string& out, std::uint16_t v) {
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v & 0xff);
}
void put32(std::string& out, std::uint32_t v) {
  put16(out, static_cast<std::uint16_t>(v >> 16));
  put16(out, static_cast<std::uint16_t>(v & 0xffff));
}

// RFC 1071: the one's complement sum, continued over several pieces.
std::uint32_t sum_of(std::string_view data, std::uint32_t sum = 0) {
  for (std::size_t i = 0; i + 1 < data.size(); i += 2)
    sum += (static_cast<std::uint8_t>(data[i]) << 8) | static_cast<std::uint8_t>(data[i + 1]);
  if (data.size() % 2) sum += static_cast<std::uint8_t>(data.back()) << 8;
  return sum;
}
std::uint16_t fold(std::uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum & 0xffff);
}

// One TCP connection's two sides and their next sequence numbers.
class connection {
 public:
  connection(endpoint client, endpoint server, std::uint32_t isn, std::vector<frame>& out)
      : client_(std::move(client)), server_(std::move(server)), out_(out) {
    v4_ = is_v4(client_.ip) && is_v4(server_.ip);
    next_[0] = isn;
    next_[1] = isn + 0x10000000u;
  }
  void open(std::int64_t at) {
    send(at, false, flag_syn, {});
    ++next_[0];
    send(at, true, flag_syn | flag_ack, {});
    ++next_[1];
    send(at, false, flag_ack, {});
  }
  void data(std::int64_t at, bool from_server, std::string_view bytes) {
    while (!bytes.empty()) {
      const auto n = std::min(bytes.size(), max_segment_bytes);
      send(at, from_server, flag_psh | flag_ack, bytes.substr(0, n));
      next_[from_server] += static_cast<std::uint32_t>(n);
      bytes.remove_prefix(n);
    }
  }
  void close(std::int64_t at) {
    send(at, false, flag_fin | flag_ack, {});
    ++next_[0];
    send(at, true, flag_fin | flag_ack, {});
    ++next_[1];
    send(at, false, flag_ack, {});
  }

 private:
  void send(std::int64_t at, bool from_server, std::uint8_t flags, std::string_view payload) {
    const endpoint& src = from_server ? server_ : client_;
    const endpoint& dst = from_server ? client_ : server_;
    std::string tcp;
    put16(tcp, src.port);
    put16(tcp, dst.port);
    put32(tcp, next_[from_server]);
    put32(tcp, flags & flag_ack ? next_[!from_server] : 0);
    tcp += static_cast<char>(5 << 4);   // 20-byte header, no options
    tcp += static_cast<char>(flags);
    put16(tcp, 65535);                  // window
    put16(tcp, 0);                      // checksum, below
    put16(tcp, 0);                      // urgent pointer
    tcp += payload;
    std::string pseudo, ip;
    const auto tcp_length = static_cast<std::uint16_t>(tcp.size());
    if (v4_) {
      const auto s = std::get<ipv4_bytes>(src.ip), d = std::get<ipv4_bytes>(dst.ip);
      pseudo.append(reinterpret_cast<const char*>(s.data()), 4).append(reinterpret_cast<const char*>(d.data()), 4);
      pseudo += '\0', pseudo += static_cast<char>(6), put16(pseudo, tcp_length);
      ip += static_cast<char>(0x45), ip += '\0';
      put16(ip, static_cast<std::uint16_t>(20 + tcp.size()));
      put16(ip, ip_id_++);
      put16(ip, 0x4000);   // don't fragment
      ip += static_cast<char>(64), ip += static_cast<char>(6);
      put16(ip, 0);
      ip.append(reinterpret_cast<const char*>(s.data()), 4).append(reinterpret_cast<const char*>(d.data()), 4);
      const auto header_sum = fold(sum_of(ip));
      ip[10] = static_cast<char>(header_sum >> 8), ip[11] = static_cast<char>(header_sum & 0xff);
    } else {
      const auto s = as_v6(src.ip), d = as_v6(dst.ip);
      pseudo.append(reinterpret_cast<const char*>(s.data()), 16).append(reinterpret_cast<const char*>(d.data()), 16);
      put32(pseudo, tcp_length), put32(pseudo, 6);
      put32(ip, 0x60000000u);
      put16(ip, tcp_length);
      ip += static_cast<char>(6), ip += static_cast<char>(64);
      ip.append(reinterpret_cast<const char*>(s.data()), 16).append(reinterpret_cast<const char*>(d.data()), 16);
    }
    const auto tcp_sum = fold(sum_of(tcp, sum_of(pseudo)));
    tcp[16] = static_cast<char>(tcp_sum >> 8), tcp[17] = static_cast<char>(tcp_sum & 0xff);
    std::string eth;
    const auto& dst_mac = from_server ? mac_client : mac_server;
    const auto& src_mac = from_server ? mac_server : mac_client;
    eth.append(reinterpret_cast<const char*>(dst_mac.data()), 6).append(reinterpret_cast<const char*>(src_mac.data()), 6);
    put16(eth, v4_ ? 0x0800 : 0x86dd);
    out_.push_back({std::max(at, last_), eth + ip + tcp});
    last_ = out_.back().unix_us;
  }

  endpoint client_, server_;
  std::vector<frame>& out_;
  bool v4_ = true;
  std::uint32_t next_[2];
  std::uint16_t ip_id_ = 1;
  std::int64_t last_ = 0;
};

// One leg: its connections in order (a new one after a STARTTLS handshake), fed its bytes.
class leg_writer {
 public:
  leg_writer(endpoint client, endpoint server, std::uint32_t isn, std::vector<frame>& out)
      : client_(std::move(client)), server_(std::move(server)), isn_(isn), out_(out) {}
  void bytes(std::int64_t at, bool from_server, std::string_view data) {
    if (!open_) {
      current_.emplace(client_, server_, isn_, out_);
      current_->open(at);
      open_ = true;
    }
    current_->data(at, from_server, data);
    last_ = at;
  }
  // What follows goes in a new connection from a new port: a handshake secured the leg (its
  // decrypted bytes follow), or the relay replaced the upstream connection (a plaintext
  // fall-back after a failed handshake).
  void new_connection(std::int64_t at) {
    if (!open_) return;   // implicit TLS: nothing went before it
    current_->close(at);
    open_ = false;
    ++client_.port;
    isn_ += 0x01000000u;
  }
  void end(std::int64_t at) {
    if (open_) current_->close(std::max(at, last_));
    open_ = false;
  }

 private:
  endpoint client_, server_;
  std::uint32_t isn_;
  std::vector<frame>& out_;
  std::optional<connection> current_;
  bool open_ = false;
  std::int64_t last_ = 0;
};

}  // namespace

std::vector<frame> synthesize_frames(const capture& c, const pcap_options& options) {
  const std::int64_t start = parse_rfc3339_us(c.header.started_at).value_or(0);
  endpoint client = parse_endpoint(c.header.client, client_v4, relay_source_port + 1);
  endpoint listen = parse_endpoint(c.header.listen, relay_v4, smtp_port);
  endpoint upstream = parse_endpoint(c.header.upstream, upstream_v4, smtp_port);
  listen.port = server_port(listen.port, options);
  upstream.port = server_port(upstream.port, options);
  // mailtap's side of the upstream connection: its listening address, a port of its own.
  endpoint relay_side{listen.ip, relay_source_port};
  std::vector<frame> out;
  leg_writer client_leg(client, listen, 1'000'000u, out);
  leg_writer upstream_leg(relay_side, upstream, 2'000'000u, out);
  auto leg_of = [&](protocol::leg l) -> leg_writer& { return l == protocol::leg::client ? client_leg : upstream_leg; };
  std::int64_t last = start;
  for (const auto& e : c.events) {
    if (const auto* b = std::get_if<bytes_event>(&e)) {
      // Toward mailtap on the client leg, away from it on the upstream leg: the TCP client's side.
      const bool from_server = (b->leg == protocol::leg::client) == (b->dir == protocol::direction::out);
      last = start + static_cast<std::int64_t>(b->t_us);
      leg_of(b->leg).bytes(last, from_server, b->data);
    } else if (const auto* t = std::get_if<tls_event>(&e)) {
      leg_of(t->leg).new_connection(start + static_cast<std::int64_t>(t->t_us));
    } else if (const auto* n = std::get_if<note_event>(&e); n && n->text == protocol::note_new_plaintext_upstream) {
      upstream_leg.new_connection(start + static_cast<std::int64_t>(n->t_us));
    }
  }
  const std::int64_t end = c.end ? start + static_cast<std::int64_t>(c.end->t_us) : last;
  client_leg.end(end);
  upstream_leg.end(end);
  std::stable_sort(out.begin(), out.end(), [](const frame& a, const frame& b) { return a.unix_us < b.unix_us; });
  return out;
}

}  // namespace mailtap::captures
