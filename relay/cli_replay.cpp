// `mailtap replay server CAPTURE --listen ADDR:PORT ...` impersonates the recorded server for
// live clients; `mailtap replay client CAPTURE|DIR... --to HOST:PORT ...` re-drives the
// recorded client side against a server and compares the replies (replay/README.md).
// Exit codes (README "Command line"): 0 every session followed the recording (server) or
// every reply matched (client), 1 something diverged (or, for the client, the server could not
// be reached), 2 usage or a capture that cannot be read.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "captures/reader.hpp"
#include "config_reader/duration.hpp"
#include "relay/cli.hpp"
#include "relay/replay_shell.hpp"
#include "replay/report.hpp"
#include "replay/script.hpp"
#include "replay/timing.hpp"

namespace mailtap::cli {

namespace {

// -j: more connections at once than this is a load test, not a replay.
constexpr std::size_t max_jobs = 1024;

void usage_error(const char* command, const std::string& what, int& exit_code) {
  std::fprintf(stderr, "mailtap replay %s: %s\n", command, what.c_str());
  exit_code = exit_usage;
}

struct server_opts {
  std::string capture, dir, listen, timing = "original", sessions = "1", tls_cert, tls_key, client_idle = "300",
      tls_on_connect = "as-recorded";
  bool json = false, compare_message = false, compare_client_name = false;
};

// --tls-on-connect: a capture recorded on the SMTPS listener (TLS from connect, RFC 8314)
// replays with TLS from connect; "no" replays it in plaintext (a server or client on port 25
// or 587), "yes" a plaintext recording inside TLS from connect.
const char* const tls_on_connect_help =
    "as-recorded (default: TLS from connect when the capture was recorded on the SMTPS listener), yes or no";

bool apply_tls_on_connect(const char* command, const std::string& value, replay::script& script, int& exit_code) {
  if (value == "yes") script.implicit_tls = true;
  else if (value == "no") script.implicit_tls = false;
  else if (value != "as-recorded") {
    usage_error(command, "--tls-on-connect '" + value + "': expected as-recorded, yes or no", exit_code);
    return false;
  }
  return true;
}

// As the config's timeouts are written (README "Configuration file"): seconds, or a duration
// string; `least_us` to one year. Nothing when the text is neither.
std::optional<std::uint64_t> timeout_us(const std::string& text, std::uint64_t least_us) {
  std::uint64_t us = 0;
  std::string error;
  if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos) {
    auto [e, ec] = std::from_chars(text.data(), text.data() + text.size(), us);
    us = ec == std::errc() && us <= config_reader::max_duration_us / 1'000'000 ? us * 1'000'000 : 0;
  } else if (auto parsed = config_reader::parse_duration(text, error)) {
    us = *parsed;
  }
  if (us < least_us || us > config_reader::max_duration_us) return std::nullopt;
  return us;
}

void run_server(const server_opts& o, int& exit_code) {
  std::string error;
  std::error_code fec;
  if (std::filesystem::is_directory(o.capture, fec))
    return usage_error("server", o.capture + ": a directory; a replay server plays one capture (a file, a session id "
                                             "or 'latest')", exit_code);
  auto paths = resolve_captures(o.capture, o.dir, error);
  if (!error.empty()) return usage_error("server", error, exit_code);
  if (paths.size() != 1)
    return usage_error("server", o.capture + ": names " + std::to_string(paths.size()) +
                                     " captures; a replay server plays one", exit_code);
  auto cap = captures::read_capture(paths.front(), error);
  if (!cap) return usage_error("server", error, exit_code);
  auto script = replay::build_script(*cap, error);
  if (!script) return usage_error("server", error, exit_code);
  cap.reset();
  if (!apply_tls_on_connect("server", o.tls_on_connect, *script, exit_code)) return;

  replay_server_options options;
  auto listen = parse_endpoint(o.listen, error);
  if (!listen) return usage_error("server", "--listen '" + o.listen + "': " + error, exit_code);
  options.listen = *listen;
  auto pace = replay::parse_timing(o.timing, error);
  if (!pace) return usage_error("server", "--timing " + error, exit_code);
  options.pace = *pace;
  options.server.compare_message = o.compare_message;
  options.server.compare_client_name = o.compare_client_name;
  const auto idle_us = timeout_us(o.client_idle, 1000);
  if (!idle_us)
    return usage_error("server", "--client-idle '" + o.client_idle + "': expected seconds or a duration like \"5s\", 1 ms to one year",
                       exit_code);
  options.server.client_idle = std::chrono::milliseconds(*idle_us / 1000);
  std::size_t sessions = 0;
  auto [end, ec] = std::from_chars(o.sessions.data(), o.sessions.data() + o.sessions.size(), sessions);
  if (ec != std::errc() || end != o.sessions.data() + o.sessions.size() || o.sessions.empty())
    return usage_error("server", "--sessions '" + o.sessions + "': expected a count (0: serve until stopped)", exit_code);
  options.sessions = sessions;
  if (o.tls_cert.empty() != o.tls_key.empty()) return usage_error("server", "--tls-cert and --tls-key go together", exit_code);
  options.cert_file = o.tls_cert;
  options.key_file = o.tls_key;

  bool diverged = false;
  const bool ok = run_replay_server(
      *script, options,
      [&](const std::string& bound) {
        // One stable line on stdout, as `mailtap run` prints, so scripts find a port chosen with
        // :0; a JSON document of its own under --json, which prints nothing else.
        // A newcomer trial: a plaintext client hung on a port that spoke TLS from connect, and
        // nothing had said so.
        if (o.json)
          std::printf("%s\n", replay::render_server_ready_json(bound, paths.front(), script->steps.size(),
                                                               script->implicit_tls)
                                  .c_str());
        else
          std::printf("mailtap replay: listening on %s%s, replaying %s (%zu steps)\n", bound.c_str(),
                      !script->implicit_tls              ? ""
                      : o.tls_on_connect == "as-recorded" ? " (TLS from connect, as recorded on an SMTPS listener)"
                                                          : " (TLS from connect: --tls-on-connect yes)",
                      paths.front().c_str(), script->steps.size());
        std::fflush(stdout);
      },
      [&](const replay::server_session& s) {
        diverged = diverged || !s.divergences.empty();
        std::cout << (o.json ? replay::render_server_json(s) + "\n" : replay::render_server_text(s));
        std::cout.flush();
      },
      error);
  if (!ok) return usage_error("server", error, exit_code);
  exit_code = diverged ? exit_problem : exit_ok;
}

struct client_opts {
  std::vector<std::string> captures;
  std::string dir, to, timing = "fast", jobs = "1", junit, auth_user, auth_password, auth_password_file,
      tls_on_connect = "as-recorded", reply_timeout = "120";
  bool json = false, compare_text = false;
};

// The password for --auth-user: --auth-password, else the first line of --auth-password-file,
// else $MAILTAP_AUTH_PASSWORD (the two last keep it out of ps(1) and the shell's history, as
// the admin token is kept). Empty and false after a one-line error.
bool auth_password_of(const client_opts& o, std::string& password, std::string& error) {
  if (!o.auth_password.empty() && !o.auth_password_file.empty()) {
    error = "--auth-password and --auth-password-file: give one of them";
    return false;
  }
  password = o.auth_password;
  if (!o.auth_password_file.empty()) {
    std::ifstream in(o.auth_password_file, std::ios::binary);
    if (!in || !std::getline(in, password)) {
      error = "--auth-password-file " + o.auth_password_file + ": cannot read a first line";
      return false;
    }
    if (!password.empty() && password.back() == '\r') password.pop_back();
    if (password.empty()) {
      error = "--auth-password-file " + o.auth_password_file + ": its first line is empty";
      return false;
    }
  }
  if (password.empty() && !o.auth_user.empty())
    if (const char* env = std::getenv("MAILTAP_AUTH_PASSWORD")) password = env;
  if (o.auth_user.empty() != password.empty()) {
    error = o.auth_user.empty() ? "a password needs --auth-user"
                                : "--auth-user needs a password: --auth-password, --auth-password-file or "
                                  "$MAILTAP_AUTH_PASSWORD";
    return false;
  }
  return true;
}

void print_runs(const std::vector<replay::client_run>& runs, bool json, bool several) {
  if (json) {
    for (const auto& r : runs) std::cout << replay::render_client_json(r) << "\n";
    if (several) std::cout << replay::render_summary_json(replay::summarize(runs)) << "\n";
    return;
  }
  if (!several) {
    for (const auto& r : runs) std::cout << replay::render_client_text(r);
    return;
  }
  for (const auto& r : runs) {
    const std::string result = r.unreadable    ? "UNREADABLE"
                               : r.unreachable ? "UNREACHABLE " + r.error
                               : r.diverged    ? "DIVERGED " + replay::divergence_key(r)
                                               : "matched";
    std::cout << r.path << "  " << result << "\n";
  }
  for (const auto& r : runs)
    if (r.diverged && !r.unreadable && !r.unreachable) std::cout << "\n" << replay::render_client_text(r);
  std::cout << "\n" << replay::render_summary_text(replay::summarize(runs));
}

void run_client(const client_opts& o, int& exit_code) {
  std::string error;
  replay_client_options options;
  auto target = parse_endpoint(o.to, error);
  if (!target) return usage_error("client", "--to '" + o.to + "': " + error, exit_code);
  options.target = *target;
  auto pace = replay::parse_timing(o.timing, error);
  if (!pace) return usage_error("client", "--timing " + error, exit_code);
  options.client.pace = *pace;
  std::size_t jobs = 0;
  auto [end, ec] = std::from_chars(o.jobs.data(), o.jobs.data() + o.jobs.size(), jobs);
  if (ec != std::errc() || end != o.jobs.data() + o.jobs.size() || jobs < 1 || jobs > max_jobs)
    return usage_error("client", "-j '" + o.jobs + "': expected 1 to " + std::to_string(max_jobs), exit_code);
  options.jobs = jobs;
  std::string password;
  if (!auth_password_of(o, password, error)) return usage_error("client", error, exit_code);
  options.client.auth_user = o.auth_user;
  options.client.auth_password = password;
  options.client.compare_text = o.compare_text;
  const auto reply_us = timeout_us(o.reply_timeout, 1'000'000);
  if (!reply_us)
    return usage_error("client", "--reply-timeout '" + o.reply_timeout +
                                     "': expected seconds or a duration like \"30s\", 1 s to one year", exit_code);
  options.client.reply_timeout = std::chrono::seconds(*reply_us / 1'000'000);
  replay::script probe;   // checks the value before any capture is read
  if (!apply_tls_on_connect("client", o.tls_on_connect, probe, exit_code)) return;
  if (o.tls_on_connect != "as-recorded") options.tls_on_connect = o.tls_on_connect == "yes";

  // Opened before any mail is sent: a path that cannot be written stops the run, not its report.
  std::ofstream junit;
  if (!o.junit.empty()) {
    junit.open(o.junit, std::ios::binary | std::ios::trunc);
    if (!junit) return usage_error("client", "--junit " + o.junit + ": cannot write the file", exit_code);
  }

  std::vector<std::filesystem::path> paths;
  bool several = false;
  bool unreadable = false;
  for (const auto& name : o.captures) {
    auto found = resolve_captures(name, o.dir, error);
    if (!error.empty()) {
      std::fprintf(stderr, "mailtap replay client: %s\n", error.c_str());
      unreadable = true;
      error.clear();
    }
    // A directory's captures come oldest first (resolve_captures, as for show and diagnose).
    std::error_code fec;
    several = several || std::filesystem::is_directory(name, fec);
    paths.insert(paths.end(), found.begin(), found.end());
  }
  several = several || paths.size() > 1;
  const auto runs = run_replay_clients(paths, options);
  for (const auto& r : runs) {
    if (!r.unreadable) continue;
    std::fprintf(stderr, "mailtap replay client: %s\n", r.error.c_str());
    unreadable = true;
  }
  print_runs(runs, o.json, several);
  std::cout.flush();
  if (junit.is_open()) {
    junit << replay::render_junit(runs);
    junit.close();
    if (!junit) {
      std::fprintf(stderr, "mailtap replay client: --junit %s: cannot write the file\n", o.junit.c_str());
      unreadable = true;
    }
  }
  bool diverged = false;
  for (const auto& r : runs) diverged = diverged || (r.diverged && !r.unreadable);
  exit_code = unreadable ? exit_usage : diverged ? exit_problem : exit_ok;
}

}  // namespace

