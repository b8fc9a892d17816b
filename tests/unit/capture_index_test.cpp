// captures/index: thousands of captures written through the store with the index on; search
// finds exactly the right sessions for every kind of condition, newest first and paged;
// rebuilding from the files gives the same index; retention removes the rows of what it
// prunes; a corrupt or failing index is reported and rebuilt, and never costs a capture.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "captures/index.hpp"
#include "captures/reader.hpp"
#include "captures/relay_marker.hpp"
#include "captures/retention.hpp"
#include "captures/writer.hpp"
#include "scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace mailtap;
using namespace mailtap::captures;

namespace {

// 2026-01-01T00:00:00Z: session i starts i seconds later.
constexpr std::int64_t base_unix_s = 1'767'225'600;
constexpr int session_count = 3000;

// What session i is made of; the expectations below are computed from the same rules.
std::string id_of(int i) {
  char b[32];
  std::snprintf(b, sizeof b, "s%06d", i);
  return b;
}
std::string client_ip_of(int i) { return "192.0.2." + std::to_string(i % 50); }
std::string sender_of(int i) { return "user" + std::to_string(i % 37) + "@dom" + std::to_string(i % 7) + ".example"; }
std::string recipient_of(int i) { return "rcpt" + std::to_string(i % 101) + "@to" + std::to_string(i % 5) + ".example"; }
bool has_message(int i) { return i % 20 != 5; }
bool rejected(int i) { return i % 10 == 0; }
bool tempfailed(int i) { return i % 10 == 1; }
bool faulted(int i) { return i % 13 == 0; }

protocol::reply reply_of(int code, std::string enhanced, std::string text) {
  protocol::reply r;
  r.code = code;
  r.enhanced = enhanced;
  r.lines = {enhanced.empty() ? text : enhanced + " " + text};
  return r;
}

void write_session(store& st, int i) {
  session_info info;
  info.id = id_of(i);
  info.seed = 1;
  info.client = client_ip_of(i) + ":" + std::to_string(1000 + i);
  info.listen = "127.0.0.1:2525";
  info.upstream = "mx.example:25";
  info.bare_eol = "strict";
  info.started_at = std::chrono::system_clock::time_point(std::chrono::seconds(base_unix_s + i) + std::chrono::microseconds(i));
  auto cap = st.begin(info);
  cap->on_reply(1, protocol::leg::upstream, protocol::direction::in, reply_of(220, "", "mx ESMTP"));
  cap->on_reply(2, protocol::leg::upstream, protocol::direction::in, reply_of(250, "", "mx"));
  if (faulted(i))
    cap->on_fault(3, protocol::fault_event{"greylist-rcpt", "greylist", "reply", protocol::phase::rcpt, 0, 0, "451"});
  if (has_message(i)) {
    protocol::transaction_record t;
    t.mail_from = sender_of(i);
    t.rcpt_to = {recipient_of(i)};
    if (i % 3 == 0) t.rcpt_to.push_back("extra" + std::to_string(i) + "@to" + std::to_string(i % 5) + ".example");
    t.rcpt_codes.assign(t.rcpt_to.size(), 250);
    t.message_id = "<msg-" + std::to_string(i) + "@example>";
    const auto final = rejected(i)     ? reply_of(550, "5.1.1", "unknown user")
                       : tempfailed(i) ? reply_of(451, "4.7.1", "try later")
                                       : reply_of(250, "2.0.0", "queued as Q" + std::to_string(i));
    cap->on_reply(4, protocol::leg::upstream, protocol::direction::in, final);
    t.final_reply = final;
    t.result = rejected(i) ? protocol::outcome::rejected : tempfailed(i) ? protocol::outcome::tempfailed : protocol::outcome::delivered;
    cap->on_transaction(t);
  }
  cap->on_end(5'000, "client_quit", "");
}

// A search_filter spelled condition by condition.
struct filter : search_filter {
#define MAILTAP_WITH(name) \
  filter& with_##name(decltype(search_filter::name) v) { \
    search_filter::name = std::move(v); \
    return *this; \
  }
  MAILTAP_WITH(sender) MAILTAP_WITH(recipient) MAILTAP_WITH(since_us) MAILTAP_WITH(until_us) MAILTAP_WITH(outcome)
  MAILTAP_WITH(code) MAILTAP_WITH(message_id) MAILTAP_WITH(client) MAILTAP_WITH(rule) MAILTAP_WITH(limit) MAILTAP_WITH(offset)
#undef MAILTAP_WITH
};

store_options indexed() {
  store_options o;
  o.index = true;
  return o;
}

void write_sessions(const fs::path& dir, int from, int to, store_options options = indexed()) {
  std::string error;
  auto st = store::open(dir, error, options);
  ASSERT_TRUE(st) << error;
  for (int i = from; i < to; ++i) write_session(*st, i);
}   // the store's destructor writes everything and adds the last batch to the index

std::vector<session_summary> search_all(const fs::path& dir, search_filter f = {}) {
  std::string error;
  auto index = capture_index::open(dir, capture_index::busy::wait, error);
  EXPECT_TRUE(index) << error;
  if (!index) return {};
  f.limit = 1'000'000;
  auto found = index->search(f, error);
  EXPECT_TRUE(found) << error;
  return found ? *found : std::vector<session_summary>{};
}

std::vector<std::string> ids_found(const fs::path& dir, const search_filter& f) {
  std::vector<std::string> out;
  for (const auto& s : search_all(dir, f)) out.push_back(s.session);
  return out;
}

// Newest first, as search orders them.
std::vector<std::string> ids_where(const std::function<bool(int)>& wanted) {
  std::vector<std::string> out;
  for (int i = session_count - 1; i >= 0; --i)
    if (wanted(i)) out.push_back(id_of(i));
  return out;
}

class CaptureIndexSearch : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::path(::testing::TempDir()) / ("mailtap_index_search_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    write_sessions(dir_, 0, session_count);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static fs::path dir_;
};
fs::path CaptureIndexSearch::dir_;

TEST_F(CaptureIndexSearch, EveryCaptureIsIndexedAsItEnds) {
  EXPECT_EQ(search_all(dir_).size(), static_cast<std::size_t>(session_count));
}

TEST_F(CaptureIndexSearch, BySender) {
  EXPECT_EQ(ids_found(dir_, filter().with_sender("USER5@dom5.example")), ids_where([](int i) {
              return has_message(i) && i % 37 == 5 && i % 7 == 5;
            }));
  EXPECT_EQ(ids_found(dir_, filter().with_sender("@DOM3.example")), ids_where([](int i) { return has_message(i) && i % 7 == 3; }));
  EXPECT_EQ(ids_found(dir_, filter().with_sender("user1*@dom2.*")), ids_where([](int i) {
              return has_message(i) && std::to_string(i % 37).front() == '1' && i % 7 == 2;
            }));
}

TEST_F(CaptureIndexSearch, ByRecipient) {
  EXPECT_EQ(ids_found(dir_, filter().with_recipient("rcpt42@to2.example")), ids_where([](int i) {
              return has_message(i) && i % 101 == 42 && i % 5 == 2;
            }));
  EXPECT_EQ(ids_found(dir_, filter().with_recipient("extra300@to0.example")), std::vector<std::string>{id_of(300)});
  EXPECT_EQ(ids_found(dir_, filter().with_recipient("@to4.example")), ids_where([](int i) { return has_message(i) && i % 5 == 4; }));
}

TEST_F(CaptureIndexSearch, ByTimeRange) {
  const std::int64_t s = 1'000'000;
  EXPECT_EQ(ids_found(dir_, filter().with_since_us((base_unix_s + 100) * s).with_until_us((base_unix_s + 200) * s)),
            ids_where([](int i) { return i >= 100 && i < 200; }));
  EXPECT_EQ(ids_found(dir_, filter().with_since_us((base_unix_s + 2990) * s)), ids_where([](int i) { return i >= 2990; }));
}

TEST_F(CaptureIndexSearch, ByOutcomeAndReplyCode) {
  EXPECT_EQ(ids_found(dir_, filter().with_outcome("rejected")), ids_where([](int i) { return has_message(i) && rejected(i); }));
  EXPECT_EQ(ids_found(dir_, filter().with_outcome("none")), ids_where([](int i) { return !has_message(i); }));
  EXPECT_EQ(ids_found(dir_, filter().with_code("550")), ids_where([](int i) { return has_message(i) && rejected(i); }));
  EXPECT_EQ(ids_found(dir_, filter().with_code("4xx")), ids_where([](int i) { return has_message(i) && tempfailed(i); }));
  EXPECT_EQ(ids_found(dir_, filter().with_code("4.7.1")), ids_where([](int i) { return has_message(i) && tempfailed(i); }));
  EXPECT_EQ(ids_found(dir_, filter().with_code("220")).size(), static_cast<std::size_t>(session_count));
}

TEST_F(CaptureIndexSearch, ByMessageIdClientAndRule) {
  EXPECT_EQ(ids_found(dir_, filter().with_message_id("<msg-1234@example>")), std::vector<std::string>{id_of(1234)});
  EXPECT_EQ(ids_found(dir_, filter().with_message_id("msg-1234@example")), std::vector<std::string>{id_of(1234)});
  EXPECT_EQ(ids_found(dir_, filter().with_message_id("msg-1245@example")), std::vector<std::string>{});   // 1245 % 20 == 5
  EXPECT_EQ(ids_found(dir_, filter().with_client("192.0.2.7")), ids_where([](int i) { return i % 50 == 7; }));
  EXPECT_EQ(ids_found(dir_, filter().with_client("192.0.2.7:1057")), std::vector<std::string>{id_of(57)});
  EXPECT_EQ(ids_found(dir_, filter().with_rule("greylist-rcpt")), ids_where(faulted));
}

TEST_F(CaptureIndexSearch, ConditionsCombine) {
  const std::int64_t s = 1'000'000;
  EXPECT_EQ(ids_found(dir_, filter().with_sender("@dom1.example").with_since_us((base_unix_s + 1000) * s).with_outcome("delivered").with_rule("greylist-rcpt")),
            ids_where([](int i) {
              return has_message(i) && i % 7 == 1 && i >= 1000 && !rejected(i) && !tempfailed(i) && faulted(i);
            }));
}

TEST_F(CaptureIndexSearch, NewestFirstInPages) {
  std::string error;
  auto index = capture_index::open(dir_, capture_index::busy::wait, error);
  ASSERT_TRUE(index) << error;
  auto page = index->search(filter().with_limit(10).with_offset(20), error);
  ASSERT_TRUE(page) << error;
  std::vector<std::string> ids;
  for (const auto& s : *page) ids.push_back(s.session);
  EXPECT_EQ(ids, ids_where([](int i) { return i < session_count - 20 && i >= session_count - 30; }));
}

TEST_F(CaptureIndexSearch, WhatTheIndexHoldsOfASession) {
  const auto found = search_all(dir_, filter().with_message_id("msg-390@example"));
  ASSERT_EQ(found.size(), 1u);
  const auto& s = found.front();
  EXPECT_EQ(s.file, id_of(390) + ".jsonl");
  EXPECT_EQ(format_rfc3339_us(s.started_at_us), "2026-01-01T00:06:30.000390Z");
  EXPECT_EQ(s.ended_at_us, s.started_at_us + 5'000);
  EXPECT_EQ(s.client, "192.0.2.40:1390");
  EXPECT_EQ(s.client_ip, "192.0.2.40");
  EXPECT_EQ(s.upstream, "mx.example:25");
  EXPECT_EQ(s.outcome, "rejected");
  EXPECT_EQ(s.end_reason, "client_quit");
  EXPECT_TRUE(s.complete);
  ASSERT_EQ(s.transactions.size(), 1u);
  EXPECT_EQ(s.transactions[0].mail_from, "user20@dom5.example");
  EXPECT_EQ(s.transactions[0].rcpt_to, (std::vector<std::string>{"rcpt87@to0.example", "extra390@to0.example"}));
  EXPECT_EQ(s.transactions[0].rcpt_codes, (std::vector<int>{250, 250}));
  EXPECT_EQ(s.transactions[0].message_id, "msg-390@example");
  EXPECT_EQ(s.transactions[0].outcome, "rejected");
  EXPECT_EQ(s.transactions[0].final_code, 550);
  EXPECT_EQ(s.transactions[0].final_enhanced, "5.1.1");
  EXPECT_EQ(s.replies, (std::vector<std::pair<int, std::string>>{{220, ""}, {250, ""}, {550, "5.1.1"}}));
  EXPECT_EQ(s.rules, std::vector<std::string>{"greylist-rcpt"});
}

TEST_F(CaptureIndexSearch, SummariesOfTheFilesEqualTheLiveRows) {
  for (const auto& live : search_all(dir_, filter().with_since_us((base_unix_s + 290) * 1'000'000LL).with_until_us((base_unix_s + 310) * 1'000'000LL))) {
    std::string error;
    auto cap = read_capture(dir_ / live.file, error);
    ASSERT_TRUE(cap) << error;
    EXPECT_EQ(summarize(*cap), live) << live.session;
  }
}

TEST(CaptureIndex, ReindexRebuildsAnIndexEqualToTheLiveOne) {
  scratch_dir dir;
  write_sessions(dir.path(), 0, 400);
  const auto live = search_all(dir.path());
  ASSERT_EQ(live.size(), 400u);
  std::string error;
  auto rebuilt_in_place = rebuild_index(dir.path(), error);
  ASSERT_TRUE(rebuilt_in_place) << error;
  EXPECT_EQ(rebuilt_in_place->indexed, 400u);
  EXPECT_EQ(search_all(dir.path()), live);
  remove_index_files(dir.path());
  auto rebuilt = rebuild_index(dir.path(), error);
  ASSERT_TRUE(rebuilt) << error;
  EXPECT_EQ(search_all(dir.path()), live);
}

TEST(CaptureIndex, ReindexDropsRowsOfVanishedOrUnreadableFilesAndReportsThem) {
  scratch_dir dir;
  write_sessions(dir.path(), 0, 10);
  fs::remove(dir.path() / (id_of(3) + ".jsonl"));
  std::ofstream(dir.path() / (id_of(4) + ".jsonl"), std::ios::trunc) << "not json\n";
  std::string error;
  auto r = rebuild_index(dir.path(), error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(r->indexed, 8u);
  EXPECT_EQ(r->removed, 2u);
  ASSERT_EQ(r->unreadable.size(), 1u);
  EXPECT_NE(r->unreadable[0].find(id_of(4) + ".jsonl:1"), std::string::npos) << r->unreadable[0];
  EXPECT_EQ(search_all(dir.path()).size(), 8u);
  EXPECT_TRUE(ids_found(dir.path(), filter().with_message_id("msg-3@example")).empty());
}

TEST(CaptureIndex, RetentionRemovesTheIndexRowsOfPrunedCaptures) {
  scratch_dir dir;
  write_sessions(dir.path(), 0, 6);
  for (int i = 0; i < 3; ++i)   // the three oldest, written two hours ago
    fs::last_write_time(dir.path() / (id_of(i) + ".jsonl"), fs::file_time_type::clock::now() - std::chrono::hours(2));
  const auto r = prune_with_index(dir.path(), retention{.max_age = std::chrono::hours(1), .max_bytes = {}},
                                  std::chrono::system_clock::now());
  EXPECT_EQ(r.removed, 3u);
  EXPECT_TRUE(r.errors.empty());
  std::vector<std::string> left;
  for (const auto& s : search_all(dir.path())) left.push_back(s.session);
  EXPECT_EQ(left, (std::vector<std::string>{id_of(5), id_of(4), id_of(3)}));
}

TEST(CaptureIndex, TheStoresOwnPruneRemovesIndexRowsToo) {
  scratch_dir dir;
  write_sessions(dir.path(), 0, 4);
  for (int i = 0; i < 2; ++i)
    fs::last_write_time(dir.path() / (id_of(i) + ".jsonl"), fs::file_time_type::clock::now() - std::chrono::hours(2));
  store_options options = indexed();
  options.retain.max_age = std::chrono::hours(1);
  write_sessions(dir.path(), 4, 5, options);   // prunes as it opens, then writes one more
  std::vector<std::string> left;
  for (const auto& s : search_all(dir.path())) left.push_back(s.session);
  EXPECT_EQ(left, (std::vector<std::string>{id_of(4), id_of(3), id_of(2)}));
}

TEST(CaptureIndex, ACorruptIndexIsReportedInOneLineAndRebuiltByReindex) {
  scratch_dir dir;
  write_sessions(dir.path(), 0, 5);
  remove_index_files(dir.path());
  std::ofstream(dir.path() / index_file_name, std::ios::binary) << std::string(4096, 'x');
  std::string error;
  EXPECT_FALSE(capture_index::open(dir.path(), capture_index::busy::wait, error));
  EXPECT_NE(error.find((dir.path() / index_file_name).string()), std::string::npos) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  error.clear();
  auto r = rebuild_index(dir.path(), error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(search_all(dir.path()).size(), 5u);
}

TEST(CaptureIndex, AFailingIndexIsCountedAndToldOnceAndNeverCostsACapture) {
  scratch_dir dir;
  fs::create_directories(dir.path() / index_file_name);   // a directory where the index should be
  int told = 0;
  store_options options = indexed();
  options.on_index_failure = [&told](const std::string&) { ++told; };
  std::string error;
  {
    auto st = store::open(dir.path(), error, options);
    ASSERT_TRUE(st) << error;
    for (int i = 0; i < 5; ++i) write_session(*st, i);
    st.reset();
  }
  EXPECT_EQ(told, 1);
  for (int i = 0; i < 5; ++i) {
    auto cap = read_capture(dir.path() / (id_of(i) + ".jsonl"), error);
    ASSERT_TRUE(cap) << error;
    EXPECT_TRUE(cap->complete);
  }
}

// Polls `done` for at most five seconds (the writer thread works on its own ticks).
bool eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 500 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return done();
}

TEST(CaptureIndex, ALockedIndexNeverHoldsTheWriterBackAndCatchesUpLater) {
  scratch_dir dir;
  write_sessions(dir.path(), 0, 1);
  // Another process holds the write lock, as a reindex batch does.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open((dir.path() / index_file_name).c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  int told = 0;
  store_options options = indexed();
  options.on_index_failure = [&told](const std::string&) { ++told; };
  std::string error;
  auto st = store::open(dir.path(), error, options);
  ASSERT_TRUE(st) << error;
  write_session(*st, 1);
  EXPECT_TRUE(eventually([&] { return st->counters().index_failures.load() >= 1; }));
  EXPECT_EQ(st->counters().indexed.load(), 0u);
  ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  write_session(*st, 2);   // the next batch adds both
  EXPECT_TRUE(eventually([&] { return st->counters().indexed.load() == 2; }));
  st.reset();
  EXPECT_EQ(told, 1);
  EXPECT_EQ(search_all(dir.path()).size(), 3u);
}

// The end record closes the capture and hands it to the index, though its session still has
// connections to close (a TLS close_notify, the linger after its FIN: seconds): a tool that
// hears session_ended finds the capture (a trial saw TLS sessions listed about 1 s late).
TEST(CaptureIndex, ACaptureIsIndexedAtItsEndRecordNotWhenItsSessionIsGone) {
  scratch_dir dir;
  std::string error;
  auto st = store::open(dir.path(), error, indexed());
  ASSERT_TRUE(st) << error;
  session_info info;
  info.id = "ended-not-gone";
  info.started_at = std::chrono::system_clock::now();
  auto cap = st->begin(info);
  cap->on_reply(1, protocol::leg::upstream, protocol::direction::in, reply_of(220, "", "mx ESMTP"));
  cap->on_end(2, "client_quit", "");
  EXPECT_TRUE(eventually([&] { return st->counters().indexed.load() == 1; }));
  EXPECT_EQ(st->counters().complete.load(), 1u);
  const auto found = search_all(dir.path());
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].session, "ended-not-gone");
  EXPECT_TRUE(found[0].complete);
  cap->on_note(3, "after the end: not recorded");   // nothing follows the end record
  cap.reset();
  EXPECT_EQ(st->counters().complete.load(), 1u);   // counted once
}

// A hostile trial: `captures prune` beside a running relay removed finished captures before
// the writer's next batch put their rows, and the index listed 103 sessions with no file.
TEST(CaptureIndex, ACaptureRemovedBeforeItsRowIsPutIsNotListed) {
  scratch_dir dir;
  std::string error;
  auto st = store::open(dir.path(), error, indexed());
  ASSERT_TRUE(st) << error;
  session_info info;
  info.id = "pruned-before-indexed";
  info.started_at = std::chrono::system_clock::now();
  auto cap = st->begin(info);
  cap->on_reply(1, protocol::leg::upstream, protocol::direction::in, reply_of(220, "", "mx ESMTP"));
  cap->on_end(2, "client_quit", "");
  // The batch waits up to 100 ms (writer.cpp index_batch_wait): the file goes first.
  ASSERT_TRUE(std::filesystem::remove(dir.path() / "pruned-before-indexed.jsonl"));
  EXPECT_TRUE(eventually([&] { return st->counters().indexed.load() == 1; }));
  EXPECT_TRUE(search_all(dir.path()).empty());
}

// A rule made of parts is searched by its own name too (a newcomer's trial: --rule
// cisco-pix-fixup found nothing, its sessions carry "cisco-pix-fixup/banner"); a longer name
// that only starts the same is another rule.
TEST(CaptureIndex, ARuleOfPartsIsFoundByItsNameAndNoOtherRuleIs) {
  scratch_dir dir;
  {
    std::string error;
    auto st = store::open(dir.path(), error, indexed());
    ASSERT_TRUE(st) << error;
    const std::vector<std::string> rules{"cisco-pix-fixup/banner", "cisco-pix-fixup-strict", "cisco-pix-fixup"};
    for (std::size_t i = 0; i < rules.size(); ++i) {
      session_info info;
      info.id = "rule-" + std::to_string(i);
      info.started_at = std::chrono::system_clock::time_point(std::chrono::seconds(base_unix_s + static_cast<long>(i)));
      auto cap = st->begin(info);
      cap->on_fault(1, protocol::fault_event{rules[i], "banner_mask", "rewrite", protocol::phase::banner, 0, 0, ""});
      cap->on_end(2, "client_quit", "");
    }
  }
  EXPECT_EQ(ids_found(dir.path(), filter().with_rule("cisco-pix-fixup")), (std::vector<std::string>{"rule-2", "rule-0"}));
  EXPECT_EQ(ids_found(dir.path(), filter().with_rule("cisco-pix-fixup/banner")), std::vector<std::string>{"rule-0"});
  EXPECT_EQ(ids_found(dir.path(), filter().with_rule("cisco-pix")), std::vector<std::string>{});
}

TEST(CaptureIndex, ANewIndexCoversTheDirectoryOnlyWhenItWasEmpty) {
  scratch_dir dir;
  const fs::path empty = dir.path() / "empty", older = dir.path() / "older";
  write_sessions(empty, 0, 2);
  write_sessions(older, 0, 2, store_options{});   // no index
  write_sessions(older, 2, 3);                    // an index created beside two older captures
  std::string error;
  auto a = capture_index::open(empty, capture_index::busy::wait, error);
  ASSERT_TRUE(a) << error;
  EXPECT_TRUE(a->covers_directory(error));
  auto b = capture_index::open(older, capture_index::busy::wait, error);
  ASSERT_TRUE(b) << error;
  EXPECT_FALSE(b->covers_directory(error));
  EXPECT_EQ(error, "");
  EXPECT_EQ(search_all(older).size(), 1u);
  std::string ignored;
  ASSERT_TRUE(rebuild_index(older, ignored));
  EXPECT_TRUE(b->covers_directory(error));
  EXPECT_EQ(search_all(older).size(), 3u);
}

TEST(CaptureIndex, FilterProblemsAreOneLine) {
  EXPECT_TRUE(filter_problem(filter().with_outcome("lost")));
  EXPECT_TRUE(filter_problem(filter().with_code("55")));
  EXPECT_TRUE(filter_problem(filter().with_code("6xx")));
  EXPECT_TRUE(filter_problem(filter().with_code("5.1")));
  EXPECT_TRUE(filter_problem(filter().with_since_us(10).with_until_us(10)));
  EXPECT_FALSE(filter_problem(filter().with_outcome("tempfailed").with_code("5.7.1").with_since_us(1).with_until_us(2)));
}

TEST(CaptureIndex, TimesReadAsTheWriterWritesThem) {
  EXPECT_EQ(parse_rfc3339_us("2026-01-01T00:00:01.5Z"), (base_unix_s + 1) * 1'000'000 + 500'000);
  EXPECT_EQ(parse_rfc3339_us("2026-01-01"), base_unix_s * 1'000'000);
  EXPECT_EQ(parse_rfc3339_us("2026-01-01T02:00:00+02:00"), base_unix_s * 1'000'000);
  EXPECT_FALSE(parse_rfc3339_us("2026-01-01T00:00:00"));
  EXPECT_FALSE(parse_rfc3339_us("yesterday"));
  EXPECT_FALSE(parse_rfc3339_us("9999999-99-99"));
  // A day past its month is no time (timegm made 2026-02-31 the 3rd of March).
  EXPECT_FALSE(parse_rfc3339_us("2026-02-29T00:00:00Z"));
  EXPECT_FALSE(parse_rfc3339_us("2026-04-31"));
  EXPECT_TRUE(parse_rfc3339_us("2028-02-29T00:00:00Z"));
  EXPECT_TRUE(parse_rfc3339_us("2000-02-29"));
  EXPECT_FALSE(parse_rfc3339_us("2100-02-29"));
  EXPECT_EQ(format_rfc3339_us(base_unix_s * 1'000'000 + 7), "2026-01-01T00:00:00.000007Z");
}

// A tester's trial: right after reindex named a corrupt capture, list counted it among the
// sessions in progress and said reindex would add it. A rebuild records the files it left
// out (unreadable, copies) as they were, for list and search to name rather than count.
TEST(CaptureIndex, ReindexRecordsTheFilesItLeftOutAsTheyWere) {
  scratch_dir dir;
  write_sessions(dir.path(), 0, 3);
  std::ofstream(dir.path() / (id_of(1) + ".jsonl"), std::ios::trunc) << "not json\n";
  fs::copy_file(dir.path() / (id_of(2) + ".jsonl"), dir.path() / "copy.jsonl");
  std::string error;
  auto r = rebuild_index(dir.path(), error);
  ASSERT_TRUE(r) << error;
  ASSERT_EQ(r->unreadable.size(), 1u);
  ASSERT_EQ(r->duplicates.size(), 1u);
  auto index = capture_index::open(dir.path(), capture_index::busy::wait, error);
  ASSERT_TRUE(index) << error;
  auto left = files_left_out(dir.path(), *index, error);
  ASSERT_TRUE(left) << error;
  ASSERT_EQ(left->size(), 2u);
  EXPECT_EQ((*left)[0].file, "copy.jsonl");
  EXPECT_FALSE((*left)[0].unreadable);
  EXPECT_EQ((*left)[0].problem, r->duplicates[0]);
  EXPECT_EQ((*left)[1].file, id_of(1) + ".jsonl");
  EXPECT_TRUE((*left)[1].unreadable);
  // Named by the file's name, not the directory reindex was given (reindex itself prints that).
  EXPECT_EQ((*left)[1].problem, id_of(1) + ".jsonl" + r->unreadable[0].substr((dir.path() / (id_of(1) + ".jsonl")).string().size()));
  EXPECT_EQ((*left)[1].size, 9u);
  // A file changed since is no longer known to be left out (it may be readable now); a
  // removed one neither.
  std::ofstream(dir.path() / (id_of(1) + ".jsonl"), std::ios::app) << "more\n";
  fs::remove(dir.path() / "copy.jsonl");
  left = files_left_out(dir.path(), *index, error);
  ASSERT_TRUE(left) << error;
  EXPECT_TRUE(left->empty());
  EXPECT_EQ(index->left_out(error)->size(), 2u) << "still recorded until the next rebuild";
  // The next rebuild replaces the record.
  fs::remove(dir.path() / (id_of(1) + ".jsonl"));
  index.reset();
  ASSERT_TRUE(rebuild_index(dir.path(), error)) << error;
  index = capture_index::open(dir.path(), capture_index::busy::wait, error);
  ASSERT_TRUE(index) << error;
  ASSERT_TRUE(index->left_out(error)) << error;
  EXPECT_TRUE(index->left_out(error)->empty());
}

// A file left out is recorded by its name in the directory, not with the path of the directory
// the rebuild was given: a reviewer's trial (`reindex --dir ix`, then `cd ix; list --dir .`)
// was told of "ix/FILE:1: ...", a path that did not exist from there.
TEST(CaptureIndex, AnUnreadableFileIsRecordedByItsNameNotTheDirectoryGiven) {
  scratch_dir dir;
  write_sessions(dir.path(), 0, 1);
  std::ofstream(dir.path() / "broken.jsonl", std::ios::trunc) << "{\"bad\n";
  std::string error;
  auto r = rebuild_index(dir.path(), error);
  ASSERT_TRUE(r) << error;
  ASSERT_EQ(r->unreadable.size(), 1u);
  // reindex names it with the path it was given, which is there from where it runs
  EXPECT_TRUE(r->unreadable[0].starts_with((dir.path() / "broken.jsonl").string() + ":1: ")) << r->unreadable[0];
  auto index = capture_index::open(dir.path(), capture_index::busy::wait, error);
  ASSERT_TRUE(index) << error;
  auto left = files_left_out(dir.path(), *index, error);
  ASSERT_TRUE(left) << error;
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].problem, "broken.jsonl" + r->unreadable[0].substr((dir.path() / "broken.jsonl").string().size()));
  EXPECT_EQ((*left)[0].problem.find(dir.path().string()), std::string::npos) << (*left)[0].problem;
}

