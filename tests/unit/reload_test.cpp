// relay/reload: which settings a SIGHUP reload applies and which it reports as "needs restart";
// and the packaged default config (packaging/mailtap.toml) loads with the values
// packaging/README.md promises.
#include "relay/reload.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#ifndef MAILTAP_SOURCE_DIR
#error "MAILTAP_SOURCE_DIR must be defined"
#endif

namespace {

using mailtap::config;
using mailtap::restart_only_changes;
using strings = std::vector<std::string>;

TEST(Reload, NothingChangedNeedsNoRestart) { EXPECT_EQ(restart_only_changes(config{}, config{}), strings{}); }

TEST(Reload, RulesScenariosAndLogLevelNeedNoRestart) {
  config fresh;
  fresh.faults.emplace_back();
  fresh.faults.back().name = "new";
  fresh.scenarios.emplace_back("/etc/mailtap/extra.toml");
  fresh.log_level = "debug";
  EXPECT_EQ(restart_only_changes(config{}, fresh), strings{});
}

TEST(Reload, ListenersThreadsTimeoutsAndTlsNeedARestart) {
  config fresh;
  fresh.listen.port = 25;
  fresh.threads = 4;
  fresh.busy_poll = std::chrono::microseconds(0);
  fresh.timeouts.client_idle = std::chrono::milliseconds(1000);
  fresh.tls.cert_file = "/etc/mailtap/cert.pem";
  fresh.tls.listen = mailtap::endpoint{"127.0.0.1", 465};
  fresh.upstream = mailtap::endpoint{"192.0.2.1", 25};
  EXPECT_EQ(restart_only_changes(config{}, fresh),
            (strings{"listen", "upstream", "threads", "busy_poll_us", "timeouts.client_idle", "tls.cert", "tls.listen"}));
}

// A fifth trial: max_bytes and fsync added under [captures] and SIGHUP logged nothing about
// them, and the running store kept its retention.
TEST(Reload, CaptureRetentionAndFsyncNeedARestart) {
  config fresh;
  fresh.captures_fsync = true;
  fresh.captures_max_age = std::chrono::seconds(3600);
  fresh.captures_max_bytes = 2'000'000;
  EXPECT_EQ(restart_only_changes(config{}, fresh), (strings{"captures.fsync", "captures.max_age", "captures.max_bytes"}));
}

TEST(Reload, AdminTokenAndHostsNeedARestart) {
  config fresh;
  fresh.admin_token = "0123456789abcdef";
  EXPECT_EQ(restart_only_changes(config{}, fresh), strings{"admin_token"});
  fresh.admin_hosts = {"mailtap.example"};
  EXPECT_EQ(restart_only_changes(config{}, fresh), (strings{"admin_token", "admin_hosts"}));
}

TEST(Reload, ClientIdentitySettingsNeedARestart) {
  config fresh;
  fresh.identity = mailtap::upstream_identity::proxy_v2;
  fresh.listen_proxy_protocol = true;
  EXPECT_EQ(restart_only_changes(config{}, fresh), (strings{"upstream_identity", "listen_proxy_protocol"}));
}

TEST(Reload, TransparentInterceptionNeedsARestart) {
  config fresh;
  fresh.transparent = true;
  EXPECT_EQ(restart_only_changes(config{}, fresh), strings{"transparent"});
}

TEST(Reload, VerificationComparesWhatIsInForce) {
  // Unset verify_upstream means `record` unless upstream TLS is required: the same in force.
  config fresh;
  fresh.tls.verify_upstream = mailtap::upstream_verify::record;
  EXPECT_EQ(restart_only_changes(config{}, fresh), strings{});
  fresh.tls.verify_upstream = mailtap::upstream_verify::require;
  EXPECT_EQ(restart_only_changes(config{}, fresh), strings{"tls.verify_upstream"});
}

// A reload arms the files' rules only: those added over the admin API are removed, and counted
// (a newcomer's trial: they went silently).
TEST(Reload, CountsTheRulesAddedAtRuntimeThatItRemoves) {
  config running;
  mailtap::policies::rule from_file;
  from_file.name = "from-file";
  from_file.params = mailtap::policies::reply_params{mailtap::protocol::reply_spec{451, "4.3.0", "later"}};
  from_file.phases = {mailtap::protocol::phase::mail};
  running.faults = {from_file};
  auto engine = mailtap::policies::make_engine(1);
  ASSERT_FALSE(engine->add_all(running.faults));
  auto api_rule = from_file;
  api_rule.name = "over-the-api";
  api_rule.added_at_runtime = true;
  ASSERT_FALSE(engine->add(api_rule));
  mailtap::relay_metrics metrics;
  mailtap::reloader reloads([&running](std::string&) { return std::optional<config>(running); }, running, *engine,
                            metrics);
  ASSERT_TRUE(reloads.reload());
  const auto rules = engine->list();
  ASSERT_EQ(rules.size(), 1u);
  EXPECT_EQ(rules[0].name, "from-file");
  EXPECT_FALSE(rules[0].added_at_runtime);
  EXPECT_EQ(metrics.reload_removed_api_rules.load(), 1u);
  ASSERT_TRUE(reloads.reload());   // nothing added at runtime any more
  EXPECT_EQ(metrics.reload_removed_api_rules.load(), 1u);
}

TEST(PackagedConfig, LoadsWithServiceDefaults) {
  std::string error;
  auto cfg = mailtap::load_config_file(MAILTAP_SOURCE_DIR "/packaging/mailtap.toml", config{}, error);
  ASSERT_TRUE(cfg) << error;
  EXPECT_EQ(cfg->listen.to_string(), "127.0.0.1:2525");   // loopback, a port that needs no capability
  EXPECT_FALSE(cfg->upstream);                            // the built-in sink until configured
  EXPECT_EQ(cfg->captures_dir, "/var/lib/mailtap/captures");   // the unit's StateDirectory
  EXPECT_TRUE(cfg->faults.empty());
  EXPECT_EQ(cfg->log_level, "info");
  // Nothing else differs from the embedded defaults.
  EXPECT_EQ(restart_only_changes(config{}, *cfg), strings{"captures"});
}

}  // namespace
