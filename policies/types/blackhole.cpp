// blackhole (phase data_end): the relay answers 250 to end-of-data itself and delivers
// nothing; the only fault that may fabricate a 2xx (policies/README.md, "Reply codes").
// The queue id is derived from the session seed and transaction number, so a replay shows
// the same id.
#include "policies/limits.hpp"
#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

using params = blackhole_params;

// Ten upper-case hex digits, like a Postfix short queue id.
constexpr int queue_id_digits = 10;

void read(table_reader& r, type_params& tp) {
  if (auto t = r.text(limits::reply_text_chars)) std::get<params>(tp).text = *t;
}

std::string queue_id(std::uint64_t seed, std::uint64_t transaction) {
  const std::uint64_t h = mix64(seed ^ mix64(transaction + 1));
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string id;
  for (int i = queue_id_digits - 1; i >= 0; --i) id += hex[(h >> (4 * i)) & 0xf];
  return id;
}

protocol::fault_decision decide(decide_context& c) {
  const auto& p = std::get<params>(c.r.params);
  protocol::fault_decision d;
  d.what = protocol::verdict::blackhole;
  d.reply = {250, "2.0.0", p.text ? *p.text : "Ok: queued as " + queue_id(c.session.seed, c.q.transaction_number)};
  return d;
}

}  // namespace

fault_type blackhole() {
  return {.name = params::type_name,
          .phases = {protocol::phase::data_end},
          .default_phases = {protocol::phase::data_end},
          .keys = {"text"},
          .make = [] { return type_params{params{}}; },
          .read = read,
          .decide = decide};
}

}  // namespace mailtap::policies::types
