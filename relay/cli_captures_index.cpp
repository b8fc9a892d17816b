// `mailtap captures list|search|reindex`: finding sessions through the capture directory's
// index (captures/index.hpp). list and search build the index from the files first when it
// is missing or does not cover the directory yet; a corrupt one is reported in one line and
// rebuilt by reindex. Output: one line per session, newest first, or one JSON document per
// session with --json (README "Finding a session").
#include <algorithm>
#include <boost/json.hpp>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>

#include "captures/index.hpp"
#include "captures/reader.hpp"
#include "captures/show.hpp"
#include "config_reader/duration.hpp"
#include "relay/cli.hpp"
#include "relay/config.hpp"
#include "relay/session_id.hpp"

namespace mailtap::cli {

namespace {

namespace fs = std::filesystem;

constexpr std::size_t default_page = 50;
constexpr const char* rebuild_hint = " (rebuild it: mailtap captures reindex)";
// Unreadable capture files named by list and search; past it, a count.
constexpr std::uint64_t max_unreadable_named = 10;

struct index_flags {
  std::string dir;
  std::string since, until;
  captures::search_filter filter;
  bool json = false;
};

fs::path directory_of(const std::string& dir) { return dir.empty() ? default_captures_dir() : fs::path(dir); }

// A time: RFC 3339 ("2026-12-02T10:00:00Z", a date alone is midnight UTC) or a duration
// ago ("2h": two hours before now).
std::optional<std::int64_t> parse_time(const std::string& text, std::string& problem) {
  if (auto t = captures::parse_rfc3339_us(text)) return t;
  std::string why;
  if (auto ago = config_reader::parse_duration(text, why)) {
    const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::system_clock::now().time_since_epoch()).count();
    return now - static_cast<std::int64_t>(*ago);
  }
  problem = "expected an RFC 3339 time (2026-12-02T10:00:00Z), a date (2026-12-02) or a duration ago (2h)";
  return std::nullopt;
}

// The index of `dir`, built from the files first when it is new or does not list them all.
std::unique_ptr<captures::capture_index> ready_index(const fs::path& dir, const char* command, std::string& error) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    error = dir.string() + ": " + directory_problem(dir);
    return nullptr;
  }
  auto index = captures::capture_index::open(dir, captures::capture_index::busy::wait, error);
  if (!index) {
    error += rebuild_hint;
    return nullptr;
  }
  if (index->covers_directory(error)) return index;
  if (!error.empty()) return nullptr;
  index.reset();
  auto built = captures::rebuild_index(dir, error);
  if (!built) return nullptr;
  std::fprintf(stderr, "mailtap captures %s: indexed %llu capture(s) in %s\n", command,
               static_cast<unsigned long long>(built->indexed), dir.c_str());
  // The files it could not read are named after the results, with those an earlier rebuild left out.
  return captures::capture_index::open(dir, captures::capture_index::busy::wait, error);
}

boost::json::object to_json(const captures::session_summary& s, const fs::path& dir) {
  boost::json::object o;
  o["session"] = s.session;
  o["id"] = s.session;   // what the admin API and show --json call it
  o["path"] = (dir / s.file).string();
  o["started_at"] = captures::format_rfc3339_us(s.started_at_us);
  o["ended_at"] = s.ended_at_us ? boost::json::value(captures::format_rfc3339_us(s.ended_at_us)) : nullptr;
  o["client"] = s.client;
  o["upstream"] = s.upstream;
  o["outcome"] = s.outcome;
  o["end_reason"] = s.end_reason.empty() ? boost::json::value(nullptr) : boost::json::value(s.end_reason);
  o["complete"] = s.complete;
  boost::json::array txs;
  for (const auto& t : s.transactions) {
    boost::json::object j;
    j["mail_from"] = t.mail_from;
    j["without_mail"] = t.without_mail;
    j["rcpt_to"] = boost::json::value_from(t.rcpt_to);
    j["rcpt_codes"] = boost::json::value_from(t.rcpt_codes);
    j["message_id"] = t.message_id.empty() ? boost::json::value(nullptr) : boost::json::value(t.message_id);
    j["outcome"] = t.outcome;
    j["final_code"] = t.final_code ? boost::json::value(t.final_code) : nullptr;
    j["final_enhanced"] = t.final_enhanced;
    txs.push_back(std::move(j));
  }
  o["transactions"] = std::move(txs);
  boost::json::array replies;
  for (const auto& [code, enhanced] : s.replies) replies.push_back(boost::json::object{{"code", code}, {"enhanced", enhanced}});
  o["reply_codes"] = std::move(replies);
  o["rules"] = boost::json::value_from(s.rules);
  return o;
}

