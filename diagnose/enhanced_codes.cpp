// The IANA "SMTP Enhanced Status Codes" registry (RFC 3463 section 3 and the RFCs that
// added entries since, named per row), as data: every class.subject.detail entry with its
// title. The class digit is written X: the same subject and detail mean the same thing in
// class 2 (success), 4 (persistent transient failure) and 5 (permanent failure).
// To add an entry: append its row in subject order; reply_codes_test checks the table.
#include <array>

#include "diagnose/reply_codes.hpp"

namespace mailtap::diagnose {

namespace {

constexpr std::array registry = {
    // X.0 Other or undefined status (RFC 3463 3.1)
    enhanced_entry{"X.0.0", "Other undefined status"},
    // X.1 Addressing status (RFC 3463 3.2)
    enhanced_entry{"X.1.0", "Other address status"},
    enhanced_entry{"X.1.1", "Bad destination mailbox address"},
    enhanced_entry{"X.1.2", "Bad destination system address"},
    enhanced_entry{"X.1.3", "Bad destination mailbox address syntax"},
    enhanced_entry{"X.1.4", "Destination mailbox address ambiguous"},
    enhanced_entry{"X.1.5", "Destination address valid"},
    enhanced_entry{"X.1.6", "Destination mailbox has moved, no forwarding address"},
    enhanced_entry{"X.1.7", "Bad sender's mailbox address syntax"},
    enhanced_entry{"X.1.8", "Bad sender's system address"},
    enhanced_entry{"X.1.9", "Message relayed to non-compliant mailer"},            // RFC 3886
    enhanced_entry{"X.1.10", "Recipient address has null MX"},                     // RFC 7505
    // X.2 Mailbox status (RFC 3463 3.3)
    enhanced_entry{"X.2.0", "Other or undefined mailbox status"},
    enhanced_entry{"X.2.1", "Mailbox disabled, not accepting messages"},
    enhanced_entry{"X.2.2", "Mailbox full"},
    enhanced_entry{"X.2.3", "Message length exceeds administrative limit"},
    enhanced_entry{"X.2.4", "Mailing list expansion problem"},
    // X.3 Mail system status (RFC 3463 3.4)
    enhanced_entry{"X.3.0", "Other or undefined mail system status"},
    enhanced_entry{"X.3.1", "Mail system full"},
    enhanced_entry{"X.3.2", "System not accepting network messages"},
    enhanced_entry{"X.3.3", "System not capable of selected features"},
    enhanced_entry{"X.3.4", "Message too big for system"},
    enhanced_entry{"X.3.5", "System incorrectly configured"},
    enhanced_entry{"X.3.6", "Requested priority was changed"},                     // RFC 6710
    // X.4 Network and routing status (RFC 3463 3.5)
    enhanced_entry{"X.4.0", "Other or undefined network or routing status"},
    enhanced_entry{"X.4.1", "No answer from host"},
    enhanced_entry{"X.4.2", "Bad connection"},
    enhanced_entry{"X.4.3", "Directory server failure"},
    enhanced_entry{"X.4.4", "Unable to route"},
    enhanced_entry{"X.4.5", "Mail system congestion"},
    enhanced_entry{"X.4.6", "Routing loop detected"},
    enhanced_entry{"X.4.7", "Delivery time expired"},
    // X.5 Mail delivery protocol status (RFC 3463 3.6)
    enhanced_entry{"X.5.0", "Other or undefined protocol status"},
    enhanced_entry{"X.5.1", "Invalid command"},
    enhanced_entry{"X.5.2", "Syntax error"},
    enhanced_entry{"X.5.3", "Too many recipients"},
    enhanced_entry{"X.5.4", "Invalid command arguments"},
    enhanced_entry{"X.5.5", "Wrong protocol version"},
    enhanced_entry{"X.5.6", "Authentication exchange line is too long"},           // RFC 4954
    // X.6 Message content or media status (RFC 3463 3.7)
    enhanced_entry{"X.6.0", "Other or undefined media error"},
    enhanced_entry{"X.6.1", "Media not supported"},
    enhanced_entry{"X.6.2", "Conversion required and prohibited"},
    enhanced_entry{"X.6.3", "Conversion required but not supported"},
    enhanced_entry{"X.6.4", "Conversion with loss performed"},
    enhanced_entry{"X.6.5", "Conversion failed"},
    enhanced_entry{"X.6.6", "Message content not available"},                      // RFC 4468
    enhanced_entry{"X.6.7", "Non-ASCII addresses not permitted for that sender/recipient"},   // RFC 6531
    enhanced_entry{"X.6.8", "UTF-8 string reply is required, but not permitted by the SMTP client"},  // RFC 6531
    enhanced_entry{"X.6.9", "UTF-8 header message cannot be transferred to one or more recipients"},  // RFC 6531
    // RFC 6531 registered X.6.10 with X.6.8's meaning; the registry keeps it, marked a duplicate.
    enhanced_entry{"X.6.10", "UTF-8 string reply is required, but not permitted by the SMTP client (a duplicate of X.6.8)"},
    // X.7 Security or policy status (RFC 3463 3.8)
    enhanced_entry{"X.7.0", "Other or undefined security status"},
    enhanced_entry{"X.7.1", "Delivery not authorized, message refused"},
    enhanced_entry{"X.7.2", "Mailing list expansion prohibited"},
    enhanced_entry{"X.7.3", "Security conversion required but not possible"},
    enhanced_entry{"X.7.4", "Security features not supported"},
    enhanced_entry{"X.7.5", "Cryptographic failure"},
    enhanced_entry{"X.7.6", "Cryptographic algorithm not supported"},
    enhanced_entry{"X.7.7", "Message integrity failure"},
    enhanced_entry{"X.7.8", "Authentication credentials invalid"},                 // RFC 4954
    enhanced_entry{"X.7.9", "Authentication mechanism is too weak"},               // RFC 4954
    enhanced_entry{"X.7.10", "Encryption needed"},                                 // RFC 5248
    enhanced_entry{"X.7.11", "Encryption required for requested authentication mechanism"},   // RFC 4954
    enhanced_entry{"X.7.12", "A password transition is needed"},                   // RFC 4954
    enhanced_entry{"X.7.13", "User account disabled"},                             // RFC 5248
    enhanced_entry{"X.7.14", "Trust relationship required"},                       // RFC 5248
    enhanced_entry{"X.7.15", "Priority level is too low"},                         // RFC 6710
    enhanced_entry{"X.7.16", "Message is too big for the specified priority"},     // RFC 6710
    enhanced_entry{"X.7.17", "Mailbox owner has changed"},                         // RFC 7293
    enhanced_entry{"X.7.18", "Domain owner has changed"},                          // RFC 7293
    enhanced_entry{"X.7.19", "RRVS test cannot be completed"},                     // RFC 7293
    enhanced_entry{"X.7.20", "No passing DKIM signature found"},                   // RFC 7372
    enhanced_entry{"X.7.21", "No acceptable DKIM signature found"},                // RFC 7372
    enhanced_entry{"X.7.22", "No valid author-matched DKIM signature found"},      // RFC 7372
    enhanced_entry{"X.7.23", "SPF validation failed"},                             // RFC 7372
    enhanced_entry{"X.7.24", "SPF validation error"},                              // RFC 7372
    enhanced_entry{"X.7.25", "Reverse DNS validation failed"},                     // RFC 7372
    enhanced_entry{"X.7.26", "Multiple authentication checks failed"},             // RFC 7372
    enhanced_entry{"X.7.27", "Sender address has null MX"},                        // RFC 7505
    enhanced_entry{"X.7.28", "Mail flood detected"},                               // IANA registry
    enhanced_entry{"X.7.29", "ARC validation failure"},                            // RFC 8617
    enhanced_entry{"X.7.30", "REQUIRETLS support required"},                       // RFC 8689
};

}  // namespace

std::size_t enhanced_table_size() { return registry.size(); }
const enhanced_entry& enhanced_at(std::size_t i) { return registry.at(i); }

const enhanced_entry* find_enhanced(std::string_view subject_detail) {
  for (const auto& e : registry)
    if (e.code == subject_detail) return &e;
  return nullptr;
}

}  // namespace mailtap::diagnose
