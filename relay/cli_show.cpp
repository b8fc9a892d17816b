// `mailtap show CAPTURE [--json]` and `mailtap check-config FILE`.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "captures/reader.hpp"
#include "captures/show.hpp"
#include "policies/engine.hpp"
#include "relay/cli.hpp"
#include "relay/config.hpp"

namespace mailtap::cli {

namespace {
// A capture is named by its path, or by its session id within --dir (default captures dir).
std::filesystem::path resolve_capture(const std::string& name, const std::string& dir) {
  std::filesystem::path p(name);
  if (std::filesystem::exists(p)) return p;
  std::filesystem::path base = dir.empty() ? default_captures_dir() : std::filesystem::path(dir);
  for (auto candidate : {base / name, base / (name + ".jsonl")})
    if (std::filesystem::exists(candidate)) return candidate;
  return p;
}
}  // namespace

void register_show(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("show", "Print a capture: transcript with timestamps and a stage waterfall");
  struct opts { std::string capture, dir; bool json = false; };
  auto o = std::make_shared<opts>();
  cmd->add_option("capture", o->capture, "Capture file, or a session id in --dir")->required();
  cmd->add_option("--dir", o->dir, "Capture directory for session ids (default: the run default)");
  cmd->add_flag("--json", o->json, "Print the capture as one JSON document");
  cmd->callback([o, &exit_code] {
    std::string error;
    auto path = resolve_capture(o->capture, o->dir);
    auto cap = captures::read_capture(path, error);
    if (!cap) {
      std::fprintf(stderr, "mailtap show: %s\n", error.c_str());
      exit_code = exit_usage;
      return;
    }
    std::cout << (o->json ? captures::render_json(*cap) + "\n" : captures::render_text(*cap));
    exit_code = exit_ok;
  });
}

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
    std::printf("%s: ok (%zu fault rule%s)\n", file->c_str(), cfg->faults.size(), cfg->faults.size() == 1 ? "" : "s");
    exit_code = exit_ok;
  });
}

}  // namespace mailtap::cli