// "2026-12-02 10:00:00  SESSION  CLIENT  OUTCOME  CODE  FROM -> TO[, +N]  [rules]"
std::string text_line(const captures::session_summary& s) {
  std::string when = captures::format_rfc3339_us(s.started_at_us).substr(0, 19);
  when[10] = ' ';
  std::string code = "-", envelope;
  for (const auto& t : s.transactions) {   // the first transaction not delivered, else the last
    code = t.final_code ? std::to_string(t.final_code) : "-";
    // Every recipient refused: the refusals made the outcome (FORMAT.md "Transaction outcome"),
    // so the first of the outcome's class is shown, not DATA's "no valid recipients" that a
    // pipelining client (Postfix) still gets, nor "-" when no DATA followed.
    const bool every_recipient_refused =
        !t.rcpt_codes.empty() && std::all_of(t.rcpt_codes.begin(), t.rcpt_codes.end(), [](int c) { return c >= 400; });
    if (every_recipient_refused) {
      const int wanted_class = t.outcome == "tempfailed" ? 4 : 5;
      auto it = std::find_if(t.rcpt_codes.begin(), t.rcpt_codes.end(), [&](int c) { return c / 100 == wanted_class; });
      code = std::to_string(it != t.rcpt_codes.end() ? *it : t.rcpt_codes.front());
    }
    // A BDAT without MAIL has no sender at all, which "<>" (a bounce's) would misstate.
    envelope = (t.without_mail ? std::string(captures::no_mail_sender) : "<" + t.mail_from + ">") + " -> " +
               (t.rcpt_to.empty() ? "(none)" : t.rcpt_to.front());
    if (t.rcpt_to.size() > 1) envelope += ", +" + std::to_string(t.rcpt_to.size() - 1);
    if (t.outcome != "delivered") break;
  }
  if (s.transactions.size() > 1) envelope += " (" + std::to_string(s.transactions.size()) + " messages)";
  std::string rules;
  for (const auto& r : s.rules) rules += (rules.empty() ? "  faults: " : ",") + r;
  char line[512];
  std::snprintf(line, sizeof line, "%s  %s  %-21s  %-10s  %-3s  ", when.c_str(), s.session.c_str(), s.client.c_str(),
                s.outcome.c_str(), code.c_str());
  // Addresses are the client's bytes: control characters (an ESC sequence retitling or clearing
  // the operator's terminal, a hostile trial) print as \xNN, as `show` prints them.
  return captures::terminal_safe(line + envelope + rules + (s.complete ? "" : "  (incomplete)")) + "\n";
}

