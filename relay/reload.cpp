// The SIGHUP reload: build the configuration again, check it, swap the rules, report.
#include "relay/reload.hpp"

#include <spdlog/spdlog.h>

#include "relay/notify.hpp"

namespace mailtap {

namespace {

std::string optional_endpoint(const std::optional<endpoint>& e) { return e ? e->to_string() : "none"; }

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

std::vector<std::string> restart_only_changes(const config& a, const config& b) {
  // Every setting of relay/config.hpp but faults, scenarios and log_level: the listeners, the
  // I/O threads, the capture store and the TLS contexts are built once at start, and sessions
  // read the rest from the configuration the relay started with.
  const auto& ta = a.tls;
  const auto& tb = b.tls;
  const auto& ma = a.timeouts;
  const auto& mb = b.timeouts;
  const std::pair<const char*, bool> settings[] = {
      {"listen", a.listen.to_string() != b.listen.to_string()},
      {"upstream", optional_endpoint(a.upstream) != optional_endpoint(b.upstream)},
      {"admin", a.admin.to_string() != b.admin.to_string() || a.admin_off != b.admin_off},
      {"admin_token", a.admin_token != b.admin_token},
      {"admin_hosts", a.admin_hosts != b.admin_hosts},
      {"captures", a.captures_dir != b.captures_dir},
      {"captures.fsync", a.captures_fsync != b.captures_fsync},
      {"captures.max_age", a.captures_max_age != b.captures_max_age},
      {"captures.max_bytes", a.captures_max_bytes != b.captures_max_bytes},
      {"seed", a.seed != b.seed},
      {"first_session", a.first_session != b.first_session},
      {"max_sessions", a.max_sessions != b.max_sessions},
      {"threads", a.threads != b.threads},
      {"busy_poll_us", a.busy_poll != b.busy_poll},
      {"data.bare_line_endings", a.bare_eol != b.bare_eol},
      {"timeouts.client_idle", ma.client_idle != mb.client_idle},
      {"timeouts.client_command", ma.client_command != mb.client_command},
      {"timeouts.min_data_rate", ma.min_data_rate != mb.min_data_rate},
      {"timeouts.upstream_greeting", ma.upstream_greeting != mb.upstream_greeting},
      {"timeouts.upstream_reply", ma.upstream_reply != mb.upstream_reply},
      {"timeouts.upstream_data_init", ma.upstream_data_init != mb.upstream_data_init},
      {"timeouts.upstream_data_end", ma.upstream_data_end != mb.upstream_data_end},
      {"timeouts.upstream_data_block", ma.upstream_data_block != mb.upstream_data_block},
      {"timeouts.upstream_connect", a.upstream_connect_timeout != b.upstream_connect_timeout},
      {"timeouts.drain", a.drain_timeout != b.drain_timeout},
      {"relay_name", a.relay_name != b.relay_name},
      {"record_auth_username", a.record_auth_username != b.record_auth_username},
      {"upstream_identity", a.identity != b.identity},
      {"listen_proxy_protocol", a.listen_proxy_protocol != b.listen_proxy_protocol},
      {"transparent", a.transparent != b.transparent},
      {"tls.cert", ta.cert_file != tb.cert_file},
      {"tls.key", ta.key_file != tb.key_file},
      {"tls.ca_file", ta.ca_file != tb.ca_file},
      {"tls.state_dir", ta.state_dir != tb.state_dir},
      {"tls.listen", optional_endpoint(ta.listen) != optional_endpoint(tb.listen)},
      {"tls.starttls", ta.offer_starttls != tb.offer_starttls},
      {"tls.upstream", ta.upstream != tb.upstream},
      {"tls.upstream_implicit", ta.upstream_implicit != tb.upstream_implicit},
      {"tls.verify_upstream", effective_upstream_verify(ta) != effective_upstream_verify(tb)},
      {"tls.upstream_fingerprint", ta.upstream_fingerprint != tb.upstream_fingerprint},
      {"tls.handshake_timeout", ta.handshake_timeout != tb.handshake_timeout},
      {"sink.auth_user", a.sink.auth_user != b.sink.auth_user},
      {"sink.auth_password", a.sink.auth_password != b.sink.auth_password},
  };
  std::vector<std::string> changed;
  for (const auto& [name, differs] : settings)
    if (differs) changed.emplace_back(name);
  return changed;
}

reloader::reloader(config_source source, const config& running, policies::engine& faults, relay_metrics& metrics)
    : source_(std::move(source)),
      running_(running),
      faults_(faults),
      metrics_(metrics),
      log_level_(running.log_level),
      rules_armed_(running.faults.size()) {}

bool reloader::reload() {
  notify::reloading();
  spdlog::info("SIGHUP: reloading the configuration and scenarios");
  std::string error;
  auto fresh = source_(error);
  // The counts of the rules a successful reload replaces, for the log (the shutdown summary
  // lists every rule that injected since start).
  const auto outgoing = faults_.counters();
  std::vector<std::string> api_rules_removed;   // armed over the admin API: the files' rules replace them
  if (fresh) {
    if (auto problem = faults_.replace_all(fresh->faults, &api_rules_removed)) {
      error = "faults: " + *problem;
      fresh.reset();
    }
  }
  if (!fresh) {
    ++metrics_.reloads_failed;
    last_failure_ = error;
    spdlog::error("reload failed, the running rules stay: {}", error);
    notify::ready(status());
    return false;
  }
  ++metrics_.reloads_ok;
  last_failure_.clear();
  for (const auto& c : outgoing)
    spdlog::info("replaced: faults_injected{{rule=\"{}\",type=\"{}\"}} {}", c.rule, c.type, c.count);
  rules_armed_ = fresh->faults.size();
  if (!api_rules_removed.empty()) {
    metrics_.reload_removed_api_rules += api_rules_removed.size();
    spdlog::warn("reload: removed {} fault rule(s) armed over the admin API: {} (a reload arms the files' rules "
                 "only; add them again over the API)",
                 api_rules_removed.size(), join(api_rules_removed));
  }
  if (fresh->log_level != log_level_) {
    log_level_ = fresh->log_level;
    spdlog::set_level(spdlog::level::from_str(log_level_));
  }
  needs_restart_ = restart_only_changes(running_, *fresh);
  if (!needs_restart_.empty())
    spdlog::warn("reload: {} changed: needs restart (the running values stay until then)", join(needs_restart_));
  spdlog::info("reloaded: {} fault rule(s) armed for new sessions; sessions in flight keep theirs", rules_armed_);
  notify::ready(status());
  return true;
}

std::string reloader::status() const {
  std::string s = listening_.empty() ? "" : listening_ + "; ";
  s += std::to_string(rules_armed_) + " fault rule(s) armed; reloads: " + std::to_string(metrics_.reloads_ok.load()) +
       " ok, " + std::to_string(metrics_.reloads_failed.load()) + " failed";
  if (!needs_restart_.empty()) s += "; needs restart: " + join(needs_restart_);
  if (!last_failure_.empty()) s += "; last reload failed: " + last_failure_;
  return s;
}

}  // namespace mailtap