void register_replay(CLI::App& app, int& exit_code) {
  auto* replay = app.add_subcommand(
      "replay", "Replay a capture: impersonate the recorded server, or re-drive the recorded client against a server");
  replay->require_subcommand(1);

  auto* server = replay->add_subcommand(
      "server", "Impersonate the recorded server: play its greeting and replies (with their recorded delays) to a live "
                "client, and report where the client's commands differ from the recorded ones");
  auto so = std::make_shared<server_opts>();
  server->add_option("capture", so->capture, "A capture file, a session id in --dir, or 'latest'")->required();
  server->add_option("--listen", so->listen, "Listen address ADDR:PORT (port 0: any free port, printed when ready)")
      ->required();
  server->add_option("--timing", so->timing,
                     "original (default: each reply after its recorded delay), fast (no delays) or xN (N times as fast)");
  server->add_option("--sessions", so->sessions,
                     "Live sessions to serve, each from the start of the recording, then exit (default 1; 0: until "
                     "SIGINT/SIGTERM)");
  server->add_option("--tls-cert", so->tls_cert, "PEM certificate for STARTTLS (default: the relay's self-signed one)");
  server->add_option("--tls-key", so->tls_key, "PEM private key for --tls-cert");
  server->add_option("--dir", so->dir, "Capture directory for session ids and 'latest' (default: the run default)");
  server->add_option("--client-idle", so->client_idle,
                     "Close a client that sends nothing for this long with 421 4.4.2, as the relay's "
                     "timeouts.client_idle does (seconds or \"250ms\", \"5s\", \"5m\"; default 300)");
  server->add_flag("--compare-message", so->compare_message,
                   "Count a message that differs from the recorded one as a divergence (default: reported, not "
                   "counted; a live client writes its own Date and Message-ID)");
  server->add_flag("--compare-client-name", so->compare_client_name,
                   "Count an EHLO or HELO naming another client than recorded as a divergence (default: reported, "
                   "not counted; a live client sends its own host name)");
  server->add_option("--tls-on-connect", so->tls_on_connect, tls_on_connect_help);
  server->add_flag("--json", so->json, "One JSON document per live session (one per line)");
  server->footer("Prints 'mailtap replay: listening on ADDR:PORT, ...' when ready (with --json: {\"listening\": "
                 "\"ADDR:PORT\", ...}), then a report per session as it ends. SIGINT or SIGTERM answers each live "
                 "session 421 4.3.2 and reports it as stopped. Exit codes: 0 every session followed the recording, "
                 "1 a client diverged (or was stopped), 2 usage or an unreadable capture.");
  server->callback([so, &exit_code] { run_server(*so, exit_code); });

  auto* client = replay->add_subcommand(
      "client", "Re-drive the recorded client side against a server and compare each reply with the recording");
  auto co = std::make_shared<client_opts>();
  client->add_option("capture", co->captures,
                     "Capture files, session ids in --dir, directories (every capture in them, oldest first: by "
                     "the start time in each capture's header), or 'latest'")
      ->required();
  client->add_option("--to", co->to, "The server to replay against, HOST:PORT")->required();
  client->add_option("--timing", co->timing,
                     "fast (default: no pauses), original (the recorded client's pauses) or xN (N times as fast)");
  client->add_option("-j,--jobs", co->jobs, "Captures replayed at once (default 1)");
  client->add_option("--junit", co->junit, "Also write JUnit XML here (one testcase per capture)");
  client->add_option("--auth-user", co->auth_user, "Run recorded AUTH PLAIN/LOGIN with this user (else AUTH is skipped)");
  client->add_option("--auth-password", co->auth_password,
                     "The password for --auth-user (visible to ps: --auth-password-file or $MAILTAP_AUTH_PASSWORD "
                     "keep it out of sight)");
  client->add_option("--auth-password-file", co->auth_password_file, "A file whose first line is the password for --auth-user");
  client->add_option("--reply-timeout", co->reply_timeout,
                     "How long to wait for each reply before the replay ends with no_reply (seconds or \"30s\", "
                     "\"5m\"; default 120)");
  client->add_flag("--compare-text", co->compare_text, "Also compare each reply's text (default: codes and EHLO keywords)");
  client->add_option("--dir", co->dir, "Capture directory for session ids and 'latest' (default: the run default)");
  client->add_option("--tls-on-connect", co->tls_on_connect, tls_on_connect_help);
  client->add_flag("--json", co->json, "One JSON document per capture (one per line), then a summary with several");
  client->footer("Compares each reply's basic code, enhanced code and (for EHLO) capability keywords with the "
                 "recording, and shows each step's recorded and live latency. Exit codes: 0 every reply matched, 1 "
                 "a replay diverged or the server could not be reached (result UNREACHABLE), 2 usage or an "
                 "unreadable capture.");
  client->callback([co, &exit_code] { run_client(*co, exit_code); });
}

}  // namespace mailtap::cli
