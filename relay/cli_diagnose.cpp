// `mailtap diagnose CAPTURE|DIR... [--json] [--dir DIR]`: explains captures (diagnose/).
// One capture: its report. Several (a directory): a summary line per capture, then the
// reports of those with errors or warnings; with --json, one document per line.
// Exit codes (README "Command line"): 0 no error-severity finding, 1 at least one, 2 a name
// that resolves to nothing or a capture that cannot be read (one line naming the file).
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "captures/reader.hpp"
#include "diagnose/diagnose.hpp"
#include "diagnose/report.hpp"
#include "relay/cli.hpp"

namespace mailtap::cli {

namespace {

namespace fs = std::filesystem;

// What one capture contributes to the output. Captures are read and diagnosed one at a
// time and only their rendered text is kept, so a directory of many captures needs memory
// for its report, not for every capture model at once.
struct report {
  std::string json;      // the --json document
  std::string summary;   // the directory summary line
  std::string text;      // the full text report
  bool error = false;    // an error-severity finding
  bool problem = false;  // an error or a warning
};

// Reports for every capture the names stand for; false when any name or file could not be
// read (each problem is one line on stderr, the others are still reported).
bool diagnose_all(const std::vector<std::string>& names, const std::string& dir, bool json,
                  std::vector<report>& out, bool& several) {
  bool ok = true;
  for (const auto& name : names) {
    std::string error;
    auto paths = resolve_captures(name, dir, error);
    if (!error.empty()) {
      std::fprintf(stderr, "mailtap diagnose: %s\n", error.c_str());
      ok = false;
    }
    std::error_code ec;
    several = several || paths.size() > 1 || fs::is_directory(name, ec);
    for (const auto& path : paths) {
      std::string read_error;
      auto cap = captures::read_capture(path, read_error);
      if (!cap) {
        std::fprintf(stderr, "mailtap diagnose: %s\n", read_error.c_str());
        ok = false;
        continue;
      }
      const diagnose::diagnosis d = diagnose::diagnose_capture(*cap);
      report r;
      r.error = d.has_error();
      r.problem = r.error || d.count(diagnose::severity::warning) > 0;
      if (json) {
        r.json = diagnose::render_json(d);
      } else {
        r.summary = diagnose::render_summary_line(d);
        r.text = diagnose::render_text(d);
      }
      out.push_back(std::move(r));
    }
  }
  several = several || out.size() > 1;
  return ok;
}

}  // namespace

void register_diagnose(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "diagnose", "Explain captures: each refusal's meaning, the failure mode, timing, TLS, proof of hand-off");
  struct opts { std::vector<std::string> captures; std::string dir; bool json = false; };
  auto o = std::make_shared<opts>();
  cmd->add_option("capture", o->captures,
                  "Capture files, session ids in --dir, directories (every capture in them), or 'latest' "
                  "(the newest in --dir)")
      ->required();
  cmd->add_option("--dir", o->dir, "Capture directory for session ids and 'latest' (default: the run default)");
  cmd->add_flag("--json", o->json, "One JSON document per capture (one per line); fields in diagnose/README.md");
  cmd->callback([o, &exit_code] {
    std::vector<report> all;
    bool several = false;
    const bool readable = diagnose_all(o->captures, o->dir, o->json, all, several);
    bool error_found = false;
    for (const auto& r : all) error_found = error_found || r.error;
    if (o->json) {
      for (const auto& r : all) std::cout << r.json << "\n";
    } else if (!several) {
      for (const auto& r : all) std::cout << r.text;
    } else {
      for (const auto& r : all) std::cout << r.summary;
      for (const auto& r : all)
        if (r.problem) std::cout << "\n" << r.text;
    }
    std::cout.flush();
    exit_code = !readable ? exit_usage : error_found ? exit_problem : exit_ok;
  });
}

}  // namespace mailtap::cli