// The table came within schema version 1: an index made before it has none, read as no file
// left out, and the next rebuild adds it.
TEST(CaptureIndex, AnIndexWithoutTheLeftOutTableReadsAsNoneLeftOut) {
  scratch_dir dir;
  write_sessions(dir.path(), 0, 2);
  std::ofstream(dir.path() / "broken.jsonl", std::ios::trunc) << "{\"bad\n";
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir.path() / index_file_name).c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db, "DROP TABLE left_out", nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(db);
  }
  std::string error;
  auto index = capture_index::open(dir.path(), capture_index::busy::wait, error);
  ASSERT_TRUE(index) << error;
  auto left = index->left_out(error);
  ASSERT_TRUE(left) << error;
  EXPECT_TRUE(left->empty());
  index.reset();
  ASSERT_TRUE(rebuild_index(dir.path(), error)) << error;
  index = capture_index::open(dir.path(), capture_index::busy::wait, error);
  ASSERT_TRUE(index) << error;
  left = files_left_out(dir.path(), *index, error);
  ASSERT_TRUE(left) << error;
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].file, "broken.jsonl");
  EXPECT_TRUE((*left)[0].unreadable);
}

}  // namespace

namespace {

// A QA trial: a BDAT sent without MAIL was indexed with mail_from "", so `search --from '<>'`
// (the null sender, a bounce's) found it. The row says without_mail, and no sender condition
// matches it: not "<>", not a pattern; a real MAIL FROM:<> still matches "<>".
TEST(CaptureIndex, ATransactionWithoutMailIsNoNullSender) {
  scratch_dir dir;
  {
    std::string error;
    auto st = store::open(dir.path(), error, indexed());
    ASSERT_TRUE(st) << error;
    const std::vector<std::pair<std::string, bool>> senders{{"", false}, {"", true}, {"alice@example.org", false}};
    for (std::size_t i = 0; i < senders.size(); ++i) {
      session_info info;
      info.id = "sender-" + std::to_string(i);
      info.started_at = std::chrono::system_clock::time_point(std::chrono::seconds(base_unix_s + static_cast<long>(i)));
      auto cap = st->begin(info);
      protocol::transaction_record t;
      t.mail_from = senders[i].first;
      t.without_mail = senders[i].second;
      t.rcpt_to = {"bob@example.net"};
      t.rcpt_codes = {250};
      t.result = protocol::outcome::rejected;
      cap->on_transaction(t);
      cap->on_end(2, "client_quit", "");
    }
  }
  EXPECT_EQ(ids_found(dir.path(), filter().with_sender("<>")), std::vector<std::string>{"sender-0"});
  EXPECT_EQ(ids_found(dir.path(), filter().with_sender("*")), (std::vector<std::string>{"sender-2", "sender-0"}));
  EXPECT_EQ(ids_found(dir.path(), filter().with_recipient("bob@example.net")).size(), 3u);
  const auto live = search_all(dir.path());
  ASSERT_EQ(live.size(), 3u);
  EXPECT_EQ(live[1].session, "sender-1");
  ASSERT_EQ(live[1].transactions.size(), 1u);
  EXPECT_TRUE(live[1].transactions[0].without_mail);
  EXPECT_FALSE(live[2].transactions[0].without_mail);
  // Read back from the file, and rebuilt, it is the same.
  std::string error;
  auto cap = read_capture(dir.path() / "sender-1.jsonl", error);
  ASSERT_TRUE(cap) << error;
  EXPECT_EQ(summarize(*cap), live[1]);
  remove_index_files(dir.path());
  ASSERT_TRUE(rebuild_index(dir.path(), error)) << error;
  EXPECT_EQ(search_all(dir.path()), live);
  EXPECT_EQ(ids_found(dir.path(), filter().with_sender("<>")), std::vector<std::string>{"sender-0"});
}

// The column came with schema version 2: an index of version 1 is not read (its rows lack
// it), said in one line, and replaced by reindex.
// An index of an earlier version (an upgrade) is a cache of the files: opened, it is made anew,
// empty and not covering the directory, so the relay goes on indexing and the next list or
// search rebuilds it from the files (relay/cli_captures_index.cpp). Version 1 is version 2
// without transactions.without_mail.
class EarlierIndex : public testing::Test {
 protected:
  void SetUp() override {
    write_sessions(dir.path(), 0, 3);
    ASSERT_TRUE(rebuild_index(dir.path(), error)) << error;
    sql("ALTER TABLE transactions DROP COLUMN without_mail");
    sql("PRAGMA user_version=1");
  }
  void sql(const std::string& statement) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir.path() / index_file_name).c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, statement.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << statement << ": " << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  std::unique_ptr<capture_index> open(capture_index::busy how = capture_index::busy::wait) {
    return capture_index::open(dir.path(), how, error);
  }
  scratch_dir dir;
  std::string error;
};

