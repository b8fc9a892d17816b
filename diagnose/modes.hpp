// The failure modes diagnose names, as data: each mode's stable id, a title, a plain
// explanation and what to do. The field failures (README "Scenarios") are here, plus the
// generic outcomes a reply code alone supports. Pure lookup; thread-safe.
#pragma once
#include <string_view>

namespace mailtap::diagnose {

struct mode_text {
  std::string_view id;
  std::string_view title;
  std::string_view explanation;
  std::string_view action;
};

// The mode with that id; an unknown id gives the generic "permanent_failure" entry.
const mode_text& mode(std::string_view id);
bool is_mode(std::string_view id);

}  // namespace mailtap::diagnose
