// What `mailtap replay` prints: for a client replay, one capture's diff (text: a line per
// step, recorded reply beside the live one, the latencies, and how they differ; or one JSON
// document), the summary of a run over many captures (matched, diverged by stage and code),
// and JUnit XML for CI systems; for a server replay, each live session's report. A recorded
// reply made by a fault rule is shown as injected, naming the rule. Pure; thread-safe. Wire
// text is made terminal-safe or valid UTF-8 as `mailtap show` does (captures/show.hpp).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "replay/client_fsm.hpp"
#include "replay/script.hpp"
#include "replay/server_fsm.hpp"

namespace mailtap::replay {

// One capture's client replay.
struct client_run {
  std::string path;                  // the capture file
  std::string session;
  std::string target;                // HOST:PORT
  std::string error;                 // unreadable capture or connection failure: one line
  bool unreadable = false;           // the capture could not be read (exit 2)
  bool unreachable = false;          // the target could not be reached (every step unsent)
  std::vector<step_result> results;  // the greeting first
  std::vector<captures::fault_event> faults;
  bool diverged = false;
  bool incomplete = false;           // the capture has no end record
  double seconds = 0;
};

// The greeting and steps of a run by status ("matched", "diverged", "skipped", "not_sent",
// "no_reply", "sent"; each present, 0 when none). A skipped step was not replayed and a sent
// one had no recorded reply: neither is matched.
std::map<std::string, std::size_t> count_statuses(const client_run& r);

std::string render_client_text(const client_run& r);
std::string render_client_json(const client_run& r);   // one object, no newline

// The first divergence as "rcpt 550 -> 250" (stage, recorded code, live code or what
// happened instead; with equal codes, what differs: "ehlo 250 -> 250 (capabilities)").
std::string divergence_key(const client_run& r);
// Every divergence of a run, each key once.
std::vector<std::string> divergence_keys(const client_run& r);

struct run_summary {
  // Each capture counts in one: an unreachable target is neither a match nor a divergence.
  std::size_t matched = 0, diverged = 0, unreachable = 0, unreadable = 0;
  std::map<std::string, std::size_t> by_divergence;   // a divergence key -> captures that have it
};
run_summary summarize(const std::vector<client_run>& runs);
std::string render_summary_text(const run_summary& s);
std::string render_summary_json(const run_summary& s);

// JUnit XML (the Ant schema CI systems read): one testsuite, one testcase per capture; a
// diverged replay is a <failure>, an unreadable capture or unreachable server an <error>.
std::string render_junit(const std::vector<client_run>& runs);

// One live session of a server replay.
struct server_session {
  std::string capture;
  std::string client;                // ip:port of the live client
  std::vector<played_step> played;
  std::vector<divergence> divergences;
  std::size_t recorded_steps = 0;
  std::vector<divergence> noted;     // reported, not counted (a message or a client name, without --compare-*)
};
// The server's ready line under --json, so that stdout is JSON documents only:
// {"listening": "ADDR:PORT", "capture": PATH, "steps": N}.
// `tls_on_connect`: the port speaks TLS from connect (an SMTPS recording, or --tls-on-connect yes).
std::string render_server_ready_json(const std::string& bound, const std::string& capture, std::size_t steps,
                                     bool tls_on_connect);
std::string render_server_text(const server_session& s);
std::string render_server_json(const server_session& s);   // one object, no newline

}  // namespace mailtap::replay
