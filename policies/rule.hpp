// One fault rule: its name, its type's parameters, the phases it applies to and the
// matchers that must all pass. Copyable value type; the engine owns the loaded copies and
// their state. matches() is a pure function of the rule, the query and the session.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policies/cidr.hpp"
#include "policies/types/params.hpp"
#include "protocol/fault.hpp"
#include "protocol/phase.hpp"

namespace mailtap::policies {

// What the advisor knows about its session, for matchers and stateful types.
struct session_facts {
  std::uint64_t number = 0;              // 1-based since the relay started
  std::string client_address;            // as the relay reported it
  std::optional<ip_address> client_ip;   // parsed; nullopt when unparsable (no `client` block matches)
  std::string client_key;                // canonical IP without port (client_address when unparsable)
  bool client_tls = false;               // at connect: the implicit-TLS listener
  std::uint64_t seed = 0;                // session_seed(master, number)
};

// The README's "Keys every rule has", apart from name, type and phase. Unset matchers pass.
struct matcher {
  std::optional<std::string> verb;              // globs (glob.hpp)
  std::optional<std::string> argument;
  std::optional<std::string> sender;
  std::optional<std::string> sender_domain;     // exact, case-insensitive
  std::optional<std::string> recipient;
  std::optional<std::string> recipient_domain;
  std::optional<std::string> ehlo;
  std::vector<cidr> client;                     // empty: any client
  std::optional<bool> tls;
  std::optional<std::uint64_t> nth_session;
  std::optional<std::uint64_t> nth_transaction;
  std::optional<std::uint64_t> nth_recipient;   // at `rcpt` only: the Nth RCPT of the transaction
  std::uint64_t after_us = 0;                   // since the rule was loaded (steady clock)
  std::optional<std::uint64_t> for_us;          // active this long after `after`
  std::optional<std::int64_t> until_s;          // wall clock, Unix seconds: inactive from then on
  double probability = 1.0;
  std::optional<std::uint64_t> max_count;
  std::optional<std::uint64_t> line_longer_than;
  std::optional<std::uint64_t> address_longer_than;
  std::optional<std::uint64_t> recipients_more_than;

  // The keys of the query-dependent matchers that are set (everything but client, tls,
  // nth_session and the time/probability/count keys), in the order of this struct: what a
  // session-wide rule may not use.
  std::vector<std::string_view> query_keys() const;
  // The query-dependent matchers (everything except the time window, probability and max_count).
  bool matches(const protocol::fault_query& q, const session_facts& s) const;
  // The session-level ones, for session-wide rules at connect.
  bool matches_session(const session_facts& s) const;
  // The time window: `after`, `for` (from `loaded_us`) and `until`.
  bool active(std::uint64_t loaded_us, std::uint64_t now_us, std::int64_t wall_now_s) const;
};

struct rule {
  std::string name;
  std::string origin;                    // "FILE:LINE" of its name in a scenario (empty: made in code)
  std::uint32_t table_line = 0;          // the line of its [[fault]] header (0: made in code)
  // Added while the relay runs (the admin API), not from its configuration: a reload, which
  // replaces every rule with the files' rules, removes it and says so (relay/reload.hpp).
  bool added_at_runtime = false;
  // The firewall rule this one is a part of (`firewall_of`/banner, ...; policies/firewall.hpp),
  // so that rule's name removes exactly its parts. Empty for every other rule.
  std::string firewall_of;
  type_params params;
  std::vector<protocol::phase> phases;   // empty for session-wide types
  matcher match;

  std::string_view type() const { return type_name(params); }
  bool has_phase(protocol::phase p) const;
};

}  // namespace mailtap::policies
