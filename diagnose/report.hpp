// The `mailtap diagnose` report of one diagnosis: text that fits a screen for a typical
// failed delivery, one summary line (for a directory of captures), or one JSON document
// whose fields diagnose/README.md documents. Pure; thread-safe. Wire text is made terminal-
// safe (text) or valid UTF-8 (JSON) as `mailtap show` does (captures/show.hpp).
#pragma once
#include <string>

#include "diagnose/diagnose.hpp"

namespace mailtap::diagnose {

// "x.jsonl  rejected  2 errors, 1 warning: mailbox_full at rcpt (552 5.2.2)" and a newline.
std::string render_summary_line(const diagnosis& d);

// Header (capture, session, outcome, end), then each finding: severity, id, stage, origin,
// reply and its meaning, why, what to do, and the evidence records by time. Ends with a newline.
std::string render_text(const diagnosis& d);

// One JSON object, no trailing newline.
std::string render_json(const diagnosis& d);

}  // namespace mailtap::diagnose
