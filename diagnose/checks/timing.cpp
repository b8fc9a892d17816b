// Time: an end-of-data reply held long (content scanning), a slow destination (a late
// greeting, slow replies), single stages far slower than the session's others, and long
// pauses of the sender. Thresholds are named below with their reasons; a delay fault in the
// capture names the rule that caused it.
#include <algorithm>
#include <cstdint>

#include "diagnose/checks.hpp"
#include "diagnose/end_of_data.hpp"
#include "diagnose/modes.hpp"
#include "protocol/command.hpp"

namespace mailtap::diagnose {

namespace {

using protocol::phase;

// An end-of-data reply slower than this (and than slow_factor x the session's typical reply)
// is held by the destination: scanners hold 5-15 minutes in the field, mailtap's scenario 3 s.
constexpr std::uint64_t held_end_of_data_us = 2'000'000;
// A greeting later than this, or a typical (median) command reply slower than
// slow_reply_us: a loaded destination or slow lookups. Healthy MTAs greet and answer in
// milliseconds on a LAN and in tens of milliseconds across the Internet.
constexpr std::uint64_t slow_greeting_us = 500'000;
constexpr std::uint64_t slow_reply_us = 200'000;
// A stage this much slower than the session's median stage, and at least stage_outlier_us.
constexpr std::uint64_t slow_factor = 10;
constexpr std::uint64_t stage_outlier_us = 1'000'000;
// A sender pause before a stage longer than this (RFC 5321 4.5.3.2.7: servers wait at least
// 5 minutes for a command, so a long pause is legal, but worth seeing).
constexpr std::uint64_t long_gap_us = 10'000'000;

bool command_reply_stage(phase ph) {
  return ph == phase::ehlo || ph == phase::helo || ph == phase::mail || ph == phase::rcpt || ph == phase::data ||
         ph == phase::rset || ph == phase::noop;
}

std::uint64_t median(std::vector<std::uint64_t> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

evidence_item stage_evidence(const captures::stage& s) {
  return {s.start_us, "stage",
          std::string(protocol::to_string(s.ph)) + " stage: " + duration_text(s.duration_us) + " (upstream " +
              duration_text(s.upstream_us) + ", relay " + duration_text(s.relay_us) + ")"};
}

bool delay_at(const protocol::fault_event& f, phase ph) { return f.decision == "delay" && f.ph == ph; }

// The span of time a stage covers, its ends included: a delay that held something in it has
// its record there (written as the hold ends, protocol/fault_holds.cpp).
struct time_window {
  std::uint64_t from_us = 0;
  std::uint64_t to_us = UINT64_MAX;
  bool holds(std::uint64_t t_us) const { return t_us >= from_us && t_us <= to_us; }
};

// Cites the delay faults at `phases` (recorded within `when`) and marks the finding injected by
// the first.
void cite_delays(const conversation& c, finding& f, std::initializer_list<phase> phases, time_window when = {}) {
  for (const auto* e : c.timeline)
    if (const auto* fe = std::get_if<captures::fault_event>(e); fe && when.holds(fe->t_us))
      for (phase ph : phases)
        if (delay_at(fe->fault, ph)) {
          std::string rule = f.rule;
          mark_injected(f, *fe);
          if (!rule.empty()) f.rule = rule;   // the first rule names it
        }
}

// A stage's own time, of the reply it waited for: from its command, or from the reply before it
// when it was pipelined behind that reply (RFC 2920: replies go out in command order, so each
// stage of a pipelined group waits for the ones before; counting that wait in each counted one
// slow reply as many), and of that the part a delay rule held it (its record's actual delay,
// the rule's time, not the destination's).
struct stage_time {
  std::uint64_t seen_us = 0;   // its own time, the pipelined wait before it left out
  std::uint64_t held_us = 0;   // of seen_us, the part a delay rule held it
  std::uint64_t destination_us() const { return seen_us - held_us; }
};

// Stages that wait for a reply in the client's conversation (a body and a TLS handshake do not).
bool answered_stage(phase ph) { return ph != phase::body && ph != phase::tls && ph != phase::connect; }

std::uint64_t stage_end(const captures::stage& s) { return s.start_us + s.duration_us; }

std::vector<stage_time> stage_times(const conversation& c) {
  const auto& stages = c.cap->stages;
  std::vector<stage_time> out(stages.size());
  // Stages by the time their replies went out (their order in the capture among equals).
  std::vector<std::size_t> by_end;
  for (std::size_t i = 0; i < stages.size(); ++i)
    if (answered_stage(stages[i].ph)) by_end.push_back(i);
  std::stable_sort(by_end.begin(), by_end.end(),
                   [&](std::size_t a, std::size_t b) { return stage_end(stages[a]) < stage_end(stages[b]); });
  std::vector<std::uint64_t> from(stages.size());
  std::uint64_t previous_end = 0;
  for (std::size_t i = 0; i < stages.size(); ++i) from[i] = stages[i].start_us;
  for (std::size_t i : by_end) {
    from[i] = std::max(stages[i].start_us, std::min(previous_end, stage_end(stages[i])));
    previous_end = std::max(previous_end, stage_end(stages[i]));
  }
  for (std::size_t i = 0; i < stages.size(); ++i) out[i].seen_us = stage_end(stages[i]) - from[i];
  // Each delay rule's hold, [its record's time - its actual delay, its record's time], within the
  // own time of the first stage of its phase that ends at or after its record (the record is
  // written as the hold ends, before the reply it released goes out).
  // (Looked up by phase and end, not by a scan of the stages per record: a hostile capture holds
  // tens of thousands of each.)
  std::vector<std::size_t> by_phase_end(stages.size());
  for (std::size_t i = 0; i < stages.size(); ++i) by_phase_end[i] = i;
  const auto key = [&](std::size_t i) { return std::pair{static_cast<int>(stages[i].ph), stage_end(stages[i])}; };
  std::stable_sort(by_phase_end.begin(), by_phase_end.end(), [&](std::size_t a, std::size_t b) { return key(a) < key(b); });
  for (const auto* e : c.timeline) {
    const auto* fe = std::get_if<captures::fault_event>(e);
    if (!fe || fe->fault.decision != "delay" || fe->fault.actual_delay_us == 0) continue;
    const std::pair wanted{static_cast<int>(fe->fault.ph), fe->t_us};
    auto it = std::lower_bound(by_phase_end.begin(), by_phase_end.end(), wanted,
                               [&](std::size_t i, const std::pair<int, std::uint64_t>& w) { return key(i) < w; });
    if (it == by_phase_end.end() || stages[*it].ph != fe->fault.ph || stages[*it].start_us > fe->t_us) continue;
    const std::size_t best = *it;
    const std::uint64_t hold_from = fe->t_us - std::min(fe->t_us, fe->fault.actual_delay_us);
    const std::uint64_t lo = std::max(hold_from, from[best]), hi = std::min(fe->t_us, stage_end(stages[best]));
    if (hi > lo) out[best].held_us = std::min(out[best].seen_us, out[best].held_us + (hi - lo));
  }
  return out;
}

// The wait for one end-of-data reply: a data_end stage (the dot to the reply reaching the
// client), or the bdat stage of a last chunk (RFC 3030 2: it ends the message as the dot does),
// from the chunk's last byte in, since that stage began with the command, before its chunk.
struct end_of_data_wait {
  const captures::stage* s = nullptr;
  std::uint64_t held_us = 0;       // until the reply reached the client
  std::uint64_t upstream_us = 0;   // the destination's part of it
};

// The bdat stage of `cmd`: stages are recorded as their replies go out, in command order, so the
// k-th bdat stage that began with it is the k-th BDAT the client sent at that time.
const captures::stage* stage_of_chunk(const conversation& c, const captures::command_event& cmd) {
  std::size_t k = 0;
  for (const auto* e : c.timeline) {
    const auto* other = std::get_if<captures::command_event>(e);
    if (other == &cmd) break;
    if (other && other->t_us == cmd.t_us && other->leg == protocol::leg::client &&
        protocol::parse_command(other->text).cmd.ph == phase::bdat)
      ++k;
  }
  const captures::stage* found = nullptr;   // or the last, should a stage be missing
  for (const auto& s : c.cap->stages)
    if (s.ph == phase::bdat && s.start_us == cmd.t_us) {
      found = &s;
      if (k-- == 0) break;
    }
  return found;
}

std::vector<end_of_data_wait> end_of_data_waits(const conversation& c) {
  std::vector<end_of_data_wait> out;
  for (const auto& s : c.cap->stages)
    if (s.ph == phase::data_end) out.push_back({&s, s.duration_us, s.upstream_us});
  for (const auto& x : c.exchanges) {
    const captures::command_event* last = last_chunk_of(x);
    const captures::stage* s = last && !x.edit ? stage_of_chunk(c, *last) : nullptr;
    if (!s) continue;
    std::uint64_t in_us = last->t_us;   // the chunk's last byte: the client's last bytes before the reply
    for (const auto* e : c.timeline)
      if (const auto* b = std::get_if<captures::bytes_event>(e);
          b && b->leg == protocol::leg::client && b->dir == protocol::direction::in && b->t_us >= in_us &&
          b->t_us <= x.reply->t_us)
        in_us = b->t_us;
    const std::uint64_t end_us = s->start_us + s->duration_us;
    const std::uint64_t answered_us = x.source == origin::server ? std::min(x.reply->t_us, end_us) : in_us;
    out.push_back({s, end_us > in_us ? end_us - in_us : 0, answered_us > in_us ? answered_us - in_us : 0});
  }
  return out;
}

void held_end_of_data(const conversation& c, std::uint64_t typical, std::vector<finding>& out) {
  for (const auto& w : end_of_data_waits(c)) {
    const captures::stage& s = *w.s;
    if (w.held_us < held_end_of_data_us || w.held_us < slow_factor * typical) continue;
    // A delay rule of this end of data, not of another message's in the session.
    const time_window this_wait{s.start_us, s.start_us + s.duration_us};
    bool injected = std::any_of(c.timeline.begin(), c.timeline.end(), [&](const captures::event* e) {
      const auto* fe = std::get_if<captures::fault_event>(e);
      return fe && this_wait.holds(fe->t_us) && delay_at(fe->fault, phase::data_end);
    });
    // The end a delay held never went (the destination answered, said 421 or was lost first:
    // protocol/fault_holds.cpp drop_held_dot): no reply to an end of data was delayed, and no
    // duplicate can follow; what ended it is reported on its own (checks/replies.cpp).
    const bool never_forwarded = std::any_of(c.timeline.begin(), c.timeline.end(), [&](const captures::event* e) {
      const auto* fe = std::get_if<captures::fault_event>(e);
      return fe && this_wait.holds(fe->t_us) && protocol::held_end_never_forwarded(fe->fault);
    });
    if (never_forwarded) continue;
    // Held by the destination (its wait) or by a delay fault; a withheld dot is the relay's own wait.
    if (w.upstream_us < held_end_of_data_us && !injected) continue;
    // The destination did answer: a reply the relay made when none came (its timeout, a lost
    // connection) is the timeout's or the loss's finding, not a scanner's hold (a newcomer's
    // trial: a silent destination was said to scan its content).
    const auto answers_here = [&](const exchange& x) {
      return answers_end_of_data(x) && x.reply->t_us >= s.start_us && x.reply->t_us <= s.start_us + s.duration_us;
    };
    const bool destination_answered = std::any_of(c.exchanges.begin(), c.exchanges.end(), [&](const exchange& x) {
      return answers_here(x) && x.source != origin::relay;
    });
    if (!destination_answered && !injected) continue;
    const mode_text& m = mode("content_scan_delay");
    finding f;
    f.id = std::string(m.id);
    f.level = severity::warning;
    f.stage = "data_end";
    f.title = std::string(m.title) + ": " + duration_text(w.held_us);
    f.explanation = "The reply to the end of data took " + duration_text(w.held_us) + ", against a typical " +
                    duration_text(typical) + " for the other replies. " + std::string(m.explanation);
    f.action = std::string(m.action);
    f.source = origin::server;
    f.evidence.push_back(stage_evidence(s));
    for (const auto& x : c.exchanges)
      if (answers_here(x)) f.evidence.push_back(evidence_of(*x.reply));
    if (injected) cite_delays(c, f, {phase::data_end}, this_wait);
    merge_finding(out, std::move(f));
  }
}

// `typical` is the session's typical reply as the client waited for it; `typical_destination`,
// that reply without the time delay rules held it.
void slow_destination(const conversation& c, const std::vector<stage_time>& times, std::uint64_t typical,
                      std::uint64_t typical_destination, std::vector<finding>& out) {
  const captures::stage* banner = nullptr;
  for (const auto& s : c.cap->stages)
    if (s.ph == phase::banner) banner = &s;
  bool slow_banner = banner && banner->duration_us >= slow_greeting_us;
  bool slow_replies = typical >= slow_reply_us;
  if (!slow_banner && !slow_replies) return;
  const mode_text& m = mode("slow_destination");
  finding f;
  f.id = std::string(m.id);
  f.level = severity::warning;
  f.stage = slow_banner ? "banner" : "session";
  f.title = std::string(m.title);
  std::string seen;
  if (slow_banner) seen = "the greeting came after " + duration_text(banner->duration_us);
  if (slow_replies) {
    seen += (seen.empty() ? "" : "; ") + std::string("a typical reply took ") + duration_text(typical);
    if (typical_destination != typical)
      seen += ", " + duration_text(typical_destination) + " of it the destination's (a delay rule held the rest)";
  }
  f.explanation = "Seen here: " + seen + ". " + std::string(m.explanation);
  f.action = std::string(m.action);
  f.source = origin::server;
  if (slow_banner) f.evidence.push_back(stage_evidence(*banner));
  for (std::size_t i = 0; i < c.cap->stages.size(); ++i) {
    const auto& s = c.cap->stages[i];
    if (slow_replies && command_reply_stage(s.ph) && times[i].seen_us >= slow_reply_us) f.evidence.push_back(stage_evidence(s));
  }
  std::stable_sort(f.evidence.begin(), f.evidence.end(), [](const evidence_item& a, const evidence_item& b) { return a.t_us < b.t_us; });
  if (slow_banner) cite_delays(c, f, {phase::banner});
  // The rules that held the replies, when they made the typical one slower.
  if (slow_replies && typical_destination != typical)
    cite_delays(c, f, {phase::ehlo, phase::helo, phase::mail, phase::rcpt, phase::data});
  merge_finding(out, std::move(f));
}

// A stage is an outlier by the destination's own time in it (stage_time): a reply a delay rule
// held is the rule's (checks/faults.cpp lists the rule), and a stage pipelined behind a slow
// reply only waited for it.
void outliers_and_gaps(const conversation& c, const std::vector<stage_time>& times, std::uint64_t typical,
                       std::vector<finding>& out) {
  for (std::size_t i = 0; i < c.cap->stages.size(); ++i) {
    const auto& s = c.cap->stages[i];
    const std::uint64_t own = times[i].destination_us();
    if (command_reply_stage(s.ph) && own >= stage_outlier_us && own >= slow_factor * typical) {
      finding f;
      f.id = "stage_outlier";
      f.level = severity::info;
      f.stage = std::string(protocol::to_string(s.ph));
      f.title = f.stage + " took " + duration_text(own) + ", " + std::to_string(own / std::max<std::uint64_t>(typical, 1)) + "x the typical reply";
      f.explanation = "One step was much slower than the rest of the session: a lookup, a policy check or a "
                      "delay at the destination (upstream " + duration_text(s.upstream_us) + ") or on the path.";
      f.action = "Compare with other captures of the same destination; look at the destination's lookups for this stage.";
      f.source = s.upstream_us * 2 >= s.duration_us ? origin::server : origin::relay;
      f.evidence.push_back(stage_evidence(s));
      merge_finding(out, std::move(f));
    }
    if (s.think_us >= long_gap_us) {
      finding f;
      f.id = "long_gap";
      f.level = severity::info;
      f.stage = std::string(protocol::to_string(s.ph));
      f.title = "the sender paused " + duration_text(s.think_us) + " before " + f.stage;
      f.explanation = "The client waited before its next command. Servers wait at least 5 minutes (RFC 5321 "
                      "4.5.3.2.7), so this is legal, but it holds a connection and can meet a shorter server timeout.";
      f.action = "Look at the sending application between these commands (its own lookups, a slow message build).";
      f.source = origin::client;
      f.evidence.push_back({s.start_us - std::min(s.think_us, s.start_us), "stage", "pause " + duration_text(s.think_us)});
      f.evidence.push_back(stage_evidence(s));
      merge_finding(out, std::move(f));
    }
  }
}

}  // namespace

void check_timing(const conversation& c, std::vector<finding>& out) {
  // The typical reply, as the client waited for it and as the destination took it: each stage's
  // own time (stage_times), a pipelined one's from the reply before it; without and with the
  // time delay rules held them.
  const std::vector<stage_time> times = stage_times(c);
  std::vector<std::uint64_t> replies, destination;
  for (std::size_t i = 0; i < c.cap->stages.size(); ++i)
    if (command_reply_stage(c.cap->stages[i].ph)) {
      replies.push_back(times[i].seen_us);
      destination.push_back(times[i].destination_us());
    }
  const std::uint64_t typical = median(replies), typical_destination = median(destination);
  held_end_of_data(c, typical, out);
  slow_destination(c, times, typical, typical_destination, out);
  outliers_and_gaps(c, times, typical_destination, out);
}

}  // namespace mailtap::diagnose
