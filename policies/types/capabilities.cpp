// capabilities (phase ehlo, reply stage): the EHLO reply the client sees is edited:
// keywords stripped, keywords masked (ASA: STARTTLS shown as XXXXXXXA), SIZE's parameter set.
#include "policies/limits.hpp"
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = capabilities_params;

// SIZE's parameter is a decimal count of octets (RFC 1870); 0 means "no fixed limit".
constexpr std::int64_t max_size_parameter = 1'000'000'000'000'000;

void read(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  const auto k = r.key();
  if (k == "strip") {
    if (auto w = r.words(limits::words_per_list, limits::word_chars)) p.strip = std::move(*w);
  } else if (k == "mask") {
    if (auto w = r.words(limits::words_per_list, limits::word_chars)) p.mask = std::move(*w);
  } else if (k == "size") {
    if (auto v = r.integer(0, max_size_parameter)) p.size = static_cast<std::uint64_t>(*v);
  }
}

void finish(table_reader& r, type_params&) {
  if (!r.has("strip") && !r.has("mask") && !r.has("size"))
    r.fail_key("strip", "type 'capabilities' needs 'strip', 'mask' or 'size'");
}

protocol::fault_decision decide(decide_context& c) {
  protocol::fault_decision d;
  // Only a successful EHLO reply lists capabilities; nothing to edit in an error.
  if (c.q.upstream_reply && c.q.upstream_reply->code != 250) return d;
  const auto& p = std::get<params>(c.r.params);
  d.rewrites.strip_capabilities = p.strip;
  d.rewrites.mask_capabilities = p.mask;
  d.rewrites.size = p.size;
  return d;
}

}  // namespace

fault_type capabilities() {
  return {.name = params::type_name,
          .phases = {protocol::phase::ehlo},
          .default_phases = {protocol::phase::ehlo},
          .keys = {"strip", "mask", "size"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .stage = [](const type_params&) { return protocol::fault_stage::reply; },
          .decide = decide};
}

}  // namespace mailtap::policies::types
