// The sessions the API lists: a small interface, so that a capture index (a database of the
// captures' summaries) can answer it later, and its first implementation, which reads the
// capture directory itself. Newest first; paging by limit and offset; optional filters by
// session outcome (captures::session_outcome) and by client address. Thread-safe (no state).
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "captures/reader.hpp"

namespace mailtap::admin {

// The outcomes a listing can be filtered by, the one list the API and `mailtap sessions list
// --outcome` check against: a session's outcome as `show --json` gives it, and "unreadable" for
// a capture the reader refuses (session_row::outcome).
inline constexpr std::string_view session_outcomes[] = {"none",       "delivered", "blackholed", "rejected",
                                                        "tempfailed", "aborted",   "unknown",    "unreadable"};

// session_outcomes as prose: "none, delivered, ..., unknown or unreadable" (`last_separator`
// before the last one).
inline std::string session_outcomes_text(std::string_view last_separator = " or ") {
  std::string out;
  for (std::size_t i = 0; i < std::size(session_outcomes); ++i) {
    if (i > 0) out += i + 1 == std::size(session_outcomes) ? last_separator : std::string_view(", ");
    out += session_outcomes[i];
  }
  return out;
}

struct session_filter {
  std::size_t limit = 50;
  std::size_t offset = 0;
  std::string outcome;   // "" = any; else one of session_outcomes
  std::string client;    // "" = any; else a substring of the client address ("192.0.2.7")
};

// Bounds of one listing: a page of at most this many rows, and at most this many captures
// read to fill it when a filter is given (the directory may hold many thousands).
inline constexpr std::size_t max_page_rows = 500;
inline constexpr std::size_t max_filter_scan = 5000;
// A row names at most this many recipients and fault rules (a session may have thousands of
// RCPTs; the totals are counted in full).
inline constexpr std::size_t max_row_recipients = 20;
inline constexpr std::size_t max_row_fault_rules = 10;

struct session_row {
  std::string id;
  std::string started_at;   // RFC 3339, UTC ("" when the capture cannot be read)
  std::string client;
  std::string upstream;
  std::string outcome;      // as `show --json`; "unreadable" when the capture cannot be read
  std::string end_reason;   // "" without an end record
  bool in_progress = false; // no end record, and the relay has the capture open (else cut short)
  bool complete = false;
  std::size_t transactions = 0;
  std::uint64_t duration_us = 0;
  std::uint64_t size_bytes = 0;   // the capture file's size
  std::optional<std::string> sender;   // the first transaction's MAIL FROM ("" for <>); none without one,
                                       // or when it had no MAIL (without_mail)
  bool without_mail = false;           // the first transaction had no MAIL: a BDAT began it
  std::vector<std::string> recipients; // distinct, in order, over every transaction: the first max_row_recipients
  std::size_t recipients_total = 0;    // distinct recipients in all
  std::size_t faults = 0;              // fault records in the capture
  std::vector<std::string> fault_rules;   // their distinct rule names, the first max_row_fault_rules
  std::string error;        // why it cannot be read, when it cannot
};

struct session_page {
  std::vector<session_row> rows;
  bool more = false;          // rows beyond this page exist (or may: scan_limited)
  bool scan_limited = false;  // a filter stopped after max_filter_scan captures
};

class session_catalog {
 public:
  virtual ~session_catalog() = default;
  virtual session_page list(const session_filter& filter) const = 0;
  // The capture file of a session id; nullopt for an id that is not one (or not there).
  virtual std::optional<std::filesystem::path> capture_path(std::string_view id) const = 0;
  // Whether a capture without its end record is a session going on now (else it was cut short:
  // a relay killed or crashed, a capture that could not be written).
  virtual bool in_progress(std::string_view id) const = 0;
};

// Reads a capture as the list and a session's document do. For a capture the relay has open
// (`open_now`, asked before the read) that does not read, `header_pending` says its header is
// not written yet (no capture: a session starting); if the header was written between the
// reader's look and this one's (an ASan run caught that: the list said in progress, the
// document 422), it is read again.
std::optional<captures::capture> read_session_capture(const std::filesystem::path& file, bool open_now,
                                                       bool& header_pending, std::string& error);

// Reads the capture directory: *.jsonl names sorted newest first (a name starts with the
// session's UTC start time: relay/session.cpp make_session_id), each listed capture read.
// `open`: whether the relay has a session's capture open; without it (no relay, or one that
// records nothing), every capture without its end record is taken to be in progress.
class directory_catalog final : public session_catalog {
 public:
  explicit directory_catalog(std::filesystem::path dir, std::function<bool(std::string_view)> open = {})
      : dir_(std::move(dir)), open_(std::move(open)) {}
  session_page list(const session_filter& filter) const override;
  std::optional<std::filesystem::path> capture_path(std::string_view id) const override;
  bool in_progress(std::string_view id) const override { return !open_ || open_(id); }

 private:
  std::filesystem::path dir_;
  std::function<bool(std::string_view)> open_;
};

}  // namespace mailtap::admin
