// What a reply code means: the basic code (RFC 5321 4.2.2 and 4.2.3, with the codes of RFC
// 4954 for AUTH and RFC 3207 for STARTTLS) and the enhanced status code (RFC 3463 and the
// IANA "SMTP Enhanced Status Codes" registry, whose entries are the data in
// enhanced_codes.cpp). Pure lookups over constant tables; thread-safe.
#pragma once
#include <optional>
#include <string>
#include <string_view>

#include "protocol/phase.hpp"

namespace mailtap::diagnose {

// One entry of the registry: "X.1.1" and "Bad destination mailbox address".
struct enhanced_entry {
  std::string_view code;    // "X.subject.detail"
  std::string_view title;
};

// The RFC 5321 meaning of a basic code ("Requested mail action aborted: exceeded storage
// allocation" for 552), or, for a code RFC 5321 does not list, its class and category
// from the first two digits (4.2.1).
std::string basic_meaning(int code);

// The meaning of `code` as the reply to a command of phase `ph`: RFC 5321 defines some codes for
// one command alone (551 "User not local", a reply to RCPT, 3.4 and 4.3.2); to another command
// such a code says only its class and category (Postfix's "551 5.0.0 Discarded N bytes after
// earlier error" to a BDAT chunk).
std::string basic_meaning(int code, protocol::phase ph);

// The registry's title of an enhanced code ("5.2.2" -> "Mailbox full"); for an unlisted
// detail, the subject's "other or undefined" entry with the code named; nullopt for a code
// that is not an enhanced code. The class (2, 4, 5) is prefixed: "permanent failure".
std::optional<std::string> enhanced_meaning(std::string_view enhanced);

// The registry entry for "X.s.d" exactly (nullptr when not registered).
const enhanced_entry* find_enhanced(std::string_view subject_detail);

// The whole registry table, in registry order (for tests and documentation).
std::size_t enhanced_table_size();
const enhanced_entry& enhanced_at(std::size_t i);

}  // namespace mailtap::diagnose
