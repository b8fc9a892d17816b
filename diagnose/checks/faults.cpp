// Injected faults no other finding explains (a throttle, a slice, a delay that made nothing
// slow enough to report, a rewrite): one info finding that names each rule, so a capture
// never hides that a fault was armed.
#include <algorithm>

#include "diagnose/checks.hpp"

namespace mailtap::diagnose {

void check_faults(const conversation& c, std::vector<finding>& out) {
  finding f;
  f.id = "fault_injected";
  f.level = severity::info;
  f.stage = "session";
  f.source = origin::injected;
  for (const auto* e : c.timeline) {
    const auto* fe = std::get_if<captures::fault_event>(e);
    if (!fe) continue;
    evidence_item ev = evidence_of(*e);
    bool cited = std::any_of(out.begin(), out.end(), [&](const finding& g) {
      return std::any_of(g.evidence.begin(), g.evidence.end(),
                         [&](const evidence_item& x) { return x.record == "fault" && x.text == ev.text; }) ||
             (g.source == origin::injected && g.rule == fe->fault.rule);
    });
    if (cited) continue;
    if (f.rule.empty()) f.rule = fe->fault.rule;
    f.evidence.push_back(std::move(ev));
  }
  if (f.evidence.empty()) return;
  f.title = "faults injected by mailtap's rules (" + std::to_string(f.evidence.size()) + ")";
  f.explanation = "These fault records show what mailtap changed on purpose in this session; the destination did "
                  "not cause them.";
  f.action = "Remove or narrow the rules (--scenario, [[fault]]) to see the destination's own behaviour.";
  out.push_back(std::move(f));
}

}  // namespace mailtap::diagnose
