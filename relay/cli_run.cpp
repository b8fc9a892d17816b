// `mailtap run`: embedded defaults, then --config, then flags; open the capture store,
// start the relay, tell the service manager (READY=1), serve until SIGINT/SIGTERM; SIGHUP
// builds the configuration again the same way and reloads the rules (relay/reload.hpp).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <malloc.h>
#include <sys/resource.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <limits>
#include <system_error>
#include <type_traits>
#include <vector>

#include "admin/control_plane.hpp"
#include "captures/index.hpp"
#include "captures/writer.hpp"
#include "policies/scenario_loader.hpp"
#include "protocol/terminal_text.hpp"
#include "relay/cli.hpp"
#include "relay/config.hpp"
#include "relay/log_limiter.hpp"
#include "relay/metrics.hpp"
#include "relay/notify.hpp"
#include "relay/reload.hpp"
#include "relay/server.hpp"

namespace mailtap::cli {

namespace {

struct run_flags {
  std::string config_file, listen, upstream, captures, admin, bare_eol, log_level;
  std::string listen_tls, upstream_tls, tls_cert, tls_key, upstream_ca, upstream_verify, upstream_fingerprint;
  std::string seed, first_session, max_sessions, threads, busy_poll_us;   // counts as text: see parse_count
  std::string upstream_identity;
  std::string admin_token_file;
  std::vector<std::string> admin_hosts;
  bool listen_proxy_protocol = false;
  std::string captures_max_age, captures_max_bytes;
  std::vector<std::string> scenarios;
  bool upstream_insecure = false, upstream_implicit_tls = false;
  bool transparent = false;
  bool no_captures = false;
};

// The shutdown summary's error line: everything that went wrong on the relay's or the
// upstream's side (each was logged at warn when it happened, rate-limited), in one count.
struct error_summary {
  std::uint64_t upstream_unreachable = 0, upstream_tls_failed = 0, refused_max_sessions = 0, accept_errors = 0,
                session_errors = 0, capture_write_failures = 0, upstream_failed = 0, suppressed_warnings = 0;