int search(const index_flags& f, const char* command) {
  captures::search_filter filter = f.filter;
  std::string problem;
  if (!f.since.empty() && !(filter.since_us = parse_time(f.since, problem))) {
    std::fprintf(stderr, "mailtap captures %s: --since '%s': %s\n", command, f.since.c_str(), problem.c_str());
    return exit_usage;
  }
  if (!f.until.empty() && !(filter.until_us = parse_time(f.until, problem))) {
    std::fprintf(stderr, "mailtap captures %s: --until '%s': %s\n", command, f.until.c_str(), problem.c_str());
    return exit_usage;
  }
  if (auto p = captures::filter_problem(filter)) {
    std::fprintf(stderr, "mailtap captures %s: %s\n", command, p->c_str());
    return exit_usage;
  }
  const fs::path dir = directory_of(f.dir);
  std::string error;
  auto index = ready_index(dir, command, error);
  // One more than a page is asked for: the hint below then says "more" only when there is.
  auto page = filter;
  if (page.limit > 0) ++page.limit;
  auto found = index ? index->search(page, error) : std::nullopt;
  if (!found) {
    std::fprintf(stderr, "mailtap captures %s: %s\n", command, error.c_str());
    return exit_usage;
  }
  const bool more = filter.limit > 0 && found->size() > filter.limit;
  if (more) found->resize(filter.limit);
  for (const auto& s : *found) {
    if (f.json) std::cout << boost::json::serialize(to_json(s, dir)) << "\n";
    else std::cout << text_line(s);
  }
  if (!f.json && found->empty()) {
    const bool listing = std::string_view(command) == "list";
    if (filter.offset > 0) std::cout << "no " << (listing ? "" : "matching ") << "session past --offset " << filter.offset << "\n";
    else std::cout << (listing ? "no sessions in the index\n" : "no matching session\n");
  }
  // Captures the index does not list yet: in progress, or left open by a relay that stopped
  // without closing them (killed, crashed). A newcomer's trial found a crashed session, the
  // one worth reading, missing from the list with no word why; another, listing the instant
  // its client finished, was told to reindex a session the relay's next index batch added.
  if (auto listed = index->size(error)) {
    // The files the last rebuild read and left out, unchanged since: an unreadable one is named
    // with why, a copy of another capture is silent (reindex names it); neither is counted
    // below (a tester's trial: right after reindex named a corrupt capture, list said it was a
    // session in progress and that reindex would add it).
    std::string ignored;
    const auto left = captures::files_left_out(dir, *index, ignored).value_or(std::vector<captures::left_out_file>{});
    std::uint64_t left_relay_named = 0, unreadable = 0;
    for (const auto& l : left) {
      if (is_relay_session_id(fs::path(l.file).stem().string())) ++left_relay_named;
      if (!l.unreadable) continue;
      if (++unreadable > max_unreadable_named) continue;
      // Recorded as FILE:LINE: what, named here with the directory in use, so that the path is
      // one from where this runs (an index rebuilt before, from its path: as it was).
      const std::string& p = l.problem;
      const std::string shown =
          p.starts_with(l.file + ":") ? (dir / l.file).string() + p.substr(l.file.size()) : p;
      std::fprintf(stderr, "mailtap captures %s: unreadable, not in the index: %s\n", command, shown.c_str());
    }
    if (unreadable > max_unreadable_named)
      std::fprintf(stderr, "mailtap captures %s: %llu more unreadable capture file(s) in %s (mailtap captures "
                           "reindex names each)\n",
                   command, static_cast<unsigned long long>(unreadable - max_unreadable_named), dir.c_str());
    std::uint64_t files = 0;
    std::error_code ec, kind;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
      // Only files named as the relay names a capture: a copy or another program's file is
      // never indexed, so it is not one "not in the index" (a trial: the line never went).
      if (it->path().extension() == ".jsonl" && is_relay_session_id(it->path().stem().string()) &&
          it->is_regular_file(kind))
        ++files;
    if (files > *listed + left_relay_named)
      std::fprintf(stderr,
                   "mailtap captures %s: %llu capture file(s) in %s are not in the index: sessions in progress "
                   "or just ended (a running relay indexes a finished capture within a fraction of a second), "
                   "or left by a relay that stopped without closing them (mailtap captures reindex adds those "
                   "it can read, and names those it cannot)\n",
                   command, static_cast<unsigned long long>(files - *listed - left_relay_named), dir.c_str());
  }
  if (!f.json && more) std::cout << "(more: --offset " << filter.offset + filter.limit << ")\n";   // as sessions list
  std::cout.flush();
  return exit_ok;
}

