// Names the failure mode of one refusal: first from its stage, basic code and enhanced code
// (classify_by_code), then, when the code leaves it generic, from a known phrasing of the
// common MTAs and gateways (phrasings.cpp). A phrasing refines, it never overrides a
// specific code. Pure; thread-safe.
#pragma once
#include <optional>
#include <string>
#include <string_view>

#include "protocol/phase.hpp"

namespace mailtap::diagnose {

struct classification {
  std::string mode;       // an id of modes.hpp
  bool specific = false;  // the code alone names it (a phrasing may not change it)
};

classification classify_by_code(protocol::phase ph, int code, std::string_view enhanced);

struct phrasing_match {
  std::string_view vendor;   // postfix, exim, microsoft, gmail, proofpoint, mimecast, or "" (common wording)
  std::string_view mode;     // the mode the wording points to
};

// The first known phrasing in `text` (case-insensitive) whose mode fits a reply of `code`'s
// class; nullopt when none is recognised.
std::optional<phrasing_match> match_phrasing(std::string_view text, int code);

// The MTA or gateway a greeting or reply names ("ESMTP Postfix", "Microsoft ESMTP MAIL
// Service", "mx.google.com", "pphosted", "mimecast"), or "".
std::string_view vendor_of(std::string_view text);

struct reply_verdict {
  std::string mode;
  std::string vendor;      // the phrasing's vendor, when one was recognised
  bool refined = false;    // the phrasing chose the mode (the code was generic)
};

// classify_by_code, refined by match_phrasing.
reply_verdict classify(protocol::phase ph, int code, std::string_view enhanced, std::string_view text);

}  // namespace mailtap::diagnose