  static error_summary of(const relay_metrics& m) {
    error_summary e;
    e.upstream_unreachable = m.upstream_unreachable.load();
    e.upstream_tls_failed = m.upstream_tls_failed.load() + m.upstream_cert_refused.load();   // a refused pin too
    e.refused_max_sessions = m.sessions_refused_max.load();
    e.accept_errors = m.accept_errors.load();
    e.session_errors = m.session_errors.load();
    e.upstream_failed = m.upstream_failed.load();
    e.suppressed_warnings = m.warnings.suppressed_total();
    return e;
  }
  std::uint64_t total() const {
    return upstream_unreachable + upstream_tls_failed + refused_max_sessions + accept_errors + session_errors +
           capture_write_failures + upstream_failed;
  }
  void log() const {
    const auto level = total() > 0 ? spdlog::level::warn : spdlog::level::info;
    spdlog::log(level,
                "errors: {} (upstream unreachable {}, upstream TLS failed {}, refused at max_sessions {}, "
                "accept failed {}, session errors {}, capture write failures {}, upstream failed in session {}; "
                "{} repeated warning(s) suppressed)",
                total(), upstream_unreachable, upstream_tls_failed, refused_max_sessions, accept_errors,
                session_errors, capture_write_failures, upstream_failed, suppressed_warnings);
  }
};

// Decimal digits only, no sign, from lo to hi. Numeric flags are taken as text because
// CLI11 turns "-1" into 2^64-1 for an unsigned option.
std::optional<std::uint64_t> parse_count(const std::string& text, std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t value = 0;
  if (text.empty() || text.front() < '0' || text.front() > '9') return std::nullopt;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < lo || value > hi) return std::nullopt;
  return value;
}

// One count flag over its config value; a one-line error naming the flag otherwise.
bool take_count(const std::string& text, const char* flag, std::uint64_t lo, std::uint64_t hi,
                const std::string& expected, auto& out, std::string& error) {
  if (text.empty()) return true;
  auto v = parse_count(text, lo, hi);
  if (!v) {
    error = std::string(flag) + " '" + text + "': expected " + expected;
    return false;
  }
  out = static_cast<std::remove_reference_t<decltype(out)>>(*v);
  return true;
}

// The admin token of $MAILTAP_ADMIN_TOKEN, then --admin-token-file (or
// $MAILTAP_ADMIN_TOKEN_FILE), over the config file's: never on the command line itself,
// where every local user could read it (/proc/PID/cmdline).
bool take_admin_token(const run_flags& f, config& cfg, std::string& error) {
  if (const char* env = std::getenv("MAILTAP_ADMIN_TOKEN"); env && *env) {
    if (auto problem = admin_token_problem(env); !problem.empty()) {
      error = "$MAILTAP_ADMIN_TOKEN: " + problem;
      return false;
    }
    cfg.admin_token = env;
  }
  if (f.admin_token_file.empty()) return true;
  std::string why;
  auto token = read_admin_token_file(f.admin_token_file, why);
  if (!token) {
    error = "--admin-token-file: " + why;
    return false;
  }
  cfg.admin_token = std::move(*token);
  return true;
}

// Applies command-line flags over `cfg`. One-line error naming the flag on failure.
bool apply_flags(const run_flags& f, config& cfg, std::string& error) {
  auto take_endpoint = [&](const std::string& text, const char* flag, endpoint& out) {
    std::string why;
    auto ep = parse_endpoint(text, why);
    if (!ep) {
      error = std::string(flag) + " '" + text + "': " + why;
      return false;
    }
    out = *ep;
    return true;
  };
  if (!f.listen.empty() && !take_endpoint(f.listen, "--listen", cfg.listen)) return false;
  if (!f.admin.empty()) {
    cfg.admin_explicit = true;
    cfg.admin_off = f.admin == "off";
    if (!cfg.admin_off && !take_endpoint(f.admin, "--admin", cfg.admin)) return false;
  }
  if (!take_admin_token(f, cfg, error)) return false;
  for (const auto& h : f.admin_hosts) {
    std::string why;
    auto name = admin_host_name(h, why);
    if (!name) {
      error = "--admin-host: " + why;
      return false;
    }
    cfg.admin_hosts.push_back(std::move(*name));
  }
  if (!f.upstream.empty()) {
    if (f.upstream == "builtin") {
      cfg.upstream.reset();
    } else {
      endpoint ep;
      if (!take_endpoint(f.upstream, "--upstream", ep)) return false;
      if (ep.port == 0) {   // as the config file's upstream (relay/config.cpp)
        error = "--upstream '" + f.upstream + "': port 0 cannot be connected to";
        return false;
      }
      cfg.upstream = ep;
    }
  }
  if (!f.captures.empty()) cfg.captures_dir = f.captures;
  std::string retention_problem;
  if (!f.captures_max_age.empty() &&
      !(cfg.captures_max_age = parse_captures_max_age(f.captures_max_age, retention_problem))) {
    error = "--captures-max-age '" + f.captures_max_age + "': " + retention_problem;
    return false;
  }
  if (!f.captures_max_bytes.empty() &&
      !(cfg.captures_max_bytes = parse_captures_max_bytes(f.captures_max_bytes, retention_problem))) {
    error = "--captures-max-bytes '" + f.captures_max_bytes + "': " + retention_problem;
    return false;
  }
  if (f.transparent) cfg.transparent = true;
  if (!f.bare_eol.empty()) {
    auto m = protocol::parse_bare_eol_mode(f.bare_eol);
    if (!m) {
      error = "--bare-line-endings '" + f.bare_eol + "': expected strict, normalize or raw";
      return false;
    }
    cfg.bare_eol = *m;
  }
  if (!f.log_level.empty()) {
    if (!is_log_level(f.log_level)) {
      error = "--log-level '" + f.log_level + "': expected " + std::string(log_levels_expected);
      return false;
    }
    cfg.log_level = f.log_level;
  }
  if (!f.listen_tls.empty()) {
    endpoint ep;
    if (!take_endpoint(f.listen_tls, "--listen-tls", ep)) return false;
    cfg.tls.listen = ep;
  }
  if (!f.upstream_tls.empty()) {
    auto m = protocol::parse_upstream_tls_mode(f.upstream_tls);
    if (!m) {
      error = "--upstream-tls '" + f.upstream_tls + "': expected mirror, required, opportunistic or never";
      return false;
    }
    cfg.tls.upstream = *m;
  }
  if (f.tls_cert.empty() != f.tls_key.empty()) {
    error = "--tls-cert and --tls-key go together";
    return false;
  }
  if (!f.tls_cert.empty()) {
    cfg.tls.cert_file = f.tls_cert;
    cfg.tls.key_file = f.tls_key;
  }
  if (!f.upstream_ca.empty()) cfg.tls.ca_file = f.upstream_ca;
  if (!f.upstream_verify.empty()) {
    auto v = parse_upstream_verify(f.upstream_verify);
    if (!v) {
      error = "--upstream-verify '" + f.upstream_verify + "': expected none, record or require";
      return false;
    }
    if (f.upstream_insecure && *v != upstream_verify::none) {
      error = "--upstream-insecure contradicts --upstream-verify " + f.upstream_verify;
      return false;
    }
    cfg.tls.verify_upstream = *v;
  }
  if (f.upstream_insecure) cfg.tls.verify_upstream = upstream_verify::none;
  if (!f.upstream_fingerprint.empty()) {
    std::string why;
    auto fp = parse_sha256_fingerprint(f.upstream_fingerprint, why);
    if (!fp) {
      error = "--upstream-fingerprint: " + why;
      return false;
    }
    cfg.tls.upstream_fingerprint = *fp;
  }
  if (!cfg.tls.upstream_fingerprint.empty() && cfg.tls.verify_upstream == upstream_verify::none) {
    error = "--upstream-fingerprint: a pinned fingerprint is a verification: it cannot go with verification off";
    return false;
  }
  if (f.upstream_implicit_tls) cfg.tls.upstream_implicit = true;
  if (!f.upstream_identity.empty()) {
    auto mode = parse_upstream_identity(f.upstream_identity);
    if (!mode) {
      error = "--upstream-identity '" + f.upstream_identity + "': expected none, proxy_v1, proxy_v2 or xclient";
      return false;
    }
    cfg.identity = *mode;
  }
  if (f.listen_proxy_protocol) cfg.listen_proxy_protocol = true;
  for (const auto& file : f.scenarios) {
    auto loaded = policies::load_scenario(file);
    if (!loaded.ok()) {
      error = "--scenario: " + loaded.error;
      return false;
    }
    cfg.scenarios.emplace_back(file);
    for (auto& r : loaded.rules) cfg.faults.push_back(std::move(r));
  }
  if (auto duplicate = policies::duplicate_rule_name(cfg.faults)) {
    error = *duplicate;
    return false;
  }
  constexpr auto any = std::numeric_limits<std::uint64_t>::max();
  return take_count(f.seed, "--seed", 0, any, "an integer from 0 (random) to " + std::to_string(any), cfg.seed,
                    error) &&
         take_count(f.first_session, "--first-session", 1, std::numeric_limits<std::int64_t>::max(),
                    "an integer from 1 to " + std::to_string(std::numeric_limits<std::int64_t>::max()),
                    cfg.first_session, error) &&
         take_count(f.max_sessions, "--max-sessions", 1, max_sessions_limit,
                    "an integer from 1 to " + std::to_string(max_sessions_limit), cfg.max_sessions, error) &&
         take_count(f.threads, "--threads", 0, max_threads_limit,
                    "an integer from 0 (one per core) to " + std::to_string(max_threads_limit), cfg.threads, error) &&
         take_count(f.busy_poll_us, "--busy-poll-us", 0, max_busy_poll_us,
                    "an integer from 0 (never) to " + std::to_string(max_busy_poll_us), cfg.busy_poll, error);
}

std::optional<config> build_config_unescaped(const run_flags& f, std::string& error);

// The configuration `mailtap run` serves: embedded defaults, the --config file, then the
// flags (and --scenario files). The same at start and at each SIGHUP reload. Its error line
// echoes values as given (a flag's, a file's): it leaves here safe on a terminal, controls,
// bidirectional ones and bytes that are not UTF-8 escaped (protocol/terminal_text.hpp).
std::optional<config> build_config(const run_flags& f, std::string& error) {
  auto cfg = build_config_unescaped(f, error);
  if (!cfg) error = protocol::terminal_safe(error);
  return cfg;
}

std::optional<config> build_config_unescaped(const run_flags& f, std::string& error) {
  config cfg;
  if (!f.config_file.empty()) {
    auto loaded = load_config_file(f.config_file, cfg, error);
    if (!loaded) return std::nullopt;
    cfg = *loaded;
  }
  if (!apply_flags(f, cfg, error)) return std::nullopt;
  if (error = admin::admin_address_problem(cfg); !error.empty()) return std::nullopt;
  if (cfg.captures_dir.empty()) cfg.captures_dir = default_captures_dir();
  if (cfg.identity == upstream_identity::proxy_v1 || cfg.identity == upstream_identity::proxy_v2) {
    // The header goes before any TLS; with implicit upstream TLS the handshake would overtake it.
    const char* problem = !cfg.upstream ? "needs an upstream: the built-in sink reads no PROXY header"
                          : cfg.tls.upstream_implicit ? "cannot go with implicit upstream TLS (not supported)"
                                                      : nullptr;
    if (problem) {
      error = "upstream_identity = " + std::string(to_string(cfg.identity)) + " " + problem;
      return std::nullopt;
    }
  }
  return cfg;
}

// glibc serves a block of 128 KiB or more with mmap of its own and returns it with munmap when
// it is freed (its threshold adapts only to the main arena's frees). A relayed message of
// 100 KiB or more allocates and frees blocks of that size several times (a capture's buffered
// lines, the client's bytes kept for bytes_ref, a read's forwarded bytes): each paid for an
// mmap, a page fault per 4 KiB of fresh zeroed memory and an munmap. Blocks under 1 MiB come
// from the arenas instead; larger ones (a multi-megabyte BDAT chunk) are still mapped apart.
// An arena gives memory back once 4 MiB is free at its top (glibc's default, 128 KiB, gave
// back and faulted in again the same blocks for every such message): at most that much
// freed memory stays resident per arena.
void keep_large_blocks_in_the_arenas() {
  ::mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
  ::mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
}

// How many captures may be open before idle ones give their descriptors back
// (captures::store_options::park_idle_above): an eighth of the descriptor limit, when each
// session's two legs and its capture would use three eighths of it.
std::size_t idle_captures_kept_open() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY)
    return std::numeric_limits<std::size_t>::max();
  return static_cast<std::size_t>(limit.rlim_cur / 8);
}

