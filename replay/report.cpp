// Rendering replay results: text, JSON (Boost.JSON) and JUnit XML.
#include "replay/report.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cstdio>

#include "captures/show.hpp"

namespace mailtap::replay {

namespace json = boost::json;

namespace {

std::string ms(std::uint64_t us) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", static_cast<double>(us) / 1000.0);
  return b;
}

std::string clip(std::string s, std::size_t n) {
  if (s.size() > n) s = s.substr(0, n - 3) + "...";
  return s;
}

std::string pad(std::string s, std::size_t n) {
  s.append(s.size() < n ? n - s.size() : 1, ' ');
  return s;
}

std::string words(const protocol::reply& r) {
  return std::to_string(r.code) + (r.enhanced.empty() ? "" : " " + r.enhanced);
}

// A recorded reply as the report names it: its code, and who made it when not the server.
std::string recorded_words(const recorded_reply& r) {
  std::string out = words(r.reply);
  if (r.source == reply_source::injected) out += " [injected" + (r.rule.empty() ? "" : ": " + r.rule) + "]";
  else if (r.source == reply_source::relay && r.server_reply) out += " [relay; destination " + words(*r.server_reply) + "]";
  else if (r.source == reply_source::relay) out += " [relay]";
  else if (r.source == reply_source::edited) out += " [edited by relay]";
  return out;
}

char mark(step_status s) {
  switch (s) {
    case step_status::matched: return ' ';
    case step_status::diverged: return '!';
    case step_status::skipped:
    case step_status::sent: return '-';
    case step_status::not_sent:
    case step_status::no_reply: return 'x';
  }
  return ' ';
}

std::string fault_line(const captures::fault_event& f) {
  const auto& x = f.fault;
  std::string line = (x.rule.empty() ? std::string("(unnamed rule)") : x.rule) + " (" + x.type + ") " + x.decision +
                     " at " + std::string(protocol::to_string(x.ph));
  if (!x.detail.empty()) line += ": " + x.detail;
  return line;
}

std::string stage_name(const step_result& s) {
  return s.greeting ? "banner" : s.unsolicited ? "unsolicited" : std::string(protocol::to_string(s.ph));
}

std::string xml(std::string_view s) {
  std::string out;
  for (unsigned char c : captures::utf8_safe(s)) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // XML 1.0 allows no control characters but TAB, LF and CR.
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') out += "?";
        else out += static_cast<char>(c);
    }
  }
  return out;
}

json::object reply_json(const protocol::reply& r) {
  json::array lines;
  for (const auto& l : r.lines) lines.push_back(json::value(captures::utf8_safe(l)));
  return json::object{{"code", r.code}, {"enhanced", r.enhanced}, {"lines", std::move(lines)}};
}

json::object recorded_json(const recorded_reply& r) {
  auto o = reply_json(r.reply);
  o["source"] = to_string(r.source);
  o["rule"] = captures::utf8_safe(r.rule);
  o["t_us"] = r.t_us;
  o["server_reply"] = r.server_reply ? json::value(reply_json(*r.server_reply)) : json::value(nullptr);
  return o;
}

json::array faults_json(const std::vector<captures::fault_event>& faults) {
  json::array out;
  for (const auto& f : faults)
    out.push_back(json::object{{"t_us", f.t_us},
                               {"rule", captures::utf8_safe(f.fault.rule)},
                               {"fault_type", f.fault.type},
                               {"decision", f.fault.decision},
                               {"phase", protocol::to_string(f.fault.ph)},
                               {"detail", captures::utf8_safe(f.fault.detail)}});
  return out;
}

std::string step_key(const step_result& s) {
    // The recorded reply the live one was compared with: the destination's own where the client
    // heard another (the relay's 354 to a DATA it sent the destination RSET in place of).
    const protocol::reply* recorded =
        !s.recorded ? nullptr : s.recorded->destination_reply() ? s.recorded->destination_reply() : &s.recorded->reply;
    std::string key = stage_name(s) + " " + (recorded ? std::to_string(recorded->code) : "-") + " -> " +
                      (s.live ? std::to_string(s.live->code) : std::string(to_string(s.status)));
    // Same code: name what differs ("enhanced code", "capabilities", "text").
    if (recorded && s.live && recorded->code == s.live->code && !s.differences.empty())
      key += " (" + s.differences.back().substr(0, s.differences.back().find(':')) + ")";
    return key;
}

