// Most destructive first: a test that arms a disconnect must see a disconnect (Postfix
// smtp-sink's order, extended with unreachable, reset, stall and delay).
#include "policies/precedence.hpp"

#include <algorithm>

#include "protocol/command.hpp"

namespace mailtap::policies {

int precedence_rank(protocol::verdict v) {
  using protocol::verdict;
  switch (v) {
    case verdict::unreachable: return 1;
    case verdict::disconnect: return 2;
    case verdict::reset: return 3;
    case verdict::reply_and_close: return 4;
    case verdict::reply:
    case verdict::blackhole: return 5;
    case verdict::stall: return 6;
    case verdict::delay: return 7;
    case verdict::proceed: return 8;
  }
  return 8;
}

namespace {

void unite(std::vector<std::string>& into, const std::vector<std::string>& from) {
  for (const auto& w : from)
    if (std::none_of(into.begin(), into.end(), [&](const std::string& x) { return protocol::iequals(x, w); }))
      into.push_back(w);
}

}  // namespace

void merge_rewrites(protocol::rewrite_set& into, const protocol::rewrite_set& from) {
  into.mask_banner = into.mask_banner || from.mask_banner;
  if (!into.banner_text) into.banner_text = from.banner_text;
  unite(into.strip_capabilities, from.strip_capabilities);
  unite(into.mask_capabilities, from.mask_capabilities);
  if (!into.size) into.size = from.size;
  into.mask_command = into.mask_command || from.mask_command;
}

}  // namespace mailtap::policies
