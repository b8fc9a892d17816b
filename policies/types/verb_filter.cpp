// verb_filter (any command phase): a command whose verb is not in `allow` is overwritten
// with 'X' (same length, CRLF kept) and forwarded, so the server answers 500 (PIX/ASA).
#include <algorithm>

#include "policies/limits.hpp"
#include "policies/types/types.hpp"
#include "protocol/command.hpp"

namespace mailtap::policies::types {
namespace {

using params = verb_filter_params;

void read(table_reader& r, type_params& tp) {
  if (auto w = r.words(limits::words_per_list, limits::word_chars)) std::get<params>(tp).allow = std::move(*w);
}

void finish(table_reader& r, type_params&) {
  if (!r.has("allow")) r.fail_key("allow", "required for type 'verb_filter'");
}

protocol::fault_decision decide(decide_context& c) {
  const auto& p = std::get<params>(c.r.params);
  protocol::fault_decision d;
  const bool allowed = std::any_of(p.allow.begin(), p.allow.end(),
                                   [&](const std::string& v) { return protocol::iequals(v, c.q.verb); });
  if (!allowed && !c.q.verb.empty()) d.rewrites.mask_command = true;
  return d;
}

}  // namespace

fault_type verb_filter() {
  return {.name = params::type_name,
          .phases = command_phases(),
          .default_phases = command_phases(),
          .keys = {"allow"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .decide = decide};
}

}  // namespace mailtap::policies::types