bool differs(const step_result& s) {
  return s.status != step_status::matched && s.status != step_status::skipped && s.status != step_status::sent;
}

}  // namespace

std::map<std::string, std::size_t> count_statuses(const client_run& r) {
  std::map<std::string, std::size_t> out;
  for (auto s : {step_status::matched, step_status::diverged, step_status::skipped, step_status::not_sent,
                 step_status::no_reply, step_status::sent})
    out[std::string(to_string(s))] = 0;
  for (const auto& s : r.results) ++out[std::string(to_string(s.status))];
  return out;
}

std::string divergence_key(const client_run& r) {
  if (r.unreadable) return "unreadable";
  for (const auto& s : r.results)
    if (differs(s)) return step_key(s);
  return r.error.empty() ? "" : "error";
}

std::vector<std::string> divergence_keys(const client_run& r) {
  std::vector<std::string> out;
  for (const auto& s : r.results) {
    if (!differs(s)) continue;
    auto key = step_key(s);
    if (std::find(out.begin(), out.end(), key) == out.end()) out.push_back(std::move(key));
  }
  return out;
}

std::string render_client_text(const client_run& r) {
  std::string out = "capture   " + captures::terminal_safe(r.path) + "\n";
  // Nothing was compared: the capture could not be read, or the target not reached.
  if (r.unreadable || r.unreachable || (!r.error.empty() && r.results.empty())) {
    const char* result = r.unreachable ? "UNREACHABLE" : r.unreadable ? "UNREADABLE" : "ERROR";
    return out + "result    " + result + "\nerror     " + captures::terminal_safe(r.error) + "\n";
  }
  const auto n = count_statuses(r);
  const std::size_t skipped = n.at("skipped"), sent = n.at("sent"), compared = r.results.size() - skipped - sent;
  out += "session   " + captures::terminal_safe(r.session) + ", replayed against " + r.target + "\n";
  // A skipped step was not replayed, a sent one had no recorded reply: neither is compared.
  out += "result    " + std::string(r.diverged ? "DIVERGED" : "matched") + " (" + std::to_string(n.at("matched")) +
         " of " + std::to_string(compared) + " replies as recorded" +
         (skipped ? ", " + std::to_string(skipped) + " skipped" : std::string()) +
         (sent ? ", " + std::to_string(sent) + " sent with no recorded reply" : std::string()) + ")\n";
  if (r.incomplete)
    out += "warning   the capture has no end record (the relay stopped before writing it): the replay ends "
           "where it ends\n";
  if (!r.error.empty()) out += "error     " + captures::terminal_safe(r.error) + "\n";
  for (const auto& f : r.faults) out += "fault     " + captures::terminal_safe(fault_line(f)) + " (injected when recorded)\n";
  // The recorded and live columns are as wide as their longest cell needs ("[injected: RULE]").
  std::size_t recorded_width = 30, live_width = 16;
  for (const auto& s : r.results) {
    if (s.recorded) recorded_width = std::max(recorded_width, captures::terminal_safe(recorded_words(*s.recorded)).size() + 2);
    if (s.live) live_width = std::max(live_width, words(*s.live).size() + 2);
  }
  out += "\n  " + pad("step", 34) + pad("recorded", recorded_width) + pad("live", live_width) + "ms recorded / live\n";
  for (const auto& s : r.results) {
    std::string line(1, mark(s.status));
    line += " " + pad(clip(captures::terminal_safe(s.text), 32), 34);
    line += pad(s.recorded ? captures::terminal_safe(recorded_words(*s.recorded)) : "-", recorded_width);
    line += pad(s.live ? words(*s.live) : "-", live_width);
    if (s.live) line += ms(s.recorded_latency_us) + " / " + ms(s.live_latency_us);
    out += line + "\n";
    for (const auto& d : s.differences) out += "      " + captures::terminal_safe(d) + "\n";
    if (s.status != step_status::matched && s.recorded && s.live && !s.differences.empty()) {
      // The reply it was compared with: the destination's own, before any edit of the relay.
      const auto* against = s.recorded->destination_reply() ? s.recorded->destination_reply() : &s.recorded->reply;
      out += "      recorded: " + captures::terminal_safe(std::to_string(against->code) + " " +
                                                      (against->lines.empty() ? "" : against->lines[0])) + "\n";
      out += "      live:     " + captures::terminal_safe(std::to_string(s.live->code) + " " +
                                                      (s.live->lines.empty() ? "" : s.live->lines[0])) + "\n";
    }
    if (!s.note.empty()) out += "      " + captures::terminal_safe(s.note) + "\n";
  }
  return out;
}

