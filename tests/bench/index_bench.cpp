// The capture index at scale (scripts/bench-index): builds an index of N synthetic sessions
// through captures::capture_index::put, in batches as the writer thread and reindex write
// them, then times the searches `mailtap captures search` makes, each run several times
// (median), and prints a table (with how many each found) and a JSON document. Not a test.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "captures/index.hpp"

namespace fs = std::filesystem;
using namespace mailtap::captures;

namespace {

constexpr std::int64_t start_unix_us = 1'767'225'600'000'000;   // 2026-01-01T00:00:00Z
constexpr std::int64_t session_gap_us = 2'000'000;              // one session every 2 s: 1M sessions = 23 days
constexpr std::size_t batch = 10000;
constexpr int repetitions = 15;

std::string pick(const char* prefix, std::uint64_t n, const char* domain_prefix, std::uint64_t domains) {
  return std::string(prefix) + std::to_string(n) + "@" + domain_prefix + std::to_string(n % domains) + ".example";
}

// Session i, drawn from a seeded generator: most delivered, some refused, a few faulted.
session_summary make_session(std::uint64_t i, std::mt19937_64& rng) {
  session_summary s;
  char id[40];
  std::snprintf(id, sizeof id, "20260101-000000-bench-%09llu", static_cast<unsigned long long>(i));
  s.session = id;
  s.file = s.session + ".jsonl";
  s.started_at_us = start_unix_us + static_cast<std::int64_t>(i) * session_gap_us;
  s.ended_at_us = s.started_at_us + 150'000;
  s.client_ip = "10." + std::to_string(rng() % 4) + "." + std::to_string(rng() % 16) + "." + std::to_string(rng() % 16);
  s.client = s.client_ip + ":" + std::to_string(1024 + rng() % 60000);
  s.upstream = "mx.example:25";
  s.end_reason = "client_quit";
  s.complete = true;
  s.replies = {{220, ""}, {221, "2.0.0"}, {250, ""}, {250, "2.1.0"}, {250, "2.1.5"}, {354, ""}};
  const auto roll = rng() % 1000;
  if (roll >= 10) {   // 1%: no message
    indexed_transaction t;
    t.mail_from = pick("sender", rng() % 20'000, "from", 500);
    const auto recipients = 1 + (rng() % 10 == 0 ? rng() % 4 : 0);
    for (std::uint64_t r = 0; r < recipients; ++r) {
      t.rcpt_to.push_back(pick("rcpt", rng() % 200'000, "to", 2'000));
      t.rcpt_codes.push_back(250);
    }
    t.message_id = "bench-" + std::to_string(i) + "@mail.example";
    if (roll < 900) t.outcome = "delivered", t.final_code = 250, t.final_enhanced = "2.0.0";
    else if (roll < 950) t.outcome = "rejected", t.final_code = 550, t.final_enhanced = "5.1.1";
    else if (roll < 990) t.outcome = "tempfailed", t.final_code = 451, t.final_enhanced = "4.7.1";
    else t.outcome = "unknown";
    if (t.final_code) s.replies.emplace_back(t.final_code, t.final_enhanced);
    s.outcome = t.outcome;
    s.transactions.push_back(std::move(t));
  } else {
    s.outcome = "none";
  }
  if (rng() % 50 == 0) s.rules.push_back("rule-" + std::to_string(rng() % 5));
  std::sort(s.replies.begin(), s.replies.end());
  s.replies.erase(std::unique(s.replies.begin(), s.replies.end()), s.replies.end());
  return s;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

struct query {
  const char* name;
  search_filter filter;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s DIR ROWS [JSON_OUT]\n", argv[0]);
    return 2;
  }
  const fs::path dir = argv[1];
  const std::uint64_t rows = std::strtoull(argv[2], nullptr, 10);
  fs::create_directories(dir);
  remove_index_files(dir);
  std::string error;
  auto index = capture_index::open(dir, capture_index::busy::wait, error);
  if (!index) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }
  std::mt19937_64 rng(42);
  std::vector<session_summary> pending;
  std::string probe_sender, probe_recipient, probe_client;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < rows; ++i) {
    pending.push_back(make_session(i, rng));
    if (i == rows / 2 && !pending.back().transactions.empty()) {
      probe_sender = pending.back().transactions[0].mail_from;
      probe_recipient = pending.back().transactions[0].rcpt_to[0];
      probe_client = pending.back().client_ip;
    }
    if (pending.size() == batch || i + 1 == rows) {
      if (!index->put(pending, error)) {
        std::fprintf(stderr, "%s\n", error.c_str());
        return 2;
      }
      pending.clear();
    }
  }
  const double build_ms = ms_since(t0);
  // The rows stand for the whole directory (there are no files): list and search use them as they are.
  if (!index->set_covers_directory(true, error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }
  const auto size = fs::file_size(dir / index_file_name);
  index.reset();
  index = capture_index::open(dir, capture_index::busy::wait, error);

  const std::int64_t mid = start_unix_us + static_cast<std::int64_t>(rows / 2) * session_gap_us;
  const std::string domain = "@" + probe_sender.substr(probe_sender.find('@') + 1);
  const std::string rdomain = "@" + probe_recipient.substr(probe_recipient.find('@') + 1);
  std::vector<query> queries;
  auto add = [&](const char* name, const std::function<void(search_filter&)>& set) {
    search_filter f;
    set(f);
    queries.push_back({name, f});
  };
  add("list (newest 50)", [](search_filter&) {});
  add("list, page at offset 10000", [](search_filter& f) { f.offset = 10'000; });
  add("--from ADDRESS", [&](search_filter& f) { f.sender = probe_sender; });
  add("--from @DOMAIN", [&](search_filter& f) { f.sender = domain; });
  add("--from 'sender12*' (pattern)", [](search_filter& f) { f.sender = "sender12*"; });
  add("--to ADDRESS", [&](search_filter& f) { f.recipient = probe_recipient; });
  add("--to @DOMAIN", [&](search_filter& f) { f.recipient = rdomain; });
  add("--since/--until (one hour)", [&](search_filter& f) { f.since_us = mid, f.until_us = mid + 3'600'000'000LL; });
  add("--outcome rejected", [](search_filter& f) { f.outcome = "rejected"; });
  add("--outcome unknown", [](search_filter& f) { f.outcome = "unknown"; });
  add("--code 550", [](search_filter& f) { f.code = "550"; });
  add("--code 4xx", [](search_filter& f) { f.code = "4xx"; });
  add("--code 5.1.1", [](search_filter& f) { f.code = "5.1.1"; });
  add("--message-id", [&](search_filter& f) { f.message_id = "<bench-" + std::to_string(rows / 2) + "@mail.example>"; });
  add("--client IP", [&](search_filter& f) { f.client = probe_client; });
  add("--rule", [](search_filter& f) { f.rule = "rule-3"; });
  add("--outcome rejected --from @DOMAIN --since (1 day)",
      [&](search_filter& f) { f.outcome = "rejected", f.sender = domain, f.since_us = mid - 86'400'000'000LL; });
  add("--code 550 --to @DOMAIN", [&](search_filter& f) { f.code = "550", f.recipient = rdomain; });

  std::printf("index of %llu sessions: built in %.1f s (%.0f sessions/s), %.1f MiB\n",
              static_cast<unsigned long long>(rows), build_ms / 1000, rows / (build_ms / 1000), size / 1048576.0);
  std::printf("%-52s %10s %10s %6s\n", "search (limit 50, newest first)", "median ms", "max ms", "found");
  std::string json = "{\"rows\":" + std::to_string(rows) + ",\"build_s\":" + std::to_string(build_ms / 1000) +
                     ",\"index_bytes\":" + std::to_string(size) + ",\"searches\":[";
  for (std::size_t q = 0; q < queries.size(); ++q) {
    std::vector<double> times;
    std::size_t found = 0;
    for (int r = 0; r < repetitions; ++r) {
      const auto t = std::chrono::steady_clock::now();
      auto result = index->search(queries[q].filter, error);
      times.push_back(ms_since(t));
      if (!result) {
        std::fprintf(stderr, "%s: %s\n", queries[q].name, error.c_str());
        return 2;
      }
      found = result->size();
    }
    std::sort(times.begin(), times.end());
    std::printf("%-52s %10.2f %10.2f %6zu\n", queries[q].name, times[times.size() / 2], times.back(), found);
    json += std::string(q ? "," : "") + "{\"search\":\"" + queries[q].name + "\",\"median_ms\":" +
            std::to_string(times[times.size() / 2]) + ",\"max_ms\":" + std::to_string(times.back()) +
            ",\"found\":" + std::to_string(found) + "}";
  }
  json += "]}\n";
  if (argc > 3) std::ofstream(argv[3]) << json;
  return 0;
}