TEST_F(EarlierIndex, IsMadeAnewWhenOpenedAndTakesRowsOfTheNewShape) {
  {
    auto index = open();
    ASSERT_TRUE(index) << error;
    EXPECT_TRUE(index->created());
    EXPECT_FALSE(index->covers_directory(error)) << "the next list or search rebuilds it";
    session_summary s;
    s.session = "after-upgrade";
    s.file = "after-upgrade.jsonl";
    s.started_at_us = base_unix_s * 1'000'000;
    indexed_transaction t;
    t.without_mail = true;
    t.rcpt_to = {"bob@example.net"};
    t.rcpt_codes = {503};
    t.outcome = "rejected";
    s.transactions.push_back(t);
    ASSERT_TRUE(index->put(std::span<const session_summary>(&s, 1), error)) << error;
  }
  const auto found = search_all(dir.path());
  ASSERT_EQ(found.size(), 1u) << "made anew: nothing of the earlier version is kept";
  EXPECT_TRUE(found[0].transactions.at(0).without_mail);
  auto r = rebuild_index(dir.path(), error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(r->indexed, 3u);
}

// One a relay of the earlier version may still be recording into (relay_running) is left to
// the relay that replaces it, whose start makes it anew, or to reindex: the command line does
// not pull the tables from under it.
TEST_F(EarlierIndex, ARelayOfThatVersionMayStillRecordIntoIsLeftToTheRelay) {
  sql("INSERT OR REPLACE INTO meta VALUES('relay_running', '1')");
  EXPECT_FALSE(open(capture_index::busy::wait));
  EXPECT_NE(error.find("may still be recording into"), std::string::npos) << error;
  error.clear();
  auto relay = open(capture_index::busy::fail);
  ASSERT_TRUE(relay) << error;
  EXPECT_TRUE(relay->created());
}

// Not ours, though named and numbered like it: left as it is. Nor is a later version's.
TEST_F(EarlierIndex, ADatabaseWithTablesMailtapDoesNotMakeIsLeftAsItIs) {
  sql("CREATE TABLE precious(x)");
  EXPECT_FALSE(open());
  EXPECT_NE(error.find("with tables mailtap does not make"), std::string::npos) << error;
  sql("DROP TABLE precious");
  sql("PRAGMA user_version=" + std::to_string(index_schema_version + 1));
  error.clear();
  EXPECT_FALSE(open());
  EXPECT_NE(error.find("(found version " + std::to_string(index_schema_version + 1) + ")"), std::string::npos) << error;
}

}  // namespace

