// The mailtap command line (CLI11): one subcommand per file, registered by main.cpp.
// Each register_* adds its subcommand and returns a pointer to the exit code it will set.
// Exit codes (README.md, "Command line"): 0 success, 1 the command found a problem, 2 usage or input error.
#pragma once
#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace mailtap::cli {

inline constexpr int exit_ok = 0;
inline constexpr int exit_problem = 1;
inline constexpr int exit_usage = 2;

void register_run(CLI::App& app, int& exit_code);
void register_show(CLI::App& app, int& exit_code);
void register_check_config(CLI::App& app, int& exit_code);
void register_captures(CLI::App& app, int& exit_code);
// `captures list|search|reindex` under the `captures` subcommand (cli_captures_index.cpp).
void register_captures_index(CLI::App& captures_cmd, int& exit_code);
void register_diagnose(CLI::App& app, int& exit_code);
void register_export(CLI::App& app, int& exit_code);
void register_replay(CLI::App& app, int& exit_code);
// `mailtap faults ...` and `mailtap sessions list`: clients of the admin API (cli_admin.cpp).
void register_admin_clients(CLI::App& app, int& exit_code);

// A count option (--limit, --offset): digits only, at most `max`. CLI11 would read "-5" into a
// size_t as a huge number; this says "--limit: -5 is not a whole number from 0 to 500".
inline CLI::Validator count_up_to(std::size_t max) {
  return CLI::Validator(
      [max](const std::string& text) -> std::string {
        const bool digits = !text.empty() && text.size() <= 19 &&
                            text.find_first_not_of("0123456789") == std::string::npos;
        if (digits && std::stoull(text) <= max) return {};
        return text + " is not a whole number from 0 to " + std::to_string(max);
      },
      "0.." + std::to_string(max));
}

// Why `dir` cannot be used as a capture directory: "no such directory" or "not a directory".
inline std::string directory_problem(const std::filesystem::path& dir) {
  std::error_code ec;
  return std::filesystem::exists(dir, ec) ? "not a directory" : "no such directory";
}

// The captures a command-line name stands for (cli_show.cpp): a path, a session id within
// `dir` (default: the run default), a directory (all its captures, in start order) or
// "latest" (the newest in `dir`). `error` is set when a name resolves to nothing (saying
// where it was looked for), or a directory cannot be listed or is empty.
std::vector<std::filesystem::path> resolve_captures(const std::string& name, const std::string& dir,
                                                    std::string& error);

}  // namespace mailtap::cli
