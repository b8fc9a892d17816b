// Listing the capture directory (admin/session_catalog.hpp).
#include "admin/session_catalog.hpp"

#include <algorithm>
#include <array>
#include <fstream>
#include <set>
#include <system_error>

#include "captures/reader.hpp"
#include "captures/show.hpp"

namespace mailtap::admin {

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> newest_first(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code fec;
    if (it->path().extension() == ".jsonl" && it->is_regular_file(fec)) out.push_back(it->path());
  }
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) { return a.filename() > b.filename(); });
  return out;
}

// Who the session's mail was from and to, and which faults it met.
void add_envelope_and_faults(const captures::capture& cap, session_row& row) {
  std::set<std::string> seen;
  // The first transaction's sender. One a BDAT began without MAIL has none: its "" is no "<>".
  if (!cap.transactions.empty()) {
    const auto& first = cap.transactions.front();
    row.without_mail = first.without_mail;
    if (!first.without_mail) row.sender = first.mail_from;
  }
  for (const auto& t : cap.transactions) {
    for (const auto& r : t.rcpt_to) {
      if (!seen.insert(r).second) continue;
      if (row.recipients.size() < max_row_recipients) row.recipients.push_back(r);
    }
  }
  row.recipients_total = seen.size();
  for (const auto& e : cap.events) {
    const auto* f = std::get_if<captures::fault_event>(&e);
    if (!f) continue;
    ++row.faults;
    const auto& rule = f->fault.rule;
    if (row.fault_rules.size() < max_row_fault_rules &&
        std::find(row.fault_rules.begin(), row.fault_rules.end(), rule) == row.fault_rules.end())
      row.fault_rules.push_back(rule);
  }
}

// Whether a capture file has no complete first line yet. The relay creates a session's capture
// as the session opens, and the header record waits in the capture's buffer for its first
// barrier or the writer thread's next tick (captures/writer.hpp), so for up to a tick the
// capture of a session that has just opened is empty: while the relay has it open that is a session starting, not an
// unreadable capture.
bool header_not_written_yet(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return false;
  std::array<char, 4096> head{};   // a header record is a few hundred bytes
  in.read(head.data(), head.size());
  const auto n = static_cast<std::size_t>(in.gcount());
  return std::find(head.begin(), head.begin() + static_cast<std::ptrdiff_t>(n), '\n') == head.begin() + static_cast<std::ptrdiff_t>(n);
}

session_row row_of(const fs::path& file, const session_catalog& catalog) {
  session_row row;
  row.id = file.stem().string();
  std::error_code ec;
  auto size = fs::file_size(file, ec);
  row.size_bytes = ec ? 0 : size;
  // Asked before the file is read: a session ends by writing its end record, then closing. So
  // a capture read without one after "not open" was cut short, never a session just ending.
  const bool open_now = catalog.in_progress(row.id);
  std::string error;
  bool header_pending = false;
  auto cap = read_session_capture(file, open_now, header_pending, error);
  if (header_pending) {   // a session just opened: nothing recorded yet
    row.in_progress = true;
    row.outcome = "none";
    return row;
  }
  if (!cap) {
    row.outcome = "unreadable";
    row.error = error;
    return row;
  }
  row.started_at = cap->header.started_at;
  row.client = cap->header.client;
  row.upstream = cap->header.upstream;
  // Without its end record a session the relay has open is in progress (its end_reason is
  // null): the transaction it is inside, rebuilt by the reader, has no outcome yet. One it does
  // not have open was cut short (a crash): its outcome is show's ("unknown": perhaps delivered).
  row.in_progress = !cap->end && open_now;
  row.outcome = captures::session_outcome(*cap, row.in_progress);
  row.end_reason = cap->end ? cap->end->reason : "";
  row.complete = cap->complete;
  row.transactions = cap->transactions.size();
  row.duration_us = captures::session_duration_us(*cap);
  add_envelope_and_faults(*cap, row);
  return row;
}

bool wanted(const session_row& row, const session_filter& f) {
  if (!f.outcome.empty() && row.outcome != f.outcome) return false;
  if (!f.client.empty() && row.client.find(f.client) == std::string::npos) return false;
  return true;
}

}  // namespace

std::optional<captures::capture> read_session_capture(const fs::path& file, bool open_now, bool& header_pending,
                                                       std::string& error) {
  header_pending = false;
  auto cap = captures::read_capture(file, error);
  if (cap || !open_now) return cap;
  if (header_not_written_yet(file)) {
    header_pending = true;
    return std::nullopt;
  }
  return captures::read_capture(file, error);   // its header came meanwhile
}


session_page directory_catalog::list(const session_filter& filter) const {
  session_page page;
  const auto files = newest_first(dir_);
  const std::size_t limit = std::min(filter.limit, max_page_rows);
  if (filter.outcome.empty() && filter.client.empty()) {
    // No filter: the page is a slice of the names; only its captures are read.
    for (std::size_t i = filter.offset; i < files.size() && page.rows.size() < limit; ++i)
      page.rows.push_back(row_of(files[i], *this));
    page.more = files.size() > filter.offset + page.rows.size();
    return page;
  }
  std::size_t matched = 0;
  std::size_t scanned = 0;
  for (const auto& file : files) {
    if (scanned == max_filter_scan) {
      page.scan_limited = true;
      page.more = true;
      break;
    }
    ++scanned;
    auto row = row_of(file, *this);
    if (!wanted(row, filter)) continue;
    if (matched++ < filter.offset) continue;
    if (page.rows.size() == limit) {
      page.more = true;
      break;
    }
    page.rows.push_back(std::move(row));
  }
  return page;
}

std::optional<fs::path> directory_catalog::capture_path(std::string_view id) const {
  if (!captures::is_session_id(id)) return std::nullopt;   // no path can be smuggled through it
  fs::path file = dir_ / (std::string(id) + ".jsonl");
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) return std::nullopt;
  return file;
}

}  // namespace mailtap::admin
