// Runs the checks in their listed order, then orders the findings for reading.
#include "diagnose/diagnose.hpp"

#include <algorithm>

#include "diagnose/checks.hpp"
#include "diagnose/conversation.hpp"

namespace mailtap::diagnose {

std::size_t diagnosis::count(severity s) const {
  return static_cast<std::size_t>(
      std::count_if(findings.begin(), findings.end(), [&](const finding& f) { return f.level == s; }));
}

diagnosis diagnose_capture(const captures::capture& c) {
  const conversation conv = read_conversation(c);
  diagnosis d;
  d.cap = &c;
  for (const auto& chk : all_checks()) chk.run(conv, d.findings);
  // The server the destination's greeting (or reply to EHLO) names is the server of every reply
  // it gave: a vendor read from a reply's wording or queue id does not override it.
  if (!conv.server_vendor.empty())
    for (auto& f : d.findings)
      if (f.source == origin::server && !f.vendor.empty()) f.vendor = conv.server_vendor;
  // The built-in sink words its replies as Postfix does ("queued as"): the server is mailtap's own.
  if (c.header.upstream == "builtin")
    for (auto& f : d.findings)
      if (!f.vendor.empty()) f.vendor = "mailtap built-in sink";
  // Each finding's evidence by time (README "diagnose": the JSON's evidence[]), whichever check
  // gathered it in whichever order.
  for (auto& f : d.findings)
    std::stable_sort(f.evidence.begin(), f.evidence.end(),
                     [](const evidence_item& a, const evidence_item& b) { return a.t_us < b.t_us; });
  auto first_time = [](const finding& f) { return f.evidence.empty() ? UINT64_MAX : f.evidence.front().t_us; };
  std::stable_sort(d.findings.begin(), d.findings.end(), [&](const finding& a, const finding& b) {
    if (a.level != b.level) return static_cast<int>(a.level) < static_cast<int>(b.level);
    return first_time(a) < first_time(b);
  });
  return d;
}

}  // namespace mailtap::diagnose
