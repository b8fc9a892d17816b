// The fault types, one function per file in types/, each returning its description
// (keys, defaults, phases, decision). registry.cpp lists them by name; nothing registers
// itself. Pure functions, thread-safe.
#pragma once
#include "policies/types/type.hpp"

namespace mailtap::policies::types {

fault_type delay();
fault_type reply();
fault_type reply_and_close();
fault_type disconnect();
fault_type reset();
fault_type stall();
fault_type throttle();
fault_type slice();
fault_type capabilities();
fault_type banner();
fault_type greylist();
fault_type quota();
fault_type fail_then_pass();
fault_type blackhole();
fault_type upstream_unreachable();
fault_type verb_filter();
fault_type split_dot_withhold();

// Helpers for the stateful types: lower-cased sender of the query, sorted recipients.
std::string state_sender(const protocol::fault_query& q);
std::string state_recipients(const protocol::fault_query& q, char separator);

}  // namespace mailtap::policies::types
