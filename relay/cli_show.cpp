// `mailtap show CAPTURE... [--json]` and `mailtap check-config FILE`.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string_view>
#include <system_error>
#include <vector>

#include <boost/json.hpp>

#include "admin/address_policy.hpp"
#include "captures/index_summary.hpp"
#include "captures/reader.hpp"
#include "captures/show.hpp"
#include "policies/engine.hpp"
#include "relay/cli.hpp"
#include "relay/session_id.hpp"
#include "relay/config.hpp"

namespace mailtap::cli {

namespace {

namespace fs = std::filesystem;

// The word that names the newest capture in the capture directory.
constexpr std::string_view latest_word = "latest";

fs::path capture_dir(const std::string& dir) { return dir.empty() ? default_captures_dir() : fs::path(dir); }

bool is_capture_file(const fs::directory_entry& e) {
  std::error_code ec;
  return e.is_regular_file(ec) && e.path().extension() == ".jsonl";
}

// The start time in a capture's header (its first line's started_at, captures/FORMAT.md), in µs
// since the epoch; none when the first line holds no readable one (a header not written yet, a
// session just begun; another program's JSON Lines). Only the first 64 KiB are read: a header
// is far shorter, and a large file without a line end is no capture.
std::optional<std::int64_t> started_at_us(const fs::path& path) {
  constexpr std::streamsize most = 64 * 1024;
  std::ifstream in(path, std::ios::binary);
  std::string first(static_cast<std::size_t>(most), '\0');
  if (!in.getline(first.data(), most) && in.gcount() == 0) return std::nullopt;
  first.resize(std::strlen(first.c_str()));
  boost::system::error_code ec;
  const auto header = boost::json::parse(first, ec);
  const auto* started = !ec && header.is_object() ? header.as_object().if_contains("started_at") : nullptr;
  if (!started || !started->is_string()) return std::nullopt;
  return captures::parse_rfc3339_us(std::string_view(started->as_string()));
}

// Captures oldest first, as README "Command line" says of a directory, for every command that
// takes one (show, diagnose, export, replay client): by the start time each header holds, to
// the microsecond. File names need not say it: a renamed copy (b-first.jsonl holding the older
// session sorted after a-second.jsonl), two relay runs or relays on one directory in the same
// second (a name holds the start second, the run's nonce, the session number: relay/session.cpp).
// Those without a start time come last, in the order given (captures_in: by name).
void oldest_first(std::vector<fs::path>& paths) {
  std::vector<std::pair<std::optional<std::int64_t>, fs::path>> keyed;
  keyed.reserve(paths.size());
  for (auto& p : paths) keyed.emplace_back(started_at_us(p), std::move(p));
  std::stable_sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
    if (!a.first || !b.first) return a.first.has_value() && !b.first.has_value();
    return *a.first < *b.first;
  });
  for (std::size_t i = 0; i < paths.size(); ++i) paths[i] = std::move(keyed[i].second);
}

// A directory's capture files (*.jsonl), by name; `error` when it cannot be listed.
std::vector<fs::path> listed_in(const fs::path& dir, std::string& error) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (is_capture_file(*it)) out.push_back(it->path());
  if (ec) error = dir.string() + ": cannot list the directory: " + ec.message();
  std::sort(out.begin(), out.end());
  return out;
}

// A directory's captures, oldest first.
std::vector<fs::path> captures_in(const fs::path& dir, std::string& error) {
  auto out = listed_in(dir, error);
  oldest_first(out);
  return out;
}

// The newest capture the relay named in `dir` (a renamed copy or another program's *.jsonl is
// never it). Its name begins with its UTC start second ("20261205-184736"), so only the files of
// the last second are read, and put oldest first like any others: the last is the newest (one
// whose header is not written yet, a session just begun, among them).
std::optional<fs::path> latest_in(const fs::path& dir, std::string& error) {
  auto all = listed_in(dir, error);
  std::erase_if(all, [](const fs::path& p) { return !is_relay_session_id(p.stem().string()); });
  if (all.empty()) return std::nullopt;
  constexpr std::size_t second_prefix = 15;
  auto second_of = [](const fs::path& p) { return p.filename().string().substr(0, second_prefix); };
  const std::string last_second = second_of(all.back());
  std::erase_if(all, [&](const fs::path& p) { return second_of(p) != last_second; });
  oldest_first(all);
  return all.back();
}

// Prints one capture; false (and a line on stderr) when it cannot be read.
bool show_one(const fs::path& path, bool json, bool separate) {
  std::string error;
  auto cap = captures::read_capture(path, error);
  if (!cap) {
    std::fprintf(stderr, "mailtap show: %s\n", error.c_str());
    return false;
  }
  // Several captures: JSON Lines (one document each), or text reports with a blank line between.
  if (json) std::cout << captures::render_json(*cap) << "\n";
  else std::cout << (separate ? "\n" : "") << captures::render_text(*cap);
  std::cout.flush();
  return true;
}

}  // namespace

