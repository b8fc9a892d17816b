// `mailtap export pcap CAPTURE -o FILE [--keep-ports]` and `mailtap export eml CAPTURE -o DIR`:
// a capture for other tools (captures/pcap_export.hpp, captures/eml_export.hpp; README
// "Exporting"). CAPTURE is named as for `show` (a path, a session id in --dir, or 'latest').
#include <cstdio>
#include <memory>
#include <string>

#include "captures/eml_export.hpp"
#include "captures/pcap_export.hpp"
#include "relay/cli.hpp"

namespace mailtap::cli {

namespace {

struct export_flags {
  std::string capture, dir, output;
  bool keep_ports = false;
};

// The one capture `name` stands for, read; nullopt after a line on stderr.
std::optional<captures::capture> read_one(const export_flags& f, const char* command) {
  std::string error;
  const auto paths = resolve_captures(f.capture, f.dir, error);
  if (!error.empty() || paths.size() != 1) {
    // A directory's captures come oldest first (resolve_captures): the line names the oldest and
    // the newest, so that one of them can be given.
    if (error.empty() && paths.size() > 1)
      error = f.capture + ": names " + std::to_string(paths.size()) + " captures (oldest " +
              paths.front().filename().string() + ", newest " + paths.back().filename().string() +
              "); export takes one";
    std::fprintf(stderr, "mailtap export %s: %s\n", command, error.c_str());
    return std::nullopt;
  }
  auto cap = captures::read_capture(paths.front(), error);
  if (!cap) std::fprintf(stderr, "mailtap export %s: %s\n", command, error.c_str());
  return cap;
}

int export_pcap(const export_flags& f) {
  auto cap = read_one(f, "pcap");
  if (!cap) return exit_usage;
  std::size_t frames = 0;
  std::string error;
  if (!captures::write_pcap(*cap, f.output, {.keep_ports = f.keep_ports}, frames, error)) {
    std::fprintf(stderr, "mailtap export pcap: %s\n", error.c_str());
    return exit_usage;
  }
  std::printf("%s: %zu frames\n", f.output.c_str(), frames);
  return exit_ok;
}

int export_eml(const export_flags& f) {
  auto cap = read_one(f, "eml");
  if (!cap) return exit_usage;
  std::string error;
  auto written = captures::write_eml_files(*cap, f.output, error);
  if (!written) {
    std::fprintf(stderr, "mailtap export eml: %s\n", error.c_str());
    return exit_usage;
  }
  if (written->empty()) {
    // Nothing to export is the command finding a problem (exit 1), not an empty success.
    std::fprintf(stderr, "mailtap export eml: %s: no message in this capture (the client sent no DATA or BDAT "
                 "message to its end): nothing written\n", cap->path.c_str());
    return exit_problem;
  }
  for (const auto& p : *written) std::printf("%s\n", p.c_str());
  return exit_ok;
}

void add_common(CLI::App* cmd, export_flags& f, const char* output_help) {
  cmd->add_option("capture", f.capture, "A capture file, a session id in --dir, or 'latest' (the newest in --dir)")
      ->required();
  cmd->add_option("-o,--output", f.output, output_help)->required();
  cmd->add_option("--dir", f.dir, "Capture directory for session ids and 'latest' (default: the run default)");
}

}  // namespace

void register_export(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("export", "Write a capture for other tools: a pcap for Wireshark, its messages as .eml");
  cmd->require_subcommand(1);
  auto pf = std::make_shared<export_flags>();
  auto* pcap = cmd->add_subcommand(
      "pcap",
      "Write both legs (client <-> mailtap, mailtap <-> upstream) as synthesized TCP connections at the recorded "
      "times; TLS sessions as their decrypted conversation (after STARTTLS, in a second connection)");
  add_common(pcap, *pf, "The pcap file to write");
  pcap->add_flag("--keep-ports", pf->keep_ports,
                 "Keep the recorded server ports (default: a port other than 25 or 587 is written as 25, so that "
                 "Wireshark reads SMTP without 'Decode As')");
  pcap->callback([pf, &exit_code] { exit_code = export_pcap(*pf); });
  auto ef = std::make_shared<export_flags>();
  auto* eml = cmd->add_subcommand(
      "eml", "Write each message the client sent (DATA dot-unstuffed, or its BDAT chunks) as DIR/<session>-<n>.eml");
  add_common(eml, *ef, "The directory to write the .eml files in (created if missing)");
  eml->callback([ef, &exit_code] { exit_code = export_eml(*ef); });
}

}  // namespace mailtap::cli