std::string render_client_json(const client_run& r) {
  json::object o;
  o["capture"] = captures::utf8_safe(r.path);
  o["session"] = captures::utf8_safe(r.session);
  o["target"] = r.target;
  o["result"] = r.unreadable ? "unreadable" : r.unreachable ? "unreachable" : r.diverged ? "diverged" : "matched";
  o["error"] = captures::utf8_safe(r.error);
  o["incomplete"] = r.incomplete;
  o["seconds"] = r.seconds;
  json::array steps;
  for (const auto& s : r.results) {
    // Steps count from 1, as the text reports say "at step N" (a newcomer's trial: the JSON said 2 where the text said 3).
    json::object j{{"step", s.greeting || s.unsolicited ? json::value(nullptr) : json::value(s.step + 1)},
                   {"text", captures::utf8_safe(s.text)},
                   {"stage", stage_name(s)},
                   {"status", to_string(s.status)},
                   {"recorded", s.recorded ? json::value(recorded_json(*s.recorded)) : json::value(nullptr)},
                   {"live", s.live ? json::value(reply_json(*s.live)) : json::value(nullptr)},
                   {"recorded_latency_us", s.recorded_latency_us},
                   {"live_latency_us", s.live_latency_us},
                   {"note", captures::utf8_safe(s.note)}};
    json::array diffs;
    for (const auto& d : s.differences) diffs.push_back(json::value(captures::utf8_safe(d)));
    j["differences"] = std::move(diffs);
    steps.push_back(std::move(j));
  }
  o["steps"] = std::move(steps);
  json::object counts;
  for (const auto& [status, n] : count_statuses(r)) counts[status] = n;
  o["counts"] = std::move(counts);
  o["faults"] = faults_json(r.faults);
  return json::serialize(o);
}

std::string render_server_ready_json(const std::string& bound, const std::string& capture, std::size_t steps,
                                     bool tls_on_connect) {
  return json::serialize(json::object{{"listening", bound},
                                      {"capture", captures::utf8_safe(capture)},
                                      {"steps", steps},
                                      {"tls_on_connect", tls_on_connect}});
}

run_summary summarize(const std::vector<client_run>& runs) {
  run_summary s;
  for (const auto& r : runs) {
    if (r.unreadable) ++s.unreadable;
    else if (r.unreachable) ++s.unreachable;
    else if (r.diverged) ++s.diverged;
    else ++s.matched;
    if (!r.unreadable && !r.unreachable && r.diverged)
      for (const auto& key : divergence_keys(r)) ++s.by_divergence[key];
  }
  return s;
}

std::string render_summary_text(const run_summary& s) {
  std::string out = "replayed " + std::to_string(s.matched + s.diverged + s.unreachable + s.unreadable) +
                    " capture(s): " + std::to_string(s.matched) + " matched, " + std::to_string(s.diverged) +
                    " diverged, " + std::to_string(s.unreachable) + " unreachable, " + std::to_string(s.unreadable) +
                    " unreadable\n";
  for (const auto& [key, n] : s.by_divergence) out += "  " + pad(std::to_string(n), 6) + captures::terminal_safe(key) + "\n";
  return out;
}

std::string render_summary_json(const run_summary& s) {
  json::object by;
  for (const auto& [key, n] : s.by_divergence) by[captures::utf8_safe(key)] = n;
  return json::serialize(json::object{{"summary", json::object{{"matched", s.matched},
                                                                 {"diverged", s.diverged},
                                                                 {"unreachable", s.unreachable},
                                                                 {"unreadable", s.unreadable},
                                                                 {"by_divergence", std::move(by)}}}});
}

