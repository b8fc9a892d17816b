// slice (session-wide): writes are cut into `segment`-byte pieces with `gap` after each;
// `split_dot` sends the end-of-data '.' and its CRLF upstream as separate segments.
// The first loaded rule keeps a leg's segmentation.
#include <algorithm>

#include "policies/limits.hpp"
#include "policies/types/shaping.hpp"
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = slice_params;

void read(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  const auto k = r.key();
  if (k == "segment") {
    if (auto v = r.integer(1, limits::segment_bytes)) p.segment_bytes = static_cast<std::uint64_t>(*v);
  } else if (k == "gap") {
    if (auto d = r.duration()) p.gap_us = *d;
  } else if (k == "direction") {
    if (auto d = read_direction(r)) p.direction = *d;
  } else if (k == "split_dot") {
    if (auto b = r.boolean()) p.split_dot = *b;
  }
}

void finish(table_reader& r, type_params& tp) {
  const auto& p = std::get<params>(tp);
  if (p.segment_bytes == 0 && !p.split_dot && !r.failed())
    r.fail_key("segment", "required unless split_dot = true (otherwise nothing is sliced)");
}

bool plan(const type_params& tp, protocol::session_plan& out) {
  const auto& p = std::get<params>(tp);
  bool any = false;
  if (p.segment_bytes > 0) {
    any = for_legs(p.direction, out, [&](protocol::leg_shaping& leg) {
      if (leg.segment_bytes != 0) return false;
      leg.segment_bytes = static_cast<std::size_t>(p.segment_bytes);
      leg.gap_us = p.gap_us;
      return true;
    });
  }
  if (p.split_dot && out.split_dot_gap_us == 0) {
    out.split_dot_gap_us = std::max<std::uint64_t>(p.gap_us, 1);   // > 0 is what turns it on
    any = true;
  }
  return any;
}

}  // namespace

fault_type slice() {
  return {.name = params::type_name,
          .session_wide = true,
          .keys = {"segment", "gap", "direction", "split_dot"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .plan = plan};
}

}  // namespace mailtap::policies::types
