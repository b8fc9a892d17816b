// The interface of one fault type (modelled on Toxiproxy's toxics/): its
// name, phases, keys, defaults, how it reads its keys, and its decision. Each lives in
// types/<name>.cpp and is listed by name in registry.cpp. decide() runs under the engine's
// mutex with the rule's state, so it may update that state; it never does I/O or throws.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "config_reader/table_reader.hpp"
#include "policies/random.hpp"
#include "policies/rule.hpp"
#include "policies/rule_state.hpp"
#include "protocol/fault.hpp"

namespace mailtap::policies {

// A type reads its own keys with the shared TOML reading layer (config_reader/README.md).
using config_reader::echo;
using config_reader::table_reader;
using config_reader::toml_type_name;

// Everything one matching rule may look at while deciding.
struct decide_context {
  const rule& r;
  const protocol::fault_query& q;
  const session_facts& session;
  rule_state& state;        // the rule's own cross-session table
  std::uint64_t now_us;     // steady clock
  rng& random;              // the session's generator
};

struct fault_type {
  std::string_view name;
  bool session_wide = false;                       // decided once at connect (plan)
  // Session-wide types whose plan acts only when its moment comes (split_dot_withhold): the
  // relay reserves them then (fault_advisor::reserve_plan_rule) and they count with the fault
  // record it writes; the others count when the plan is made.
  bool counts_when_acting = false;
  std::vector<protocol::phase> phases{};           // phases a rule of this type may name
  std::vector<protocol::phase> default_phases{};   // empty: `phase` is required
  std::vector<std::string_view> keys{};            // the type's own keys
  type_params (*make)() = nullptr;                 // the defaults
  void (*read)(table_reader& r, type_params& p) = nullptr;     // one of `keys`: r.key()
  void (*finish)(table_reader& r, type_params& p) = nullptr;   // required keys, cross-key checks (may be null)
  // The stage at which it acts, for phases other than connect (always command) and banner
  // (always reply). Null: the command stage.
  protocol::fault_stage (*stage)(const type_params& p) = nullptr;
  // The stage at which a rule of this type with `p` is asked at phase `ph`: connect always at
  // the command stage, banner always at the reply stage; otherwise `stage` says.
  protocol::fault_stage stage_at(const type_params& p, protocol::phase ph) const;
  // Per-decision types: what this matching rule asks for. verdict proceed with rewrites is
  // a rewrite; proceed without rewrites means "matched, nothing to do" (a greylist pass).
  protocol::fault_decision (*decide)(decide_context& c) = nullptr;
  // Session-wide types: adds to the plan; false when it contributed nothing.
  bool (*plan)(const type_params& p, protocol::session_plan& plan) = nullptr;
};

// The phases a rule may name (README "Keys every rule has"; not body or tls).
const std::vector<protocol::phase>& rule_phases();
// Phases with a command verb: every rule phase but connect, banner and data_end.
const std::vector<protocol::phase>& command_phases();

// Shared reading of `code`, `enhanced` and `text` for the reply-carrying types.
// read_reply_key returns false when r.key() is none of them.
bool read_reply_key(table_reader& r, protocol::reply_spec& reply, int min_code, int max_code);
// In finish: when the scenario changed the code but not `enhanced` or `text`, the defaults
// written for `default_code` no longer fit: the enhanced code is dropped and the text becomes
// the class's. Then the enhanced code's class must be the code's first digit (RFC 3463).
void finish_reply(table_reader& r, protocol::reply_spec& reply, int default_code);
// A text for a reply the scenario gave only a code for.
std::string default_reply_text(int code);

}  // namespace mailtap::policies