// Relay markers (captures/relay_marker.hpp): which relays record into a directory, so that a
// killed one is told from one still running beside another (a newcomer's trial: two relays
// sharing the default directory each took the other's single flag for a killed relay, and
// every list after them rebuilt the index from the files).
class RelayMarkers : public testing::Test {
 protected:
  void SetUp() override {
    write_sessions(dir.path(), 0, 2);   // an index that covers the directory
    auto index = capture_index::open(dir.path(), capture_index::busy::wait, error);
    ASSERT_TRUE(index && index->covers_directory(error)) << error;
  }
  void sql(const std::string& statement) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir.path() / index_file_name).c_str(), &db), SQLITE_OK);
    EXPECT_EQ(sqlite3_exec(db, statement.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << statement << ": " << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  std::vector<std::string> markers() {
    std::vector<std::string> keys;
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open((dir.path() / index_file_name).c_str(), &db), SQLITE_OK);
    sqlite3_stmt* q = nullptr;
    sqlite3_prepare_v2(db, "SELECT key FROM meta WHERE key LIKE 'relay_running%' AND value = '1' ORDER BY key", -1, &q, nullptr);
    while (sqlite3_step(q) == SQLITE_ROW) keys.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(q, 0)));
    sqlite3_finalize(q);
    sqlite3_close(db);
    return keys;
  }
  bool covers() {
    auto index = capture_index::open(dir.path(), capture_index::busy::wait, error);
    return index && index->covers_directory(error);
  }
  // The marker of a process that has ended (a relay killed).
  static std::string marker_of_an_ended_process() {
    const pid_t child = ::fork();
    if (child == 0) {
      ::pause();
      ::_exit(0);
    }
    const auto start = process_start_ticks(child);
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    return std::string(relay_marker_prefix) + std::to_string(child) + ":" + std::to_string(start.value_or(1));
  }
  scratch_dir dir;
  std::string error;
};

