// The mailtap command line (CLI11): one subcommand per file, registered by main.cpp.
// Each register_* adds its subcommand and returns a pointer to the exit code it will set.
// Exit codes (README.md, "Command line"): 0 success, 1 the command found a problem, 2 usage or input error.
#pragma once
#include <CLI/CLI.hpp>

namespace mailtap::cli {

inline constexpr int exit_ok = 0;
inline constexpr int exit_problem = 1;
inline constexpr int exit_usage = 2;

void register_run(CLI::App& app, int& exit_code);
void register_show(CLI::App& app, int& exit_code);
void register_check_config(CLI::App& app, int& exit_code);
void register_captures(CLI::App& app, int& exit_code);

}  // namespace mailtap::cli
