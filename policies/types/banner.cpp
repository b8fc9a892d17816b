// banner (phase banner, reply stage): the greeting the client sees is masked (PIX: every
// character but '2', '0' and space becomes '*') or its text replaced.
#include "policies/limits.hpp"
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = banner_params;

void read(table_reader& r, type_params& tp) {
  auto& p = std::get<params>(tp);
  if (r.key() == "mask") {
    if (auto b = r.boolean()) p.mask = *b;
  } else if (r.key() == "text") {
    if (auto t = r.text(limits::reply_text_chars)) p.text = *t;
  }
}

void finish(table_reader& r, type_params& tp) {
  const auto& p = std::get<params>(tp);
  if (r.has("mask") && r.has("text")) return r.fail_key("text", "choose 'mask = true' or 'text', not both");
  if (!r.has("text") && !p.mask && !r.failed()) r.fail_key("mask", "type 'banner' needs 'mask = true' or 'text'");
}

protocol::fault_decision decide(decide_context& c) {
  const auto& p = std::get<params>(c.r.params);
  protocol::fault_decision d;
  d.rewrites.mask_banner = p.mask;
  d.rewrites.banner_text = p.text;
  return d;
}

}  // namespace

fault_type banner() {
  return {.name = params::type_name,
          .phases = {protocol::phase::banner},
          .default_phases = {protocol::phase::banner},
          .keys = {"mask", "text"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .finish = finish,
          .stage = [](const type_params&) { return protocol::fault_stage::reply; },
          .decide = decide};
}

}  // namespace mailtap::policies::types
