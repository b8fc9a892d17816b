// Base64 encoding and decoding.
#include "protocol/base64.hpp"

#include <array>

namespace mailtap::protocol {
namespace {
constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<signed char, 256> make_reverse() {
  std::array<signed char, 256> r{};
  for (auto& v : r) v = -1;
  for (std::size_t i = 0; i < alphabet.size(); ++i) r[static_cast<unsigned char>(alphabet[i])] = static_cast<signed char>(i);
  return r;
}
constexpr auto reverse = make_reverse();

// Every 12-bit group as its two characters: one lookup per two output characters (captures
// encode every relayed byte, so this is on the data path).
constexpr std::array<char, 2 * 4096> make_pairs() {
  std::array<char, 2 * 4096> p{};
  for (std::size_t v = 0; v < 4096; ++v) {
    p[2 * v] = alphabet[v >> 6];
    p[2 * v + 1] = alphabet[v & 63];
  }
  return p;
}
constexpr auto pairs = make_pairs();

}  // namespace

void base64_encode_into(std::string& out, std::string_view in) {
  const std::size_t start = out.size();
  out.resize(start + (in.size() + 2) / 3 * 4);
  char* o = out.data() + start;
  const auto* bytes = reinterpret_cast<const unsigned char*>(in.data());
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const unsigned v = (unsigned{bytes[i]} << 16) | (unsigned{bytes[i + 1]} << 8) | bytes[i + 2];
    const char* hi = &pairs[2 * (v >> 12)];
    const char* lo = &pairs[2 * (v & 4095)];
    o[0] = hi[0];
    o[1] = hi[1];
    o[2] = lo[0];
    o[3] = lo[1];
    o += 4;
  }
  if (const std::size_t rest = in.size() - i; rest > 0) {
    unsigned v = unsigned{bytes[i]} << 16;
    if (rest == 2) v |= unsigned{bytes[i + 1]} << 8;
    o[0] = alphabet[(v >> 18) & 63];
    o[1] = alphabet[(v >> 12) & 63];
    o[2] = rest == 2 ? alphabet[(v >> 6) & 63] : '=';
    o[3] = '=';
  }
}

std::string base64_encode(std::string_view in) {
  std::string out;
  base64_encode_into(out, in);
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (std::size_t i = 0; i < in.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) { v[k] = 0; ++pad; continue; }
      if (pad > 0) return std::nullopt;
      v[k] = reverse[static_cast<unsigned char>(c)];
      if (v[k] < 0) return std::nullopt;
    }
    unsigned n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out += static_cast<char>((n >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

}  // namespace mailtap::protocol