// What opening the captures directory made (captures::store::made: the directories it created,
// the index if it created it), removed again if the start then fails (a listener or the admin
// API's address that cannot be bound), so that a failed start leaves nothing behind. Only what
// the store says it made goes, directories only when empty, and only once the store is gone
// (declared before it); once dismissed, at the ready line, nothing is removed.
class start_leftovers {
 public:
  start_leftovers() = default;
  start_leftovers(const start_leftovers&) = delete;
  start_leftovers& operator=(const start_leftovers&) = delete;
  void take(const std::filesystem::path& dir, const captures::store::made_at_open& made) {
    dir_ = dir;
    made_ = made;
  }
  ~start_leftovers() {
    if (dismissed_ || dir_.empty()) return;
    std::error_code ec;
    if (made_.index) captures::remove_index_files(dir_);
    for (const auto& d : made_.directories) std::filesystem::remove(d, ec);   // deepest first; only if empty
  }
  void dismiss() { dismissed_ = true; }

 private:
  std::filesystem::path dir_;
  captures::store::made_at_open made_;
  bool dismissed_ = false;
};

int run(const run_flags& f) {
  keep_large_blocks_in_the_arenas();
  std::string error;
  auto built = build_config(f, error);
  if (!built) {
    std::fprintf(stderr, "mailtap run: %s\n", error.c_str());
    return exit_usage;
  }
  const config cfg = std::move(*built);

  auto logger = spdlog::stderr_color_mt("mailtap");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));

  // Declared before the store, which reports its write failures on its own thread until it is gone.
  log_limiter capture_warnings;
  captures::store_options capture_options;
  capture_options.fsync = cfg.captures_fsync;
  capture_options.retain = {cfg.captures_max_age, cfg.captures_max_bytes};
  capture_options.on_prune = [&capture_warnings](const captures::prune_result& r) {
    if (r.removed > 0)
      spdlog::info("captures: removed {} oldest finished capture(s), {} bytes, to stay within the retention limits; "
                   "{} capture(s) left, {} bytes",
                   r.removed, r.removed_bytes, r.kept, r.kept_bytes);
    if (r.over_max_bytes)
      warn_limited(capture_warnings, warn_kind::capture_retention,
                   "captures: still above captures max_bytes: " + std::to_string(r.left_unfinished) +
                       " capture(s) are in progress or unfinished and are never removed");
    // Their own allowance: a foreign file retention cannot read, named at every prune, must not
    // use up the one that lets "session X: capture write failed" through.
    for (const auto& e : r.errors) warn_limited(capture_warnings, warn_kind::capture_retention, "captures: " + e);
  };
  capture_options.index = true;
  capture_options.park_idle_above = idle_captures_kept_open();
  capture_options.on_index_failure = [](const std::string& reason) {
    spdlog::warn("captures: the index is not kept up to date (captures are still written; counted from now on; "
                 "'mailtap captures reindex' repairs it): {}", reason);
  };
  // --no-captures: nothing is recorded (a setting for measuring what recording costs,
  // README "Performance"); the relay is otherwise the same.
  // Declared before the store: it removes what the store made only after the store is gone.
  start_leftovers leftovers;
  std::unique_ptr<captures::store> store;
  if (!f.no_captures) store = captures::store::open(cfg.captures_dir, error, capture_options);
  if (!store && !f.no_captures) {
    std::fprintf(stderr, "mailtap run: %s\n", error.c_str());
    return exit_usage;
  }
  if (store) leftovers.take(cfg.captures_dir, store->made());
  if (store) store->on_write_failure([&capture_warnings](const std::string& session_id, const std::string& reason) {
    warn_limited(capture_warnings, warn_kind::capture_write_failed,
                 "session " + session_id + ": capture write failed: " + reason);
  });
  int code = exit_ok;
  error_summary errors;
  {
    server relay(cfg, store.get());
    if (!relay.start(error)) {
      std::fprintf(stderr, "mailtap run: %s\n", error.c_str());
      return exit_usage;
    }
    std::string admin_skipped;
    auto control = admin::control_plane::start(relay, cfg, store.get(), error, admin_skipped);
    if ((!control && !error.empty()) || (control && !relay.refuse_as_upstream(control->address(), error))) {
      std::fprintf(stderr, "mailtap run: %s\n", error.c_str());
      return exit_usage;
    }
    // One stable line on stdout, so scripts and tests can find a port chosen with :0; the
    // admin API's address on the next line.
    std::string tls_listen;
    if (auto t = relay.listen_tls_endpoint()) tls_listen = ", tls on " + t->to_string();
    std::printf("mailtap: listening on %s%s, upstream %s, captures in %s\n", relay.listen_endpoint().to_string().c_str(),
                tls_listen.c_str(), relay.upstream_label().c_str(),
                store ? cfg.captures_dir.c_str() : "(none: --no-captures)");
    if (control) std::printf("mailtap: admin API on http://%s\n", control->address().to_string().c_str());
    std::fflush(stdout);
    leftovers.dismiss();
    spdlog::info("seed {}; {} fault rule(s) armed", relay.seed(), cfg.faults.size());
    if (!admin_skipped.empty()) {
      if (cfg.admin_off) spdlog::info("{}", admin_skipped);
      else spdlog::warn("{}", admin_skipped);
    }
    reloader reloads([&f](std::string& why) { return build_config(f, why); }, cfg, relay.faults(), relay.metrics());
    relay.on_reload([&reloads] { reloads.reload(); });
    reloads.set_listening("listening on " + relay.listen_endpoint().to_string() + tls_listen);
    notify::ready(reloads.status());
    relay.run();
    const auto& m = relay.metrics();
    spdlog::info("stopped: {} sessions, {} transactions, {} delivered, {} refused commands, {} ambiguous end-of-data",
                 m.sessions_accepted.load(), m.transactions.load(), m.messages_delivered.load(),
                 m.refused_commands.load(), m.ambiguous_end_of_data.load());
    // Every rule that injected since start, as /metrics counts them (a newcomer's trial: a rule
    // reset or reloaded away was missing here).
    for (const auto& c : relay.faults().injected_since_start())
      spdlog::info("faults_injected{{rule=\"{}\",type=\"{}\"}} {}", c.rule, c.type, c.count);
    if (auto decide_errors = relay.faults().decide_errors(); decide_errors > 0)
      spdlog::warn("fault_decide_errors {} (decisions that failed inside policies/ and fell back to proceed)",
                   decide_errors);
    if (m.reloads_ok.load() + m.reloads_failed.load() > 0)
      spdlog::log(m.reloads_failed.load() > 0 ? spdlog::level::warn : spdlog::level::info,
                  "reloads: {} ok, {} failed", m.reloads_ok.load(), m.reloads_failed.load());
    if (m.blackholed.load() > 0)
      spdlog::warn("{} message(s) were answered 250 by a blackhole fault and delivered nowhere", m.blackholed.load());
    if (cfg.listen_proxy_protocol)
      spdlog::log(m.proxy_header_refused.load() > 0 ? spdlog::level::warn : spdlog::level::info,
                  "listen_proxy_protocol: {} connection(s) refused without a valid PROXY protocol header",
                  m.proxy_header_refused.load());
    if (m.sessions_refused_loop.load() > 0)
      spdlog::warn("{} connection(s) refused with 421 4.4.6: mailtap's own upstream connections, sent back to it "
                   "(a mail loop; README, \"Transparent interception\")",
                   m.sessions_refused_loop.load());
    errors = error_summary::of(m);
    errors.suppressed_warnings += capture_warnings.suppressed_total();
  }
  if (!store) {
    errors.log();
    return code;
  }
  // Every session is gone: the store writes out the rest and puts the last captures in the
  // index, so that the summary counts them.
  store->stop();
  const auto& c = store->counters();
  const std::uint64_t closed = c.complete.load() + c.incomplete.load();
  const std::uint64_t indexed = c.indexed.load();
  spdlog::info("captures: {} complete, {} incomplete, {} write failures, {} removed by the retention limits; "
               "{} indexed, {} index failures, {} left out of the index",
               c.complete.load(), c.incomplete.load(), c.write_failures.load(), c.pruned.load(), indexed,
               c.index_failures.load(), closed > indexed ? closed - indexed : 0);
  errors.capture_write_failures = c.write_failures.load();
  errors.log();
  return code;
}

}  // namespace