// A capture is named by its path, by its session id within --dir (default captures dir), by
// a directory (all its captures) or by "latest" (the newest in --dir). A name that is none of
// these sets `error`, saying where it was looked for.
std::vector<fs::path> resolve_captures(const std::string& name, const std::string& dir, std::string& error) {
  std::error_code ec;
  if (name == latest_word && !fs::exists(name, ec)) {
    // Only a capture the relay named has its start in its name: a renamed copy or another
    // program's *.jsonl ("app.jsonl" sorts after every date) is never the latest.
    auto newest = latest_in(capture_dir(dir), error);
    if (!newest && error.empty()) error = capture_dir(dir).string() + ": no captures to show as 'latest'";
    if (!newest) return {};
    return {*newest};
  }
  fs::path p(name);
  if (fs::is_directory(p, ec)) {
    auto all = captures_in(p, error);
    if (all.empty() && error.empty()) error = p.string() + ": no captures (*.jsonl) in this directory";
    return all;
  }
  if (fs::exists(p, ec)) return {p};   // a FIFO too (`<(zcat f)`): read as it comes, like cat
  // A path that cannot be looked at is not missing: a file in a directory the user cannot enter
  // (another user's, mode 0700) was reported "no such file".
  if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory) {
    error = name + ": cannot reach it: " + ec.message();
    return {};
  }
  const fs::path base = capture_dir(dir);
  for (auto candidate : {base / name, base / (name + ".jsonl")})
    if (fs::exists(candidate, ec)) return {candidate};
  // A newcomer trial: "nosuch: cannot open: No such file or directory" did not say that the
  // name was looked for as a session id in the capture directory too.
  if (name.find('/') != std::string::npos || p.extension() == ".jsonl") error = name + ": no such file";
  else error = name + ": no such file, and no session '" + name + "' in " + base.string();
  return {};
}

void register_show(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("show", "Print captures: transcript with timestamps and a stage waterfall");
  struct opts { std::vector<std::string> captures; std::string dir; bool json = false; };
  auto o = std::make_shared<opts>();
  cmd->add_option("capture", o->captures,
                  "Capture files, session ids in --dir, directories (all their captures), or 'latest' "
                  "(the newest in --dir)")
      ->required();
  cmd->add_option("--dir", o->dir, "Capture directory for session ids and 'latest' (default: the run default)");
  cmd->add_flag("--json", o->json, "Print each capture as one JSON document (one per line)");
  cmd->callback([o, &exit_code] {
    exit_code = exit_ok;
    bool printed = false;
    for (const auto& name : o->captures) {
      std::string error;
      auto paths = resolve_captures(name, o->dir, error);
      if (!error.empty()) {
        std::fprintf(stderr, "mailtap show: %s\n", error.c_str());
        exit_code = exit_usage;
      }
      for (const auto& path : paths) {
        if (show_one(path, o->json, printed)) printed = true;
        else exit_code = exit_usage;
      }
    }
  });
}

namespace {

// What `run` refuses as it starts (server.cpp, configured_upstream_refusal): an upstream that is
// one of mailtap's own listeners. Here by the addresses as written; run compares them bound.
std::string own_listener_as_upstream(const config& c) {
  if (!c.upstream || c.upstream->port == 0) return {};
  auto same = [&](const endpoint& e) { return e.port == c.upstream->port && e.host == c.upstream->host; };
  const char* what = same(c.listen)                               ? "SMTP listener (listen)"
                     : c.tls.listen && same(*c.tls.listen)        ? "SMTPS listener ([tls] listen)"
                     : !c.admin_off && same(c.admin)              ? "admin API (admin)"
                                                                  : nullptr;
  if (!what) return {};
  return "upstream " + c.upstream->to_string() + " is mailtap's own " + what +
         ": every session would be relayed to mailtap itself";
}

}  // namespace

void register_check_config(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("check-config", "Validate a TOML configuration file or a fault scenario file");
  auto file = std::make_shared<std::string>();
  cmd->add_option("file", *file, "Configuration or scenario file")->required();
  cmd->callback([file, &exit_code] {
    std::string error;
    auto cfg = load_config_file(*file, config{}, error);
    if (!cfg) {
      std::fprintf(stderr, "%s\n", error.c_str());
      exit_code = exit_usage;
      return;
    }
    // The rules together, as the relay would arm them (names unique across files).
    if (auto problem = policies::make_engine(1)->add_all(cfg->faults)) {
      std::fprintf(stderr, "%s: faults: %s\n", file->c_str(), problem->c_str());
      exit_code = exit_usage;
      return;
    }
    // What `run` refuses, unless its environment gives the token (a fifth trial: check-config
    // passed `admin = "0.0.0.0:0"` without one, and run with it exited 2).
    const bool token_from_environment = std::getenv("MAILTAP_ADMIN_TOKEN") || std::getenv("MAILTAP_ADMIN_TOKEN_FILE");
    if (auto problem = admin::admin_address_problem(*cfg); !problem.empty() && !token_from_environment) {
      std::fprintf(stderr, "%s: %s\n", file->c_str(), problem.c_str());
      exit_code = exit_usage;
      return;
    }
    if (auto problem = own_listener_as_upstream(*cfg); !problem.empty()) {
      std::fprintf(stderr, "%s: %s\n", file->c_str(), problem.c_str());
      exit_code = exit_usage;
      return;
    }
    std::printf("%s: ok (%zu fault rule%s)\n", file->c_str(), cfg->faults.size(), cfg->faults.size() == 1 ? "" : "s");
    exit_code = exit_ok;
  });
}

}  // namespace mailtap::cli
