// The fixed precedence between verdicts when several rules match at one decision point
// (README "Precedence and determinism"), and how rewrites compose with a proceed or delay.
// Owns nothing. Pure functions, thread-safe.
#pragma once
#include "protocol/fault.hpp"

namespace mailtap::policies {

// 1 (unreachable, wins) .. 8 (proceed, i.e. rewrites only).
int precedence_rank(protocol::verdict v);

// Adds `from` to `into`: flags are or-ed, capability lists united (case-insensitively, in
// order), and the banner text and SIZE of the rule loaded first are kept.
void merge_rewrites(protocol::rewrite_set& into, const protocol::rewrite_set& from);

}  // namespace mailtap::policies