void register_run(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("run", "Run the relay (defaults: SMTP on 127.0.0.1:2525, built-in sink upstream)");
  auto f = std::make_shared<run_flags>();
  cmd->add_option("--config", f->config_file, "TOML configuration file");
  cmd->add_option("--listen", f->listen, "SMTP listen address HOST:PORT (default 127.0.0.1:2525; port 0 = any)");
  cmd->add_option("--upstream", f->upstream, "Upstream HOST:PORT, or 'builtin' for the built-in sink (default)");
  cmd->add_option("--captures", f->captures,
                  "Capture directory (default $MAILTAP_CAPTURES, else $XDG_STATE_HOME/mailtap/captures, else "
                  "~/.local/state/mailtap/captures)");
  cmd->add_flag("--no-captures", f->no_captures,
                "Record nothing: the relay without its recorder, for measuring what recording costs "
                "(scripts/bench's 'mailtap-nocap'); not for production");
  cmd->add_option("--captures-max-age", f->captures_max_age,
                  "Remove finished captures older than this, e.g. 168h (default: keep)");
  cmd->add_option("--captures-max-bytes", f->captures_max_bytes,
                  "Remove the oldest finished captures while the directory holds more, e.g. 10GiB (default: keep)");
  cmd->add_option("--admin", f->admin,
                  "Admin API (HTTP control plane) address (default 127.0.0.1:8025; port 0 = any), or 'off'. "
                  "Any address but loopback needs an admin token");
  cmd->add_option("--admin-token-file", f->admin_token_file,
                  "File holding the admin API's bearer token (16 to 256 of A-Z a-z 0-9 - . _ ~; default "
                  "$MAILTAP_ADMIN_TOKEN, or the config's admin_token_file): every admin request must send "
                  "Authorization: Bearer TOKEN")
      ->envname("MAILTAP_ADMIN_TOKEN_FILE");
  cmd->add_option("--admin-host", f->admin_hosts,
                  "One more name the admin API answers to in Host (beside localhost, 127.0.0.1, [::1] and its "
                  "address): the one clients elsewhere use; repeatable, added to the config's admin_hosts");
  cmd->add_option("--scenario", f->scenarios, "Fault scenario file (policies/scenarios/*.toml); repeatable");
  cmd->add_option("--seed", f->seed, "Master seed for reproducible faults, 0 to 2^64-1 (default: random, logged)");
  cmd->add_option("--first-session", f->first_session,
                  "Number of the first session (default 1): with --seed, `mailtap show` of a capture gives both, "
                  "and the run's first session gets that session's faults again");
  cmd->add_option("--max-sessions", f->max_sessions, "Concurrent sessions before new ones get 421 (default 256)");
  cmd->add_option("--threads", f->threads, "I/O threads (default: one per core)");
  cmd->add_option("--busy-poll-us", f->busy_poll_us,
                  "While one session is open, how long (µs) an I/O thread polls before it sleeps, to add "
                  "less latency per round trip, at the cost of CPU while that session is busy (default 200; 0: never)");
  cmd->add_option("--bare-line-endings", f->bare_eol,
                  "Bare CR/LF in DATA: strict (default; refuse, as Postfix smtpd_forbid_bare_newline "
                  "and sendmail), normalize (each a space; only CRLF.CRLF ends the message) or raw (testing only)");
  cmd->add_option("--log-level", f->log_level,
                  "trace, debug, info (default), warn, error, off. warn still names the session of an "
                  "unreachable upstream, an upstream TLS failure, a capture write failure or a connection "
                  "refused at --max-sessions (repeats rate-limited); the summary at exit counts them as errors");
  cmd->add_option("--listen-tls", f->listen_tls, "Implicit TLS (SMTPS) listen address HOST:PORT");
  cmd->add_option("--upstream-tls", f->upstream_tls, "Upstream TLS: mirror (default), required, opportunistic, never");
  cmd->add_option("--tls-cert", f->tls_cert, "PEM certificate for the client leg (default: self-signed, generated)");
  cmd->add_option("--tls-key", f->tls_key, "PEM private key for --tls-cert");
  cmd->add_option("--upstream-ca", f->upstream_ca, "CA file to verify the upstream's certificate (default: system CAs)");
  cmd->add_option("--upstream-verify", f->upstream_verify,
                  "Upstream certificate check: record (default; checked and recorded, delivery goes on, as Postfix "
                  "smtp_tls_security_level=may), require (a failed check fails TLS; the default with "
                  "--upstream-tls required) or none");
  cmd->add_option("--upstream-fingerprint", f->upstream_fingerprint,
                  "Pin the upstream certificate: sha256:HEX (colons optional); a mismatch fails TLS");
  cmd->add_flag("--upstream-insecure", f->upstream_insecure, "Same as --upstream-verify none (recorded in captures)");
  cmd->add_flag("--upstream-implicit-tls", f->upstream_implicit_tls, "The upstream speaks TLS from connect (SMTPS, port 465)");
  cmd->add_option("--upstream-identity", f->upstream_identity,
                  "Tell the upstream who the client is: none (default), proxy_v1 or proxy_v2 (a PROXY protocol "
                  "header first on each upstream connection, for Postfix smtpd_upstream_proxy_protocol=haproxy) "
                  "or xclient (XCLIENT when the upstream offers it, Postfix smtpd_authorized_xclient_hosts)");
  cmd->add_flag("--listen-proxy-protocol", f->listen_proxy_protocol,
                "Every connection starts with a load balancer's PROXY protocol header (v1 or v2) naming the "
                "client; one without a valid header gets 421 and is closed");
  cmd->add_flag("--transparent", f->transparent,
                "Relay each connection to its original destination (SO_ORIGINAL_DST after an nftables/iptables "
                "REDIRECT); connections addressed to mailtap itself go to --upstream");
  cmd->footer("Signals: SIGTERM or SIGINT drains the sessions and stops (a second one stops at once); SIGHUP "
              "reloads the --config and scenario files: new sessions get the new [[fault]] rules, sessions in "
              "flight keep theirs, a bad file keeps the running rules. Under systemd (Type=notify) it reports "
              "READY=1, RELOADING=1 and STOPPING=1.");
  cmd->callback([f, &exit_code] { exit_code = run(*f); });
}

}  // namespace mailtap::cli
