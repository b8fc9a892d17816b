// The checks diagnose runs, one per file under checks/, in the explicit order of
// checks/list.cpp. A check reads the conversation view and appends findings; a later check
// may add evidence to an earlier finding (merge_finding) instead of repeating it. Pure.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "diagnose/conversation.hpp"
#include "diagnose/finding.hpp"

namespace mailtap::diagnose {

using check_fn = void (*)(const conversation&, std::vector<finding>&);

struct check {
  std::string_view name;
  check_fn run;
};

const std::vector<check>& all_checks();

// Each check (checks/<name>.cpp).
void check_replies(const conversation& c, std::vector<finding>& out);
void check_delivery(const conversation& c, std::vector<finding>& out);
void check_firewall(const conversation& c, std::vector<finding>& out);
void check_tls(const conversation& c, std::vector<finding>& out);
void check_timing(const conversation& c, std::vector<finding>& out);
void check_session_end(const conversation& c, std::vector<finding>& out);
void check_smuggling(const conversation& c, std::vector<finding>& out);
void check_faults(const conversation& c, std::vector<finding>& out);

// The session ended at the relay's own error limit: too many commands it refused itself
// (protocol/relay_fsm.cpp, too_many_refusals). checks/smuggling.cpp reports it.
bool ended_at_relay_error_limit(const captures::capture& c);

// The relay's own reply to the client's refused input that checks/smuggling.cpp reports with
// that input: its 550 5.6.0 to a message refused for its line endings, its 421 4.7.0 at its
// error limit. Classified by their words alone, they read as the destination's policy or as a
// drain's closing.
bool smuggling_reply(const conversation& c, const exchange& x);

// The relay's note that the upstream's TLS handshake failed and the session went on in
// plaintext (checks/tls.cpp), or null.
const captures::event* upstream_tls_fallback(const conversation& c);

// Adds `f` to `out`, or, when a finding with the same id and stage is there, its evidence
// to that finding (keeping the worse severity). Returns the finding that holds it.
finding& merge_finding(std::vector<finding>& out, finding f);

// The first fault record in the capture matching `pred` (type, decision, phase), or null.
const captures::fault_event* first_fault(const conversation& c, bool (*pred)(const protocol::fault_event&));

// Marks `f` as made by the fault record `fe` (source injected, rule named, the record cited).
void mark_injected(finding& f, const captures::fault_event& fe);

// A transaction as evidence: sender, recipients, outcome, final reply (checks/delivery.cpp).
evidence_item transaction_evidence(const captures::transaction& t);

// The records of the delay rules (when = "command") that held the client's end of data or a
// command at `t_us`: each record is written as its hold ends, after its actual delay, so its hold
// spans `t_us` (checks/delay_holds.cpp). The destination waited for what such a rule held.
std::vector<const captures::fault_event*> delay_holds_at(const conversation& c, std::uint64_t t_us);

// Whether the hold is of the message's end (the dot, or the last byte of BDAT ... LAST).
bool holds_end_of_data(const captures::fault_event& hold);

// The destination ended the session at `at_us` (with a 421 when `said_421`, else by hanging up
// without a reply) while `hold` held what it waited for: `f` is the rule's (source injected, the
// rule named, its record cited), its title and text say the hold caused it and how far into it.
void blame_delay_hold(finding& f, const captures::fault_event& hold, std::uint64_t at_us, bool said_421);

// "1.234 s" / "12.345 ms" for explanations.
std::string duration_text(std::uint64_t us);

}  // namespace mailtap::diagnose
