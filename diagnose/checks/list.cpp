// The explicit list of checks, in the order they run, and the helpers they share. The
// replies come first, so later checks add their evidence to a reply's finding; the fault
// summary comes last, to name only the injected faults no other finding cites.
#include <algorithm>
#include <cstdio>

#include "diagnose/checks.hpp"

namespace mailtap::diagnose {

const std::vector<check>& all_checks() {
  static const std::vector<check> list = {
      {"replies", check_replies},       {"delivery", check_delivery}, {"firewall", check_firewall},
      {"tls", check_tls},               {"timing", check_timing},     {"session_end", check_session_end},
      {"smuggling", check_smuggling},   {"faults", check_faults},
  };
  return list;
}

finding& merge_finding(std::vector<finding>& out, finding f) {
  auto same = [&](const finding& g) { return g.id == f.id && g.stage == f.stage; };
  auto it = std::find_if(out.begin(), out.end(), same);
  if (it == out.end()) {
    out.push_back(std::move(f));
    return out.back();
  }
  for (auto& e : f.evidence) {
    bool cited = std::any_of(it->evidence.begin(), it->evidence.end(),
                             [&](const evidence_item& x) { return x.t_us == e.t_us && x.text == e.text; });
    if (!cited) it->evidence.push_back(std::move(e));
  }
  std::stable_sort(it->evidence.begin(), it->evidence.end(),
                   [](const evidence_item& a, const evidence_item& b) { return a.t_us < b.t_us; });
  if (static_cast<int>(f.level) < static_cast<int>(it->level)) it->level = f.level;
  if (it->source == origin::none || (f.source == origin::injected && it->rule.empty())) {
    it->source = f.source;
    it->rule = f.rule;
  }
  return *it;
}

const captures::fault_event* first_fault(const conversation& c, bool (*pred)(const protocol::fault_event&)) {
  for (const auto* e : c.timeline)
    if (const auto* f = std::get_if<captures::fault_event>(e))
      if (pred(f->fault)) return f;
  return nullptr;
}

void mark_injected(finding& f, const captures::fault_event& fe) {
  // The mode's text says what the destination would have done; here a rule did it.
  if (f.source != origin::injected && f.explanation.rfind("Injected by the fault rule", 0) != 0)
    f.explanation = "Injected by the fault rule '" + fe.fault.rule + "' (" + fe.fault.type +
                    "): the destination did not do this. What it reproduces: " + f.explanation;
  f.source = origin::injected;
  f.rule = fe.fault.rule;
  evidence_item e = evidence_of(captures::event{fe});
  bool cited = std::any_of(f.evidence.begin(), f.evidence.end(),
                           [&](const evidence_item& x) { return x.t_us == e.t_us && x.text == e.text; });
  if (!cited) {
    f.evidence.push_back(std::move(e));
    std::stable_sort(f.evidence.begin(), f.evidence.end(),
                     [](const evidence_item& a, const evidence_item& b) { return a.t_us < b.t_us; });
  }
}

std::string duration_text(std::uint64_t us) {
  char buf[32];
  if (us >= 1000000) std::snprintf(buf, sizeof buf, "%llu.%03llu s", static_cast<unsigned long long>(us / 1000000),
                                   static_cast<unsigned long long>(us / 1000 % 1000));
  else std::snprintf(buf, sizeof buf, "%llu.%03llu ms", static_cast<unsigned long long>(us / 1000),
                     static_cast<unsigned long long>(us % 1000));
  return buf;
}

}  // namespace mailtap::diagnose