int reindex(const std::string& dir_flag) {
  const fs::path dir = directory_of(dir_flag);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    std::fprintf(stderr, "mailtap captures reindex: %s: %s\n", dir.c_str(), directory_problem(dir).c_str());
    return exit_usage;
  }
  std::string error;
  auto built = captures::rebuild_index(dir, error);
  if (!built) {
    std::fprintf(stderr, "mailtap captures reindex: %s\n", error.c_str());
    return exit_usage;
  }
  for (const auto& u : built->unreadable) std::fprintf(stderr, "mailtap captures reindex: %s\n", u.c_str());
  for (const auto& d : built->duplicates) std::fprintf(stderr, "mailtap captures reindex: %s\n", d.c_str());
  std::printf("%s: indexed %llu capture(s), removed %llu stale row(s)%s\n", (dir / captures::index_file_name).c_str(),
              static_cast<unsigned long long>(built->indexed), static_cast<unsigned long long>(built->removed),
              built->duplicates.empty()
                  ? ""
                  : (", " + std::to_string(built->duplicates.size()) + " copy(ies) of another capture's session not indexed")
                        .c_str());
  return built->unreadable.empty() ? exit_ok : exit_problem;
}

// --limit and --offset: far above any index, far below what would overflow SQLite's int64.
constexpr std::size_t max_page_option = 1'000'000'000;

void add_common(CLI::App* cmd, index_flags& f) {
  cmd->add_option("--dir", f.dir,
                  "Capture directory (default $MAILTAP_CAPTURES, else $XDG_STATE_HOME/mailtap/captures, else "
                  "~/.local/state/mailtap/captures)");
  // A hostile trial: "--limit -5" listed everything.
  cmd->add_option("--limit", f.filter.limit, "Show at most this many sessions (default 50)")
      ->check(count_up_to(max_page_option));
  cmd->add_option("--offset", f.filter.offset, "Skip this many sessions first (the next page)")
      ->check(count_up_to(max_page_option));
  cmd->add_flag("--json", f.json, "One JSON document per session (one per line)");
}

}  // namespace

void register_captures_index(CLI::App& captures_cmd, int& exit_code) {
  auto lf = std::make_shared<index_flags>();
  lf->filter.limit = default_page;
  auto* list = captures_cmd.add_subcommand("list", "List the captured sessions, newest first");
  add_common(list, *lf);
  list->callback([lf, &exit_code] { exit_code = search(*lf, "list"); });

  auto sf = std::make_shared<index_flags>();
  sf->filter.limit = default_page;
  auto* s = captures_cmd.add_subcommand(
      "search", "Find sessions by sender, recipient, time, outcome, reply code, Message-ID, client or fault rule");
  add_common(s, *sf);
  auto& f = sf->filter;
  s->add_option("--from", f.sender, "Sender: an address (any case), @domain, a pattern with *, or <> (null sender)");
  s->add_option("--to", f.recipient, "Recipient: an address, @domain or a pattern with *");
  s->add_option("--since", sf->since, "Started at or after: 2026-12-02T10:00:00Z, 2026-12-02, or a duration ago (2h)");
  s->add_option("--until", sf->until, "Started before (same forms as --since)");
  s->add_option("--outcome", f.outcome, "Session outcome: none, delivered, blackholed, rejected, tempfailed, aborted, unknown");
  s->add_option("--code", f.code, "A reply seen in the session: a code (550), a class (5xx) or an enhanced code (5.1.1)");
  s->add_option("--message-id", f.message_id, "A message's Message-ID, with or without <>");
  s->add_option("--client", f.client, "The client's address (192.0.2.1) or address and port");
  s->add_option("--rule", f.rule, "A fault rule that acted on the session (a rule made of parts, such as cisco-pix-fixup, matches any of its parts)");
  s->callback([sf, &exit_code] { exit_code = search(*sf, "search"); });

  auto dir = std::make_shared<std::string>();
  auto* r = captures_cmd.add_subcommand(
      "reindex", "Rebuild the directory's index (index.sqlite3) from the capture files; replaces a corrupt one");
  r->add_option("--dir", *dir,
                "Capture directory (default $MAILTAP_CAPTURES, else $XDG_STATE_HOME/mailtap/captures, else "
                "~/.local/state/mailtap/captures)");
  r->callback([dir, &exit_code] { exit_code = reindex(*dir); });
}

}  // namespace mailtap::cli
