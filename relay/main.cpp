// mailtap entry point: builds the command line and maps parse errors to exit code 2
// with a one-line message naming the bad input.
#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "mailtap/version.hpp"
#include "relay/cli.hpp"

namespace {

// CLI11 reports a stray word as "arguments were not expected"; a user who mistyped a
// subcommand wants to hear which word was not one, and which ones there are.
bool names_unknown_subcommand(const CLI::App& app, int argc, char** argv) {
  if (argc < 2) return false;
  const std::string_view word = argv[1];
  if (word.empty() || word.front() == '-') return false;
  std::string known;
  for (const auto* sub : app.get_subcommands({})) {
    if (sub->get_name() == word) return false;
    known += known.empty() ? "" : ", ";
    known += sub->get_name();
  }
  std::fprintf(stderr, "mailtap: unknown subcommand '%.*s' (expected one of %s; see 'mailtap --help')\n",
               static_cast<int>(std::min<std::size_t>(word.size(), 80)), word.data(), known.c_str());
  return true;
}

// CLI11 reports a command given without the subcommand it needs (`mailtap captures`) as "A
// subcommand is required", and one given a word that is none of its subcommands (`mailtap
// captures bogus`) the same way; say which word was not one, or that none was given, and which
// ones the command has, as an unknown top-level subcommand does (names_unknown_subcommand).
// False when the error is another one.
bool names_missing_subcommand(const CLI::App& app) {
  const CLI::App* command = &app;
  std::string words = "mailtap";
  for (auto parsed = command->get_subcommands(); !parsed.empty(); parsed = command->get_subcommands()) {
    command = parsed.front();
    words += " " + command->get_name();
  }
  if (command->get_require_subcommand_min() == 0) return false;
  std::string known;
  for (const auto* sub : command->get_subcommands({})) {
    known += known.empty() ? "" : ", ";
    known += sub->get_name();
  }
  // The first word the command took for none of its options or subcommands, unless an unknown
  // option came first (its value would look like a word).
  for (const auto& word : command->remaining()) {
    if (word.empty() || word.front() == '-') break;
    std::fprintf(stderr, "%s: unknown subcommand '%.*s' (expected one of %s; see '%s --help')\n", words.c_str(),
                 static_cast<int>(std::min<std::size_t>(word.size(), 80)), word.data(), known.c_str(), words.c_str());
    return true;
  }
  std::fprintf(stderr, "%s: a subcommand is required (expected one of %s; see '%s --help')\n", words.c_str(),
               known.c_str(), words.c_str());
  return true;
}

// CLI11's error for an option that takes one value given more than once ("NAME: At Most 1
// required but received N", CLI::ArgumentMismatch::AtMost) said plainly: "NAME given N times;
// give it once". Null for any other mismatch.
std::optional<std::string> repeated_option(std::string_view what) {
  constexpr std::string_view marker = ": At Most 1 required but received ";
  const auto at = what.find(marker);
  if (at == std::string_view::npos || at == 0) return std::nullopt;
  const std::string_view count = what.substr(at + marker.size());
  if (count.empty() || count.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  return std::string(what.substr(0, at)) + " given " + std::string(count) + " times; give it once";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mailtap: an inline SMTP relay that records, times, breaks and replays mail conversations"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(mailtap::name_and_version));
  int exit_code = mailtap::cli::exit_ok;
  mailtap::cli::register_run(app, exit_code);
  mailtap::cli::register_show(app, exit_code);
  mailtap::cli::register_check_config(app, exit_code);
  mailtap::cli::register_captures(app, exit_code);
  mailtap::cli::register_diagnose(app, exit_code);
  mailtap::cli::register_export(app, exit_code);
  mailtap::cli::register_replay(app, exit_code);
  mailtap::cli::register_admin_clients(app, exit_code);
  if (names_unknown_subcommand(app, argc, argv)) return mailtap::cli::exit_usage;
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::RequiredError& e) {
    const bool no_subcommand = std::string_view(e.what()).starts_with("A subcommand");
    if (!no_subcommand || !names_missing_subcommand(app))
      std::fprintf(stderr, "mailtap: %s (see 'mailtap --help')\n", e.what());
    return mailtap::cli::exit_usage;
  } catch (const CLI::ArgumentMismatch& e) {
    // A single-valued option given twice: CLI11 says "--admin: At Most 1 required but received 2".
    if (auto repeated = repeated_option(e.what())) std::fprintf(stderr, "mailtap: %s\n", repeated->c_str());
    else std::fprintf(stderr, "mailtap: %s (see 'mailtap --help')\n", e.what());
    return mailtap::cli::exit_usage;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "mailtap: %s (see 'mailtap --help')\n", e.what());
    return mailtap::cli::exit_usage;
  }
  return exit_code;
}
