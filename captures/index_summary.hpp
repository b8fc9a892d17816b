// What the capture index (index.hpp) knows of one session, and the one builder that makes it:
// fed by the writer thread from the records it writes (writer.cpp, as a capture ends), or
// from a capture file read back (summarize(), for `mailtap captures reindex`). One builder
// for both, so a live index and a rebuilt one agree row for row.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailtap::captures {

struct capture;

struct indexed_transaction {
  std::string mail_from;                // "" for the null sender
  std::vector<std::string> rcpt_to;
  std::vector<int> rcpt_codes;          // one per recipient, same order (may be shorter)
  std::string message_id;               // without its angle brackets; "" when none was seen
  std::string outcome;                  // FORMAT.md "Transaction outcome"
  int final_code = 0;                   // 0: no final reply
  std::string final_enhanced;
  bool without_mail = false;            // begun by a BDAT with no MAIL: mail_from "" is no null sender

  bool operator==(const indexed_transaction&) const = default;
};

struct session_summary {
  std::string session;                  // the session id
  std::string file;                     // the capture's file name within the directory
  std::int64_t started_at_us = 0;       // Unix time, µs (the header's started_at)
  std::int64_t ended_at_us = 0;         // 0 when the capture has no end record
  std::string client;                   // "ip:port" as recorded
  std::string client_ip;                // the address alone
  std::string upstream;
  std::string outcome;                  // FORMAT.md "Session outcome"
  std::string end_reason;               // "" when the capture has no end record
  bool complete = false;
  std::vector<indexed_transaction> transactions;
  std::vector<std::pair<int, std::string>> replies;   // distinct (code, enhanced), sorted
  std::vector<std::string> rules;                      // distinct fault rule names, sorted

  bool operator==(const session_summary&) const = default;
};

class summary_builder {
 public:
  void header(std::string_view session, std::string_view file, std::int64_t started_at_us, std::string_view client,
              std::string_view upstream);
  void reply(int code, std::string_view enhanced);
  void transaction(indexed_transaction t);
  void fault(std::string_view rule);
  void end(std::string_view reason, std::int64_t ended_at_us, bool complete);
  // The summary, with its replies and rules sorted and its session outcome computed.
  session_summary finish() &&;

 private:
  session_summary s_;
};

// The summary of a capture read back from its file.
session_summary summarize(const capture& c);

// "2026-12-02T10:00:00.123456Z" (what the writer writes; fraction and Z optional, or a
// "+hh:mm" offset) as Unix µs; nullopt when it is not such a time. A date alone is midnight UTC.
std::optional<std::int64_t> parse_rfc3339_us(std::string_view text);
// Unix µs as "2026-12-02T10:00:00.123456Z".
std::string format_rfc3339_us(std::int64_t us);

// "<a@b>" -> "a@b": how Message-IDs are stored and searched.
std::string bare_message_id(std::string_view id);
// The address of "ip:port" or "[ip6]:port".
std::string address_of_endpoint(std::string_view endpoint);

}  // namespace mailtap::captures
