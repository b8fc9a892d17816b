// mailtap entry point: builds the command line and maps parse errors to exit code 2
// with a one-line message naming the bad input.
#include <cstdio>

#include "relay/cli.hpp"

int main(int argc, char** argv) {
  CLI::App app{"mailtap: an inline SMTP relay that records, times, breaks and replays mail conversations"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mailtap 0.1.0");
  int exit_code = mailtap::cli::exit_ok;
  mailtap::cli::register_run(app, exit_code);
  mailtap::cli::register_show(app, exit_code);
  mailtap::cli::register_check_config(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "mailtap: %s (see 'mailtap --help')\n", e.what());
    return mailtap::cli::exit_usage;
  }
  return exit_code;
}
