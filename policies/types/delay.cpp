// delay: the reply (when = "reply", default) or the command (when = "command") waits a
// fixed time, a uniform draw in [min, max], or a normal draw (mean, jitter) clipped at 0.
#include <cmath>

#include "policies/limits.hpp"
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = delay_params;

void read(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  const auto k = r.key();
  if (k == "when") {
    if (auto v = r.choice({"reply", "command"})) p.when = *v == "reply" ? params::when_kind::reply : params::when_kind::command;
    return;
  }
  auto d = r.duration();
  if (!d) return;
  if (k == "delay") p.delay_us = *d;
  else if (k == "min") p.min_us = *d;
  else if (k == "max") p.max_us = *d;
  else if (k == "mean") p.mean_us = *d;
  else if (k == "jitter") p.jitter_us = *d;
}

// Exactly one of: delay | min + max | mean + jitter.
void finish(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  const bool fixed = r.has("delay");
  const bool uniform = r.has("min") || r.has("max");
  const bool normal = r.has("mean") || r.has("jitter");
  if (fixed + uniform + normal == 0) {
    r.fail_key("delay", "required: 'delay', or 'min' and 'max', or 'mean' and 'jitter'");
    return;
  }
  if (fixed + uniform + normal > 1) {
    // Blame a key of the group that is not the first present one.
    const std::string_view extra = uniform && fixed ? (r.has("min") ? "min" : "max") : (r.has("mean") ? "mean" : "jitter");
    r.fail_key(extra, "choose one of 'delay', 'min' + 'max' or 'mean' + 'jitter'");
    return;
  }
  if (uniform) {
    if (!r.has("min")) return r.fail_key("min", "required with 'max'");
    if (!r.has("max")) return r.fail_key("max", "required with 'min'");
    if (p.min_us > p.max_us) return r.fail_key("min", "is greater than 'max'");
    p.draw = params::draw_kind::uniform;
  } else if (normal) {
    if (!r.has("mean")) return r.fail_key("mean", "required with 'jitter'");
    if (!r.has("jitter")) return r.fail_key("jitter", "required with 'mean'");
    p.draw = params::draw_kind::normal;
  } else {
    p.draw = params::draw_kind::fixed;
  }
}

protocol::fault_stage stage(const type_params& tp) {
  return std::get<params>(tp).when == params::when_kind::reply ? protocol::fault_stage::reply
                                                                 : protocol::fault_stage::command;
}

std::uint64_t draw(const params& p, rng& random) {
  switch (p.draw) {
    case params::draw_kind::fixed: return p.delay_us;
    case params::draw_kind::uniform: return random.uniform(p.min_us, p.max_us);
    case params::draw_kind::normal: {
      const double v = static_cast<double>(p.mean_us) + static_cast<double>(p.jitter_us) * random.normal();
      if (!(v > 0)) return 0;
      if (v >= static_cast<double>(limits::duration_us)) return limits::duration_us;
      return static_cast<std::uint64_t>(std::llround(v));
    }
  }
  return p.delay_us;
}

protocol::fault_decision decide(decide_context& c) {
  protocol::fault_decision d;
  d.what = protocol::verdict::delay;
  d.delay_us = draw(std::get<params>(c.r.params), c.random);
  return d;
}

}  // namespace

fault_type delay() {
  return {.name = params::type_name,
          .phases = rule_phases(),
          .keys = {"when", "delay", "min", "max", "mean", "jitter"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .stage = stage,
          .decide = decide};
}

}  // namespace mailtap::policies::types
