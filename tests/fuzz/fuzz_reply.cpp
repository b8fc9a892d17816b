// The reply parser (protocol/reply.hpp): upstream bytes in any segmentation give the same
// replies (the first byte picks a split point), each reply's raw bytes are exactly the input
// it came from, and what is held back stays under the parser's caps (protocol/limits.hpp).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "protocol/limits.hpp"
#include "protocol/reply.hpp"

using namespace mailtap::protocol;

namespace {

struct parsed {
  std::vector<reply> replies;
  reply_parse_status status = reply_parse_status::ok;
  std::size_t held = 0;
};

// Feeds `pieces` in order, stopping at the first error as the relay does.
parsed feed_all(const std::vector<std::string_view>& pieces) {
  parsed p;
  reply_parser parser;
  for (auto piece : pieces) {
    p.status = parser.feed(piece, p.replies);
    p.held = parser.pending_bytes();
    FUZZ_CHECK(p.held <= (limits::reply_line_cap + 2) * (limits::reply_lines_cap + 1), "reply parser holds too much");
    if (p.status != reply_parse_status::ok) break;
  }
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::size_t split = data[0];
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  split = std::min(split, in.size());

  parsed whole = feed_all({in});
  parsed halves = feed_all({in.substr(0, split), in.substr(split)});
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < in.size(); ++i) bytes.push_back(in.substr(i, 1));
  parsed single = feed_all(bytes);

  for (const parsed* other : {&halves, &single}) {
    FUZZ_CHECK(other->status == whole.status, "segmentation changed the parse status");
    FUZZ_CHECK(other->replies.size() == whole.replies.size(), "segmentation changed the replies");
    for (std::size_t i = 0; i < whole.replies.size(); ++i) {
      FUZZ_CHECK(other->replies[i].raw == whole.replies[i].raw, "segmentation changed a reply's bytes");
      FUZZ_CHECK(other->replies[i].code == whole.replies[i].code, "segmentation changed a reply's code");
    }
  }
  std::string joined;
  for (const auto& r : whole.replies) {
    joined += r.raw;
    FUZZ_CHECK(r.code >= 0 && r.code <= 999, "reply code not three digits");
    FUZZ_CHECK(!r.lines.empty(), "reply without lines");
  }
  FUZZ_CHECK(in.substr(0, joined.size()) == joined, "reply bytes are not the input's");
  return 0;
}
