// `mailtap captures prune [--dir DIR] [--max-age DURATION] [--max-bytes SIZE]`: the retention
// limits of `run` (README "Captures", captures/retention.hpp), applied once, on demand, with
// the index rows of what it removes; list, search and reindex are in cli_captures_index.cpp.
#include <cstdio>
#include <memory>
#include <string>

#include "captures/index.hpp"
#include "captures/retention.hpp"
#include "relay/cli.hpp"
#include "relay/config.hpp"

namespace mailtap::cli {

namespace {

struct prune_flags {
  std::string dir, max_age, max_bytes;
};

int prune(const prune_flags& f) {
  captures::retention limits;
  std::string why;
  if (!f.max_age.empty() && !(limits.max_age = parse_captures_max_age(f.max_age, why))) {
    std::fprintf(stderr, "mailtap captures prune: --max-age '%s': %s\n", f.max_age.c_str(), why.c_str());
    return exit_usage;
  }
  if (!f.max_bytes.empty() && !(limits.max_bytes = parse_captures_max_bytes(f.max_bytes, why))) {
    std::fprintf(stderr, "mailtap captures prune: --max-bytes '%s': %s\n", f.max_bytes.c_str(), why.c_str());
    return exit_usage;
  }
  if (!limits.any()) {
    std::fprintf(stderr, "mailtap captures prune: give --max-age, --max-bytes or both\n");
    return exit_usage;
  }
  const std::filesystem::path dir = f.dir.empty() ? default_captures_dir() : std::filesystem::path(f.dir);
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    std::fprintf(stderr, "mailtap captures prune: %s: %s\n", dir.c_str(), directory_problem(dir).c_str());
    return exit_usage;
  }
  const auto r = captures::prune_with_index(dir, limits, std::chrono::system_clock::now());
  for (const auto& e : r.errors) std::fprintf(stderr, "mailtap captures prune: %s\n", e.c_str());
  // What it removed, oldest first, by session id (what show, diagnose and export take).
  for (const auto& id : r.removed_sessions) std::printf("removed %s\n", id.c_str());
  std::printf("%s: removed %llu capture(s), %llu bytes; %llu left, %llu bytes", dir.c_str(),
              static_cast<unsigned long long>(r.removed), static_cast<unsigned long long>(r.removed_bytes),
              static_cast<unsigned long long>(r.kept), static_cast<unsigned long long>(r.kept_bytes));
  if (r.left_unfinished > 0)
    std::printf(" (%llu past a limit but unfinished or in progress, kept)",
                static_cast<unsigned long long>(r.left_unfinished));
  if (r.not_captures > 0)
    std::printf("; %llu *.jsonl file(s) not captures (no header naming the file: copies, other programs' files) "
                "left alone, not counted",
                static_cast<unsigned long long>(r.not_captures));
  // max_bytes counts the captures only: removing rows does not shrink the index's file
  // (README "Keeping the disk"), so it is named apart.
  if (auto index_bytes = std::filesystem::file_size(dir / captures::index_file_name, ec); !ec)
    std::printf("; %s %llu bytes, not counted", std::string(captures::index_file_name).c_str(),
                static_cast<unsigned long long>(index_bytes));
  std::printf("\n");
  if (!r.errors.empty()) return exit_problem;
  return r.over_max_bytes ? exit_problem : exit_ok;
}

}  // namespace

void register_captures(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("captures", "Find sessions in the capture directory (list, search, reindex) and keep it within bounds (prune)");
  cmd->require_subcommand(1);
  auto* p = cmd->add_subcommand("prune",
                                "Remove finished captures past the limits, oldest first (never one without its end "
                                "record: in progress or cut by a crash)");
  auto f = std::make_shared<prune_flags>();
  p->add_option("--dir", f->dir,
                "Capture directory (default $MAILTAP_CAPTURES, else $XDG_STATE_HOME/mailtap/captures, else "
                "~/.local/state/mailtap/captures)");
  p->add_option("--max-age", f->max_age, "Remove finished captures last written longer ago than this, e.g. 7d, 12h, 30m");
  p->add_option("--max-bytes", f->max_bytes, "Remove the oldest finished captures while the directory holds more, e.g. 10GiB");
  p->callback([f, &exit_code] { exit_code = prune(*f); });
  register_captures_index(*cmd, exit_code);
}

}  // namespace mailtap::cli
