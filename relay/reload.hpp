// SIGHUP: re-read the configuration and the scenario files the relay started with, validate
// them, and swap the fault rules (policies::engine::replace_all). A bad file keeps the rules in
// force and logs one line naming FILE:LINE; sessions already open keep the rules they started
// with; settings a running relay cannot change (listen address, threads, TLS files...) are
// reported as "needs restart" and keep their running values. The log level is applied.
// Every reload is counted (relay_metrics::reloads_ok / reloads_failed) and ends with READY=1
// and a STATUS= line for the service manager (relay/notify.hpp).
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "policies/engine.hpp"
#include "relay/config.hpp"
#include "relay/metrics.hpp"

namespace mailtap {

// The settings of `fresh` that differ from `running` and only a restart can apply, by their
// names in the config file ("listen", "tls.cert", "timeouts.client_idle", ...). The fault
// rules, the scenario list and log_level are not among them: a reload applies those.
std::vector<std::string> restart_only_changes(const config& running, const config& fresh);

class reloader {
 public:
  // Builds the configuration the way `mailtap run` did at start (the --config file, then the
  // flags and --scenario files); std::nullopt and a one-line error naming FILE:LINE otherwise.
  using config_source = std::function<std::optional<config>(std::string& error)>;

  // `running` and `faults` are the relay's; they must outlive the reloader.
  reloader(config_source source, const config& running, policies::engine& faults, relay_metrics& metrics);

  // One reload (the SIGHUP handler). True when the new rules are in force.
  bool reload();
  // "listening on ...; N fault rule(s) armed; reloads: A ok, B failed[; needs restart: ...]
  // [; last reload failed: FILE:LINE: ...]", the STATUS= line systemctl status shows.
  std::string status() const;
  // The first part of status(), set once the listeners are bound.
  void set_listening(std::string text) { listening_ = std::move(text); }

 private:
  config_source source_;
  const config& running_;
  policies::engine& faults_;
  relay_metrics& metrics_;
  std::string listening_;
  std::string log_level_;
  std::size_t rules_armed_;
  std::vector<std::string> needs_restart_;   // from the last successful reload
  std::string last_failure_;                 // the error of the last reload, if it failed
};

}  // namespace mailtap