std::string render_junit(const std::vector<client_run>& runs) {
  double total = 0;
  std::size_t errors = 0, failures = 0;
  for (const auto& r : runs) {
    total += r.seconds;
    const bool error = r.unreadable || r.unreachable;
    errors += error ? 1 : 0;
    failures += !error && r.diverged ? 1 : 0;
  }
  char t[32];
  std::snprintf(t, sizeof t, "%.3f", total);
  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n";
  out += "  <testsuite name=\"mailtap replay\" tests=\"" + std::to_string(runs.size()) + "\" failures=\"" +
         std::to_string(failures) + "\" errors=\"" + std::to_string(errors) +
         "\" time=\"" + t + "\">\n";
  for (const auto& r : runs) {
    std::snprintf(t, sizeof t, "%.3f", r.seconds);
    out += "    <testcase classname=\"mailtap.replay\" name=\"" + xml(r.session.empty() ? r.path : r.session) +
           "\" file=\"" + xml(r.path) + "\" time=\"" + t + "\"";
    const bool error = r.unreadable || r.unreachable;
    if (error) {
      out += ">\n      <error message=\"" + xml(r.error) + "\"/>\n    </testcase>\n";
    } else if (r.diverged) {
      out += ">\n      <failure message=\"" + xml("diverged at " + divergence_key(r)) + "\">" +
             xml(render_client_text(r)) + "</failure>\n    </testcase>\n";
    } else {
      out += "/>\n";
    }
  }
  out += "  </testsuite>\n</testsuites>\n";
  return out;
}

std::string render_server_text(const server_session& s) {
  std::string out = "session from " + s.client + ": ";
  out += s.divergences.empty() ? "followed the recording" : "DIVERGED";
  // A live client can go on past the recording (its QUIT answered 221, anything else 421).
  const std::size_t within = std::min(s.played.size(), s.recorded_steps);
  out += " (" + std::to_string(within) + " of " + std::to_string(s.recorded_steps) + " recorded steps";
  if (s.played.size() > within) out += ", " + std::to_string(s.played.size() - within) + " beyond the recording";
  out += ")\n";
  for (const auto& p : s.played) {
    out += "  " + pad(clip(captures::terminal_safe(p.live), 40), 42) +
           (p.code ? std::to_string(p.code) : std::string("(no reply: the recording ends)")) +
           (p.sent ? " after " + ms(p.delay_us) + " ms" : " not sent: the session ended before it was due");
    if (p.source == reply_source::injected) out += " [injected" + (p.rule.empty() ? "" : ": " + p.rule) + "]";
    else if (p.source == reply_source::relay) out += " [relay]";
    if (!p.delay_rule.empty()) out += " [delay injected: " + captures::terminal_safe(p.delay_rule) + "]";
    out += "\n";
  }
  for (const auto& d : s.divergences) {
    out += "  ! " + std::string(to_string(d.kind)) + " at step " + std::to_string(d.step + 1) + ": recorded " +
           (d.recorded.empty() ? std::string("nothing") : captures::terminal_safe(d.recorded)) + ", live " +
           captures::terminal_safe(d.live) + "\n";
  }
  for (const auto& d : s.noted) {
    out += "  ~ " + std::string(to_string(d.kind)) + " at step " + std::to_string(d.step + 1) + ": recorded " +
           captures::terminal_safe(d.recorded) + ", live " + captures::terminal_safe(d.live) +
           (d.kind == divergence::what::client_name ? " (noted, not a divergence: --compare-client-name counts it)\n"
                                                    : " (noted, not a divergence: --compare-message counts it)\n");
  }
  return out;
}

std::string render_server_json(const server_session& s) {
  json::array played, divergences, noted;
  for (const auto& p : s.played)
    played.push_back(json::object{{"step", p.step + 1},
                                  {"live", captures::utf8_safe(p.live)},
                                  {"code", p.code},
                                  {"source", to_string(p.source)},
                                  {"rule", captures::utf8_safe(p.rule)},
                                  {"received_us", p.received_us},
                                  {"delay_us", p.delay_us},
                                  {"delay_rule", captures::utf8_safe(p.delay_rule)},
                                  {"sent", p.sent}});
  auto divergence_json = [](const divergence& d) {
    return json::object{{"kind", to_string(d.kind)},
                        {"step", d.step + 1},
                        {"t_us", d.t_us},
                        {"recorded", captures::utf8_safe(d.recorded)},
                        {"live", captures::utf8_safe(d.live)}};
  };
  for (const auto& d : s.divergences) divergences.push_back(divergence_json(d));
  for (const auto& d : s.noted) noted.push_back(divergence_json(d));
  return json::serialize(json::object{{"capture", captures::utf8_safe(s.capture)},
                                      {"client", s.client},
                                      {"result", s.divergences.empty() ? "followed" : "diverged"},
                                      {"recorded_steps", s.recorded_steps},
                                      {"played", std::move(played)},
                                      {"divergences", std::move(divergences)},
                                      {"noted", std::move(noted)}});
}

}  // namespace mailtap::replay
