// A finding: what diagnose says about one thing in a capture, with the records that show it.
// Plain values, built by the checks (checks/) and rendered by report.cpp. The `id` strings
// are the stable vocabulary of `mailtap diagnose --json` (diagnose/README.md lists them).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailtap::diagnose {

enum class severity { error, warning, info };
std::string_view to_string(severity s);

// Who produced what the finding is about.
enum class origin {
  server,     // the destination (a reply from the upstream leg)
  relay,      // mailtap itself, not because of a fault (a refusal, an unreachable upstream)
  injected,   // a fault rule (the capture's fault record names it)
  client,     // the sending client (its commands, its timing)
  none,       // not about one party (a timing pattern, a TLS setting)
};
std::string_view to_string(origin o);

// One record of the capture, by time, as the finding cites it.
struct evidence_item {
  std::uint64_t t_us = 0;
  std::string record;       // the capture record type: reply, command, note, fault, tls, stage, transaction, end, bytes
  std::string text;         // the record as a transcript line ("S< 552 5.2.2 Mailbox full")
};

struct reply_ref {
  int code = 0;
  std::string enhanced;
  std::string text;         // first line, without the enhanced code
};

struct finding {
  std::string id;           // failure mode or check: "mailbox_full", "tls_not_verified", ...
  severity level = severity::info;
  std::string stage;        // a phase name (protocol/phase.hpp), or "session"
  std::string title;        // one line
  std::string explanation;  // plain words: what happened and why it matters
  std::string action;       // what to do about it
  origin source = origin::none;
  std::string rule;         // the fault rule, when injected
  std::optional<reply_ref> reply;
  std::string basic_meaning;      // of reply->code (RFC 5321)
  std::string enhanced_meaning;   // of reply->enhanced (RFC 3463 / IANA), "" without one
  std::string vendor;       // a recognised phrasing's MTA or gateway: postfix, exim, microsoft, gmail, proofpoint, mimecast
  std::string queue_id;     // proof of hand-off: the destination's queue id, when it gave one
  std::vector<evidence_item> evidence;
};

}  // namespace mailtap::diagnose