TEST_F(RelayMarkers, ARelayLeavesItsMarkerWhileItRecordsAndTakesItAwayWhenItStops) {
  auto st = store::open(dir.path(), error, indexed());
  ASSERT_TRUE(st) << error;
  EXPECT_EQ(markers(), std::vector<std::string>{own_relay_marker()});
  st.reset();
  EXPECT_EQ(markers(), std::vector<std::string>{});
  EXPECT_TRUE(covers());
}

TEST_F(RelayMarkers, AnotherRelayStillRunningIsNoKilledOne) {
  // pid 1 (this machine's init) is alive and stays the process it is.
  const std::string other = std::string(relay_marker_prefix) + "1:" + std::to_string(process_start_ticks(1).value());
  sql("INSERT INTO meta VALUES('" + other + "', '1')");
  auto st = store::open(dir.path(), error, indexed());
  ASSERT_TRUE(st) << error;
  EXPECT_TRUE(covers()) << "no rebuild for a relay that runs beside this one";
  st.reset();
  EXPECT_EQ(markers(), std::vector<std::string>{other}) << "its marker is its own to take away";
  EXPECT_TRUE(covers());
}

TEST_F(RelayMarkers, AMarkerWhoseProcessEndedIsAKilledRelayAndTheNextListRebuilds) {
  const std::string killed = marker_of_an_ended_process();
  EXPECT_FALSE(relay_marker_alive(killed));
  sql("INSERT INTO meta VALUES('" + killed + "', '1')");
  auto st = store::open(dir.path(), error, indexed());
  ASSERT_TRUE(st) << error;
  EXPECT_FALSE(covers());
  EXPECT_EQ(markers(), std::vector<std::string>{own_relay_marker()});
}

TEST_F(RelayMarkers, AProcessIdUsedAgainIsAnotherProcess) {
  // This process's id with another start time: the relay that wrote it has ended.
  const std::string reused = std::string(relay_marker_prefix) + std::to_string(::getpid()) + ":" +
                             std::to_string(process_start_ticks(::getpid()).value() + 1);
  EXPECT_FALSE(relay_marker_alive(reused));
  EXPECT_TRUE(relay_marker_alive(own_relay_marker()));
  EXPECT_FALSE(relay_marker_alive("relay_running:x:1"));
  EXPECT_FALSE(relay_marker_alive("relay_running:123"));
}

TEST_F(RelayMarkers, TheEarlierSingleFlagSetIsAKilledRelay) {
  sql("INSERT OR REPLACE INTO meta VALUES('relay_running', '1')");
  auto st = store::open(dir.path(), error, indexed());
  ASSERT_TRUE(st) << error;
  EXPECT_FALSE(covers());
  EXPECT_EQ(markers(), std::vector<std::string>{own_relay_marker()});
}
