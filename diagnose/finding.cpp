// Names of the finding vocabulary's enums, as `mailtap diagnose --json` prints them.
#include "diagnose/finding.hpp"

namespace mailtap::diagnose {

std::string_view to_string(severity s) {
  switch (s) {
    case severity::error: return "error";
    case severity::warning: return "warning";
    case severity::info: return "info";
  }
  return "info";
}

std::string_view to_string(origin o) {
  switch (o) {
    case origin::server: return "server";
    case origin::relay: return "relay";
    case origin::injected: return "injected";
    case origin::client: return "client";
    case origin::none: return "none";
  }
  return "none";
}

}  // namespace mailtap::diagnose
