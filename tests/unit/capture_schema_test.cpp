// captures/schema.hpp: every record type the writer writes has exactly the fields the schema
// lists, the reader requires each of them (and only tolerates the absence of the optional
// ones), every value survives the round trip, `ended_at` is the session's end, and the
// barrier (when_written) fdatasyncs only when store_options::fsync is set.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "captures/reader.hpp"
#include "captures/schema.hpp"
#include "captures/writer.hpp"
#include "scratch_dir.hpp"

namespace fs = std::filesystem;
using namespace mailtap::captures;
namespace protocol = mailtap::protocol;
namespace json = boost::json;

namespace {

std::vector<std::string> lines_of(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

session_info info_at(std::chrono::system_clock::time_point started_at) {
  session_info info;
  info.id = "schema";
  info.seed = 7;
  info.client = "192.0.2.1:1000";
  info.listen = "127.0.0.1:2525";
  info.upstream = "mx.example:25";
  info.bare_eol = "normalize";
  info.normalize_to = "space";   // as relay/session.cpp says under normalize
  info.started_at = started_at;
  info.started_mono_us = 123;
  return info;
}

// 2020-01-01T00:00:00Z.
const auto new_year_2020 = std::chrono::system_clock::time_point(std::chrono::seconds(1'577'836'800));

// Long enough to be recorded by reference when the relay copies it upstream.
const std::string body_of_copy = "DATA\r\n" + std::string(400, 'b') + "\r\n.\r\n";

// One record of every type, with values that differ from the defaults.
fs::path write_every_record(const fs::path& dir) {
  std::string error;
  auto st = store::open(dir, error);
  EXPECT_TRUE(st) << error;
  auto cap = st->begin(info_at(new_year_2020));
  // Binary enough for base64: as text it would be 30 characters, as base64 16 (+8 allowed).
  cap->on_bytes(10, protocol::leg::client, protocol::direction::in, std::string("EHLO x\r\n\0\0\0\xff", 12));
  cap->on_command(11, "EHLO x");
  cap->on_relay_command(12, "STARTTLS");
  protocol::reply r;
  r.code = 250;
  r.enhanced = "2.0.0";
  r.lines = {"2.0.0 first", "second"};
  cap->on_reply(13, protocol::leg::upstream, protocol::direction::in, r);
  protocol::tls_summary tls{"TLSv1.3", "TLS_AES_128_GCM_SHA256", "mx.example", "CN=mx", "AB:CD", false, false, 900,
                            "untrusted: self-signed certificate"};
  cap->on_tls(14, protocol::leg::upstream, tls);
  tls.verification.clear();
  cap->on_tls(15, protocol::leg::client, tls);   // the client leg has no `verification`
  cap->on_note(16, "a note");
  cap->on_fault(17, protocol::fault_event{"grey", "greylist", "reply", protocol::phase::rcpt, 5, 6, "451 4.7.1 later"});
  // A message body, and the relay's copy of it upstream: recorded as a bytes_ref to it.
  cap->on_bytes(18, protocol::leg::client, protocol::direction::in, body_of_copy);
  cap->on_bytes(19, protocol::leg::upstream, protocol::direction::out, body_of_copy.substr(6));
  cap->on_stage(protocol::stage_record{protocol::phase::mail, 20, 30, 10, 4, 5});
  protocol::transaction_record t;
  t.mail_from = "a@x";
  t.rcpt_to = {"b@y", "c@y"};
  t.rcpt_codes = {250, 550};
  t.message_id = "<id@x>";
  t.size = 1234;
  t.final_reply = r;
  t.result = protocol::outcome::delivered;
  t.synthesized = false;
  t.without_mail = true;   // as a BDAT without MAIL's (its mail_from is then "", here a value to check)
  t.start_us = 40;
  t.end_us = 50;
  cap->on_transaction(t);
  cap->on_end(1'500'000, "client_quit", "bye");
  return dir / "schema.jsonl";
}

const schema::record_fields* schema_of(std::string_view type) {
  for (const auto& r : schema::records())
    if (r.type == type) return &r;
  return nullptr;
}

TEST(CaptureSchema, TheWriterWritesExactlyTheSchemasFieldsForEveryRecordType) {
  scratch_dir dir;
  const fs::path file = write_every_record(dir.path());
  std::set<std::string> types_seen, one_of_seen;
  for (const auto& line : lines_of(file)) {
    const json::object o = json::parse(line).as_object();
    const std::string type(o.at(schema::field::type).as_string());
    types_seen.insert(type);
    const auto* s = schema_of(type);
    ASSERT_NE(s, nullptr) << "record type not in the schema: " << type;
    std::set<std::string> keys, expected{std::string(schema::field::type)};
    for (const auto& kv : o) keys.insert(std::string(kv.key()));
    for (auto f : s->fields) expected.insert(std::string(f));
    // Fields added within a version: older captures lack them, the writer always writes them
    // (the header's normalize_to under bare_eol normalize, as here).
    for (auto f : s->optional) expected.insert(std::string(f));
    // Exactly one of one_of: which one the writer chose is counted below.
    std::size_t chosen = 0;
    for (auto f : s->one_of) {
      if (!o.contains(f)) continue;
      ++chosen;
      expected.insert(std::string(f));
      one_of_seen.insert(std::string(f));
    }
    EXPECT_EQ(chosen, s->one_of.empty() ? 0u : 1u) << line;
    if (type == schema::record::tls && o.at(schema::field::leg) == "client")
      expected.erase(std::string(schema::field::verification));
    EXPECT_EQ(keys, expected) << line;
    if (type == schema::record::transaction) {
      std::set<std::string> reply_keys, reply_expected;
      for (const auto& kv : o.at(schema::field::final_reply).as_object()) reply_keys.insert(std::string(kv.key()));
      for (auto f : schema::final_reply_fields()) reply_expected.insert(std::string(f));
      EXPECT_EQ(reply_keys, reply_expected);
    }
  }
  std::set<std::string> all_types;
  for (const auto& r : schema::records()) all_types.insert(std::string(r.type));
  EXPECT_EQ(types_seen, all_types);
  // The text bytes were written as latin1, the binary ones (a NUL, a 0xff) as b64.
  std::set<std::string> all_one_of;
  for (const auto& r : schema::records())
    for (auto f : r.one_of) all_one_of.insert(std::string(f));
  EXPECT_EQ(one_of_seen, all_one_of);
  const json::object header = json::parse(lines_of(file).front()).as_object();
  EXPECT_EQ(header.at(schema::field::format).as_string(), format_name);
  EXPECT_EQ(header.at(schema::field::version).to_number<int>(), format_version);
}

TEST(CaptureSchema, EveryValueSurvivesTheRoundTrip) {
  scratch_dir dir;
  std::string error;
  auto c = read_capture(write_every_record(dir.path()), error);
  ASSERT_TRUE(c) << error;
  EXPECT_TRUE(c->complete);
  EXPECT_EQ(c->header.version, format_version);
  EXPECT_EQ(c->header.session, "schema");
  EXPECT_EQ(c->header.seed, 7u);
  EXPECT_EQ(c->header.client, "192.0.2.1:1000");
  EXPECT_EQ(c->header.listen, "127.0.0.1:2525");
  EXPECT_EQ(c->header.upstream, "mx.example:25");
  EXPECT_EQ(c->header.started_at, "2020-01-01T00:00:00.000000Z");
  EXPECT_EQ(c->header.started_mono_us, 123u);
  EXPECT_EQ(c->header.relay.rfind("mailtap ", 0), 0u);
  EXPECT_EQ(c->header.bare_eol, "normalize");
  EXPECT_EQ(c->header.normalize_to, "space");
  ASSERT_EQ(c->events.size(), 10u);
  const auto& b = std::get<bytes_event>(c->events[0]);
  EXPECT_EQ(b.data, std::string("EHLO x\r\n\0\0\0\xff", 12));
  EXPECT_EQ(std::get<command_event>(c->events[1]).leg, protocol::leg::client);
  EXPECT_EQ(std::get<command_event>(c->events[2]).leg, protocol::leg::upstream);
  EXPECT_EQ(std::get<command_event>(c->events[2]).dir, protocol::direction::out);
  const auto& r = std::get<reply_event>(c->events[3]);
  EXPECT_EQ(r.reply.code, 250);
  EXPECT_EQ(r.reply.enhanced, "2.0.0");
  EXPECT_EQ(r.reply.lines, (std::vector<std::string>{"2.0.0 first", "second"}));
  const auto& tls = std::get<tls_event>(c->events[4]).tls;
  EXPECT_EQ(tls.cipher, "TLS_AES_128_GCM_SHA256");
  EXPECT_EQ(tls.peer_sha256, "AB:CD");
  EXPECT_EQ(tls.handshake_us, 900u);
  EXPECT_EQ(tls.verification, "untrusted: self-signed certificate");
  EXPECT_EQ(std::get<note_event>(c->events[6]).text, "a note");
  const auto& f = std::get<fault_event>(c->events[7]);
  EXPECT_EQ(f.fault.rule, "grey");
  EXPECT_EQ(f.fault.planned_delay_us, 5u);
  EXPECT_EQ(f.fault.actual_delay_us, 6u);
  const auto& copy = std::get<bytes_event>(c->events[9]);
  EXPECT_EQ(copy.t_us, 19u);
  EXPECT_EQ(copy.leg, protocol::leg::upstream);
  EXPECT_EQ(copy.dir, protocol::direction::out);
  EXPECT_EQ(copy.data, body_of_copy.substr(6));
  ASSERT_EQ(c->stages.size(), 1u);
  EXPECT_EQ(c->stages[0].ph, protocol::phase::mail);
  EXPECT_EQ(c->stages[0].relay_us, 30u - 10u - 5u);
  EXPECT_EQ(c->stages[0].client_us, 5u);
  ASSERT_EQ(c->transactions.size(), 1u);
  const auto& t = c->transactions[0];
  EXPECT_EQ(t.rcpt_codes, (std::vector<int>{250, 550}));
  EXPECT_EQ(t.message_id, "<id@x>");
  EXPECT_EQ(t.size, 1234u);
  ASSERT_TRUE(t.final_reply);
  EXPECT_EQ(t.final_reply->text, "first\nsecond");   // every line, not the first only
  EXPECT_TRUE(t.without_mail);
  EXPECT_EQ(t.end_us, 50u);
  ASSERT_TRUE(c->end);
  EXPECT_EQ(c->end->reason, "client_quit");
  EXPECT_EQ(c->end->detail, "bye");
}

// The header's normalize_to is written only under bare_eol normalize (relay/session.cpp); a
// capture without it reads as "" (an older normalize capture: replay/script.cpp reads its bare
// CR and LF as line endings, as the relay did then).
TEST(CaptureSchema, NormalizeToIsWrittenOnlyUnderNormalize) {
  scratch_dir dir;
  std::string error;
  auto st = store::open(dir.path(), error);
  ASSERT_TRUE(st) << error;
  session_info info = info_at(new_year_2020);
  info.id = "strict";
  info.bare_eol = "strict";
  info.normalize_to.clear();
  auto cap = st->begin(info);
  cap->on_end(10, "client_quit", "");
  cap.reset();
  const auto lines = lines_of(dir.path() / "strict.jsonl");
  ASSERT_FALSE(lines.empty());
  EXPECT_FALSE(json::parse(lines.front()).as_object().contains(schema::field::normalize_to)) << lines.front();
  auto c = read_capture(dir.path() / "strict.jsonl", error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->header.bare_eol, "strict");
  EXPECT_EQ(c->header.normalize_to, "");
}

// The reader asks for the fields by the schema's names: without any required one a record
// is an error naming it; without an optional one it still reads.
TEST(CaptureSchema, TheReaderRequiresEveryFieldTheSchemaLists) {
  scratch_dir dir;
  const fs::path file = write_every_record(dir.path());
  const auto lines = lines_of(file);
  const fs::path edited = dir.path() / "edited.jsonl";
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const json::object o = json::parse(lines[i]).as_object();
    const auto* s = schema_of(o.at(schema::field::type).as_string());
    ASSERT_NE(s, nullptr);
    for (auto f : s->fields) {
      if (!o.contains(f)) continue;   // the client leg's tls record has no verification
      json::object without = o;
      without.erase(f);
      std::ofstream out(edited, std::ios::binary | std::ios::trunc);
      for (std::size_t j = 0; j < lines.size(); ++j) out << (j == i ? json::serialize(without) : lines[j]) << "\n";
      out.close();
      std::string error;
      const bool optional = std::find(s->optional.begin(), s->optional.end(), f) != s->optional.end();
      const bool read = read_capture(edited, error).has_value();
      EXPECT_EQ(read, optional) << s->type << " without " << f << ": " << error;
      if (!optional && s->type != schema::record::header) {
        EXPECT_NE(error.find("missing field \"" + std::string(f) + "\""), std::string::npos) << error;
      }
    }
  }
}

// A record with one_of fields has exactly one: without any, or with two, it is an error.
TEST(CaptureSchema, TheReaderRequiresExactlyOneOfTheAlternatives) {
  scratch_dir dir;
  const auto lines = lines_of(write_every_record(dir.path()));
  const fs::path edited = dir.path() / "edited.jsonl";
  std::size_t tried = 0;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const json::object o = json::parse(lines[i]).as_object();
    const auto* s = schema_of(o.at(schema::field::type).as_string());
    ASSERT_NE(s, nullptr);
    for (auto f : s->one_of) {
      if (!o.contains(f)) continue;
      json::object without = o, with_both = o;
      without.erase(f);
      for (auto other : s->one_of)
        if (other != f) with_both[other] = other == schema::field::b64 ? "YQ==" : "a";
      for (const auto& [variant, says] : {std::pair{without, std::string("missing field")},
                                          std::pair{with_both, std::string("both")}}) {
        std::ofstream out(edited, std::ios::binary | std::ios::trunc);
        for (std::size_t j = 0; j < lines.size(); ++j) out << (j == i ? json::serialize(variant) : lines[j]) << "\n";
        out.close();
        std::string error;
        EXPECT_FALSE(read_capture(edited, error).has_value()) << json::serialize(variant);
        EXPECT_NE(error.find(says), std::string::npos) << error;
        ++tried;
      }
    }
  }
  EXPECT_EQ(tried, 4u);   // one latin1 and one b64 bytes record, each without and with both
}

TEST(CaptureSchema, EndedAtIsWhenTheSessionEndedNotWhenTheRecordWasWritten) {
  scratch_dir dir;
  std::string error;
  auto c = read_capture(write_every_record(dir.path()), error);
  ASSERT_TRUE(c) << error;
  ASSERT_TRUE(c->end);
  // started 2020-01-01T00:00:00Z, ended 1.5 s later on the session's clock.
  EXPECT_EQ(c->end->ended_at, "2020-01-01T00:00:01.500000Z");
}

// Runs one barrier after a transaction record; returns the file's lines as the barrier saw them.
std::vector<std::string> barrier_after_a_transaction(store& st, const std::string& id) {
  session_info info = info_at(std::chrono::system_clock::now());
  info.id = id;
  auto cap = st.begin(info);
  cap->on_transaction(protocol::transaction_record{});
  std::promise<std::vector<std::string>> seen;
  const fs::path file = st.dir() / (id + ".jsonl");
  cap->when_written([&] { seen.set_value(lines_of(file)); });
  auto lines = seen.get_future().get();
  cap->on_end(1, "client_quit", "");
  return lines;
}

// A hostile client's trial: 8-bit bytes in an address were written raw into the command and
// transaction records, so the lines were not JSON (which must be UTF-8) for any strict reader.
// Well-formed UTF-8 (an SMTPUTF8 address) stays itself; any other byte is written as \xNN.
TEST(CaptureSchema, TextFieldsAreUtf8WhateverThePeerSent) {
  scratch_dir dir;
  std::string error;
  {
    auto st = store::open(dir.path(), error);
    ASSERT_TRUE(st) << error;
    auto cap = st->begin(info_at(new_year_2020));
    cap->on_command(1, "MAIL FROM:<caf\xe9@x> J\xc3\xbcrgen \xed\xa0\x80 \xc3");
    protocol::transaction_record t;
    t.mail_from = "caf\xe9@x";
    t.rcpt_to = {"\xff\xfe@d", "j\xc3\xbcrgen@d"};
    t.rcpt_codes = {250, 250};
    t.message_id = "<\x80@x>";
    t.result = protocol::outcome::aborted;
    cap->on_transaction(t);
    cap->on_end(10, "client_quit", "");
  }
  const auto lines = lines_of(dir.path() / "schema.jsonl");
  ASSERT_EQ(lines.size(), 4u);
  for (const auto& line : lines) {
    boost::json::error_code ec;
    boost::json::parse(line, ec);   // strict: invalid UTF-8 is an error
    EXPECT_FALSE(ec) << ec.message() << ": " << line;
  }
  const auto command = boost::json::parse(lines[1]).as_object();
  EXPECT_EQ(command.at("text").as_string(), "MAIL FROM:<caf\\xe9@x> J\xc3\xbcrgen \\xed\\xa0\\x80 \\xc3");
  const auto txn = boost::json::parse(lines[2]).as_object();
  EXPECT_EQ(txn.at("mail_from").as_string(), "caf\\xe9@x");
  EXPECT_EQ(txn.at("rcpt_to").as_array().at(0).as_string(), "\\xff\\xfe@d");
  EXPECT_EQ(txn.at("rcpt_to").as_array().at(1).as_string(), "j\xc3\xbcrgen@d");
  EXPECT_EQ(txn.at("message_id").as_string(), "<\\x80@x>");
  // The index has them as the file does, and as a rebuild from the file would.
  auto c = read_capture(dir.path() / "schema.jsonl", error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->transactions.at(0).mail_from, "caf\\xe9@x");
}

// The end record closes the file; a barrier of the same batch, its last message's, still
// gets its sync (a review: the writer found no descriptor and released it unsynced).
TEST(CaptureBarrier, ABarrierAfterTheEndRecordIsStillSynced) {
  scratch_dir dir;
  std::string error;
  store_options synced;
  synced.fsync = true;
  auto st = store::open(dir.path(), error, synced);
  ASSERT_TRUE(st) << error;
  auto cap = st->begin(info_at(new_year_2020));
  protocol::transaction_record t;
  t.mail_from = "a@x";
  t.result = protocol::outcome::delivered;
  cap->on_transaction(t);
  cap->on_end(10, "client_quit", "");   // in the same batch as the transaction's barrier
  std::promise<void> released;
  cap->when_written([&] { released.set_value(); });
  ASSERT_EQ(released.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_GE(st->counters().syncs.load(), 1u);
  EXPECT_EQ(st->counters().write_failures.load(), 0u);
  EXPECT_FALSE(cap->failed());
}

TEST(CaptureBarrier, WrittenBeforeTheBarrierIsReleasedAndSyncedOnlyWhenAskedTo) {
  scratch_dir dir;
  std::string error;
  {
    auto st = store::open(dir.path() / "plain", error);
    ASSERT_TRUE(st) << error;
    const auto lines = barrier_after_a_transaction(*st, "plain");
    ASSERT_EQ(lines.size(), 2u);   // header, transaction
    EXPECT_NE(lines[1].find("\"transaction\""), std::string::npos);
    EXPECT_EQ(st->counters().syncs.load(), 0u);
  }
  {
    store_options synced;
    synced.fsync = true;
    auto st = store::open(dir.path() / "synced", error, synced);
    ASSERT_TRUE(st) << error;
    const auto lines = barrier_after_a_transaction(*st, "synced-1");
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(st->counters().syncs.load(), 1u);
    barrier_after_a_transaction(*st, "synced-2");
    EXPECT_EQ(st->counters().syncs.load(), 2u);
    EXPECT_EQ(st->counters().write_failures.load(), 0u);
  }
}

}  // namespace

namespace {

// Waits until the writer has handled every record queued so far (a barrier is handled in
// queue order, after them), then returns the store's complete and incomplete counts.
std::pair<std::uint64_t, std::uint64_t> counted_after_the_writer(store& st, const std::string& id) {
  session_info info = info_at(std::chrono::system_clock::now());
  info.id = id;
  auto probe = st.begin(info);
  std::promise<void> done;
  probe->when_written([&] { done.set_value(); });
  done.get_future().get();
  return {st.counters().complete.load(), st.counters().incomplete.load()};
}

// The shutdown summary's "captures: N complete, M incomplete" (relay/cli_run.cpp): a capture
// whose file could not be written is incomplete even when its session ended in order.
TEST(CaptureCounters, AFailedCaptureIsIncompleteHoweverItsSessionEnded) {
  scratch_dir dir;
  std::string error;
  auto st = store::open(dir.path() / "caps", error);
  ASSERT_TRUE(st) << error;
  {
    session_info info = info_at(std::chrono::system_clock::now());
    info.id = "written";
    auto cap = st->begin(info);
    cap->on_end(1, "client_quit", "");
  }
  EXPECT_EQ(counted_after_the_writer(*st, "probe-1"), std::make_pair(std::uint64_t{1}, std::uint64_t{0}));
  fs::remove_all(dir.path() / "caps");   // the next capture cannot even be created
  {
    session_info info = info_at(std::chrono::system_clock::now());
    info.id = "failed";
    auto cap = st->begin(info);
    cap->on_end(1, "client_quit", "");
  }
  // Incomplete now: "failed", and "probe-1" (never ended). Counted when the session ended,
  // "failed" was complete, as its session was.
  EXPECT_EQ(counted_after_the_writer(*st, "probe-2"), std::make_pair(std::uint64_t{1}, std::uint64_t{2}));
  EXPECT_GE(st->counters().write_failures.load(), 1u);
}

}  // namespace

namespace {

// without_mail, added within version 5 (a BDAT without MAIL): the writer writes it false too,
// and a transaction record written before it, without the field, reads false.
TEST(CaptureSchema, WithoutMailIsWrittenEitherWayAndAbsentReadsFalse) {
  scratch_dir dir;
  std::string error;
  {
    auto st = store::open(dir.path(), error);
    ASSERT_TRUE(st) << error;
    auto cap = st->begin(info_at(new_year_2020));
    protocol::transaction_record t;
    t.result = protocol::outcome::rejected;
    cap->on_transaction(t);
    cap->on_end(10, "client_quit", "");
  }
  auto lines = lines_of(dir.path() / "schema.jsonl");
  ASSERT_EQ(lines.size(), 3u);
  json::object txn = json::parse(lines[1]).as_object();
  EXPECT_EQ(txn.at(schema::field::without_mail), false);
  txn.erase(schema::field::without_mail);
  lines[1] = json::serialize(txn);
  const fs::path older = dir.path() / "older.jsonl";
  {
    std::ofstream out(older, std::ios::binary);
    for (const auto& l : lines) out << l << "\n";
  }
  auto c = read_capture(older, error);
  ASSERT_TRUE(c) << error;
  ASSERT_EQ(c->transactions.size(), 1u);
  EXPECT_FALSE(c->transactions[0].without_mail);
}

}  // namespace
