// Fault records in captures (format version 2): the writer's record, read back through the
// reader; version 1 captures still read; malformed fault records are file:line errors; and
// `mailtap show` lists faults in time order, sums them up, and puts them in --json. The
// exact layout is pinned by tests/golden/show_faults.{txt,json} (show_test.cpp).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "captures/reader.hpp"
#include "captures/show.hpp"
#include "captures/writer.hpp"

namespace fs = std::filesystem;
using namespace mailtap::captures;
namespace protocol = mailtap::protocol;

namespace {

const fs::path golden_dir = fs::path(MAILTAP_SOURCE_DIR) / "tests" / "golden";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A golden capture's lines, each with its '\n'.
std::vector<std::string> lines_of(const std::string& golden) {
  std::vector<std::string> lines;
  std::istringstream in(slurp(golden_dir / golden));
  for (std::string l; std::getline(in, l);) lines.push_back(l + "\n");
  return lines;
}

std::string join(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l;
  return s;
}

// A scratch path named after the running test.
fs::path scratch_path(const std::string& suffix) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return fs::path(::testing::TempDir()) /
         (std::string("mailtap_") + info->test_suite_name() + "_" + info->name() + "_" +
          std::to_string(::getpid()) + suffix);
}

fs::path scratch(const std::string& content) {
  fs::path p = scratch_path(".jsonl");
  std::ofstream(p, std::ios::binary | std::ios::trunc) << content;
  return p;
}

capture load(const fs::path& p) {
  std::string error;
  auto c = read_capture(p, error);
  EXPECT_TRUE(c) << error;
  return c ? *c : capture{};
}

std::string load_error(const fs::path& p) {
  std::string error;
  auto c = read_capture(p, error);
  EXPECT_FALSE(c);
  return error;
}

std::vector<fault_event> faults_of(const capture& c) {
  std::vector<fault_event> out;
  for (const auto& e : c.events)
    if (const auto* f = std::get_if<fault_event>(&e)) out.push_back(*f);
  return out;
}

protocol::fault_event make_fault(std::string rule, std::string type, std::string decision, protocol::phase ph,
                                 std::uint64_t planned, std::uint64_t actual, std::string detail) {
  protocol::fault_event f;
  f.rule = std::move(rule);
  f.type = std::move(type);
  f.decision = std::move(decision);
  f.ph = ph;
  f.planned_delay_us = planned;
  f.actual_delay_us = actual;
  f.detail = std::move(detail);
  return f;
}

void expect_same(const protocol::fault_event& got, const protocol::fault_event& want) {
  EXPECT_EQ(got.rule, want.rule);
  EXPECT_EQ(got.type, want.type);
  EXPECT_EQ(got.decision, want.decision);
  EXPECT_EQ(got.ph, want.ph);
  EXPECT_EQ(got.planned_delay_us, want.planned_delay_us);
  EXPECT_EQ(got.actual_delay_us, want.actual_delay_us);
  EXPECT_EQ(got.detail, want.detail);
}

// A fault record line as the writer writes it.
std::string fault_line(std::uint64_t t, const std::string& rule, const std::string& decision, const std::string& phase,
                       std::uint64_t planned = 0, std::uint64_t actual = 0, const std::string& detail = "") {
  return R"({"type":"fault","t_us":)" + std::to_string(t) + R"(,"rule":")" + rule +
         R"(","fault_type":"reply","decision":")" + decision + R"(","phase":")" + phase +
         R"(","planned_delay_us":)" + std::to_string(planned) + R"(,"actual_delay_us":)" + std::to_string(actual) +
         R"(,"detail":")" + detail + "\"}\n";
}

// Where `row` is in `text`; a failure when it is not.
std::size_t row_of(const std::string& text, const std::string& row) {
  std::size_t at = text.find(row);
  EXPECT_NE(at, std::string::npos) << "no row \"" << row << "\" in\n" << text;
  return at;
}

}  // namespace

// ---------------------------------------------------------------- writer -> reader

TEST(CaptureFaults, WriterRoundTrip) {
  fs::path dir = scratch_path(".d");
  fs::remove_all(dir);
  const std::vector<std::pair<std::uint64_t, protocol::fault_event>> written{
      {0, make_fault("slow-link", "throttle", "plan", protocol::phase::connect, 0, 0, "to client 1024 bytes/s")},
      {1500, make_fault("slow-banner", "delay", "delay", protocol::phase::banner, 2000, 2013, "")},
      {7500, make_fault("greylist-rcpt", "greylist", "reply", protocol::phase::rcpt, 0, 0,
                        "451 4.7.1 \"Greylisted\"\ttry later \xc3\xbc")},
      {9000, make_fault("", "", "disconnect", protocol::phase::data_end, 0, 0, "")},
  };
  {
    std::string error;
    auto st = store::open(dir, error);
    ASSERT_TRUE(st) << error;
    session_info info;
    info.id = "faults-roundtrip";
    info.seed = 99;
    info.client = "192.0.2.1:1000";
    info.listen = "127.0.0.1:2525";
    info.upstream = "builtin";
    info.bare_eol = "strict";
    info.started_at = std::chrono::system_clock::now();
    auto cap = st->begin(info);
    cap->on_command(1000, "EHLO x");
    for (const auto& [t, f] : written) cap->on_fault(t, f);
    cap->on_note(9100, "after the faults");
    cap->on_end(9200, "client_quit", "");
  }   // the capture closes, the store writes everything out and joins its thread
  fs::path file = dir / "faults-roundtrip.jsonl";

  capture c = load(file);
  EXPECT_EQ(c.header.version, format_version);
  EXPECT_EQ(format_version, 5);
  EXPECT_TRUE(c.complete);
  auto faults = faults_of(c);
  ASSERT_EQ(faults.size(), written.size());
  for (std::size_t i = 0; i < written.size(); ++i) {
    EXPECT_EQ(faults[i].t_us, written[i].first);
    expect_same(faults[i].fault, written[i].second);
  }
  // In file order among the other events.
  ASSERT_EQ(c.events.size(), 6u);
  EXPECT_TRUE(std::holds_alternative<command_event>(c.events.front()));
  EXPECT_TRUE(std::holds_alternative<note_event>(c.events.back()));

  // The record's exact shape (FORMAT.md): these fields and no others.
  std::istringstream in(slurp(file));
  std::size_t fault_records = 0;
  for (std::string line; std::getline(in, line);) {
    auto o = boost::json::parse(line).as_object();
    if (o.at("type") != "fault") continue;
    ++fault_records;
    std::set<std::string> keys;
    for (const auto& kv : o) keys.insert(std::string(kv.key()));
    EXPECT_EQ(keys, (std::set<std::string>{"type", "t_us", "rule", "fault_type", "decision", "phase",
                                           "planned_delay_us", "actual_delay_us", "detail"}));
    if (o.at("rule") == "slow-banner") {
      EXPECT_EQ(o.at("t_us").to_number<std::uint64_t>(), 1500u);
      EXPECT_EQ(o.at("fault_type"), "delay");
      EXPECT_EQ(o.at("decision"), "delay");
      EXPECT_EQ(o.at("phase"), "banner");
      EXPECT_EQ(o.at("planned_delay_us").to_number<std::uint64_t>(), 2000u);
      EXPECT_EQ(o.at("actual_delay_us").to_number<std::uint64_t>(), 2013u);
      EXPECT_EQ(o.at("detail"), "");
    }
  }
  EXPECT_EQ(fault_records, written.size());
  fs::remove_all(dir);
}

// ---------------------------------------------------------------- reading

TEST(CaptureFaults, GoldenModel) {
  capture c = load(golden_dir / "show_faults.jsonl");
  EXPECT_EQ(c.header.version, 2);
  EXPECT_TRUE(c.complete);
  auto faults = faults_of(c);
  ASSERT_EQ(faults.size(), 5u);
  EXPECT_EQ(faults[1].t_us, 1500u);
  expect_same(faults[1].fault, make_fault("slow-banner", "delay", "delay", protocol::phase::banner, 2000, 2013, ""));
  EXPECT_EQ(faults[3].fault.detail, "451 4.7.1 Greylisted, try again in 300 seconds");
  EXPECT_EQ(faults[3].fault.ph, protocol::phase::rcpt);
}

TEST(CaptureFaults, Version1CaptureStillReads) {
  capture c = load(golden_dir / "show_basic.jsonl");
  EXPECT_EQ(c.header.version, 1);   // as found in the file
  EXPECT_TRUE(c.complete);
  EXPECT_TRUE(faults_of(c).empty());
  std::string text = render_text(c);
  EXPECT_EQ(text.find("F! "), std::string::npos);
  EXPECT_EQ(text.find("\nfaults ("), std::string::npos) << "no fault summary without faults";

  // The same records stamped version 2 read into the same model and report.
  auto lines = lines_of("show_basic.jsonl");
  auto at = lines[0].find("\"version\":1");
  ASSERT_NE(at, std::string::npos);
  lines[0].replace(at, 11, "\"version\":2");
  capture v2 = load(scratch(join(lines)));
  EXPECT_EQ(v2.header.version, 2);
  EXPECT_EQ(render_text(v2), text);
  EXPECT_EQ(v2.events.size(), c.events.size());
}

TEST(CaptureFaults, MalformedFaultRecordsNameFileAndLine) {
  struct bad {
    std::string line;
    std::string error;
  };
  const std::vector<bad> cases{
      {R"({"type":"fault","t_us":1,"rule":"r","decision":"reply","phase":"rcpt","planned_delay_us":0,"actual_delay_us":0,"detail":""})",
       "fault record: missing field \"fault_type\""},
      {fault_line(1, "r", "reply", "teleport"), "fault record: unknown phase \"teleport\""},
      {fault_line(1, "r", "explode", "rcpt"), "fault record: unknown decision \"explode\""},
      {R"({"type":"fault","t_us":1,"rule":"r","fault_type":"delay","decision":"delay","phase":"mail","planned_delay_us":-5,"actual_delay_us":0,"detail":""})",
       "fault record: field \"planned_delay_us\" is not a non-negative integer"},
      {R"({"type":"fault","t_us":1,"rule":7,"fault_type":"reply","decision":"reply","phase":"mail","planned_delay_us":0,"actual_delay_us":0,"detail":""})",
       "fault record: field \"rule\" is not a string"},
      {R"({"type":"fault","t_us":"soon","rule":"r","fault_type":"reply","decision":"reply","phase":"mail","planned_delay_us":0,"actual_delay_us":0,"detail":""})",
       "fault record: field \"t_us\" is not a non-negative integer"},
  };
  for (const auto& b : cases) {
    auto lines = lines_of("show_faults.jsonl");
    std::string line = b.line;
    if (line.back() != '\n') line += '\n';
    lines[3] = line;
    fs::path p = scratch(join(lines));
    EXPECT_EQ(load_error(p), p.string() + ":4: " + b.error) << b.line;
  }
}

TEST(CaptureFaults, EveryDecisionNameReads) {
  auto lines = lines_of("show_faults.jsonl");
  std::vector<std::string> decisions{"proceed", "delay", "reply", "reply_and_close", "disconnect", "reset",
                                     "stall", "blackhole", "unreachable", "rewrite", "plan"};
  for (const auto& d : decisions) lines.insert(lines.end() - 1, fault_line(9650, "r", d, "quit"));
  capture c = load(scratch(join(lines)));
  auto faults = faults_of(c);
  ASSERT_EQ(faults.size(), 5 + decisions.size());
  for (std::size_t i = 0; i < decisions.size(); ++i) EXPECT_EQ(faults[5 + i].fault.decision, decisions[i]);
}

// ---------------------------------------------------------------- show

TEST(CaptureFaults, TextTranscriptAndSummary) {
  std::string text = render_text(load(golden_dir / "show_faults.jsonl"));
  // The banner's delay record was written after the delayed banner went out, but is shown
  // at its own time, after the banner came in and before the next command.
  std::size_t banner_in = row_of(text, "+    1.500 ms  S< 220 mx.example.net ESMTP\n");
  std::size_t delay = row_of(
      text, "+    1.500 ms  F! slow-banner (delay) delay at banner [delay planned 2.000 ms, actual 2.013 ms]\n");
  std::size_t ehlo = row_of(text, "C> EHLO client.example\n");
  EXPECT_LT(banner_in, delay);
  EXPECT_LT(delay, ehlo);
  row_of(text, "+    0.000 ms  F! slow-link (throttle) plan at connect: to client 1024 bytes/s\n");
  row_of(text, "+    5.000 ms  F! no-starttls (capabilities) rewrite at ehlo: STARTTLS masked as XXXXXXXA\n");
  row_of(text, "+    7.500 ms  F! greylist-rcpt (greylist) reply at rcpt: 451 4.7.1 Greylisted, try again in 300 seconds\n");

  // The summary comes last.
  std::string summary =
      "\nfaults (5; delays planned 2.000 ms, actual 2.013 ms)\n"
      "   1 x slow-link (throttle) plan\n"
      "   1 x slow-banner (delay) delay\n"
      "   1 x no-starttls (capabilities) rewrite\n"
      "   2 x greylist-rcpt (greylist) reply\n";
  ASSERT_GE(text.size(), summary.size());
  EXPECT_EQ(text.substr(text.size() - summary.size()), summary) << text;
}

TEST(CaptureFaults, FaultWrittenLateIsShownAtItsTime) {
  auto lines = lines_of("show_faults.jsonl");
  // After the QUIT command (9.000 ms), a fault that happened at 8.500 ms.
  auto quit = std::find_if(lines.begin(), lines.end(),
                           [](const std::string& l) { return l.find(R"("text":"QUIT")") != std::string::npos; });
  ASSERT_NE(quit, lines.end());
  lines.insert(quit + 1, fault_line(8500, "late", "stall", "rcpt", 0, 400, "held"));
  capture c = load(scratch(join(lines)));
  std::string text = render_text(c);
  std::size_t late = row_of(text, "+    8.500 ms  F! late (reply) stall at rcpt: held [delay planned 0.000 ms, actual 0.400 ms]\n");
  std::size_t quit_row = row_of(text, "+    9.000 ms  C> QUIT\n");
  EXPECT_LT(late, quit_row);
  EXPECT_NE(text.find("\nfaults (6; delays planned 2.000 ms, actual 2.413 ms)\n"), std::string::npos) << text;

  // --json lists events in the same order.
  auto v = boost::json::parse(render_json(c));
  std::uint64_t last = 0;
  for (const auto& e : v.at("events").as_array()) {
    std::uint64_t t = e.at("t_us").to_number<std::uint64_t>();
    EXPECT_LE(last, t);
    last = t;
  }
}

TEST(CaptureFaults, JsonEvents) {
  auto v = boost::json::parse(render_json(load(golden_dir / "show_faults.jsonl")));
  EXPECT_EQ(v.at("version").to_number<int>(), 2);
  std::vector<boost::json::object> faults;
  for (const auto& e : v.at("events").as_array())
    if (e.at("kind") == "fault") faults.push_back(e.as_object());
  ASSERT_EQ(faults.size(), 5u);
  const auto& delay = faults[1];
  EXPECT_EQ(delay.at("t_us").to_number<std::uint64_t>(), 1500u);
  EXPECT_TRUE(delay.at("leg").is_null());
  EXPECT_TRUE(delay.at("dir").is_null());
  EXPECT_EQ(delay.at("rule"), "slow-banner");
  EXPECT_EQ(delay.at("fault_type"), "delay");
  EXPECT_EQ(delay.at("decision"), "delay");
  EXPECT_EQ(delay.at("phase"), "banner");
  EXPECT_EQ(delay.at("planned_delay_us").to_number<std::uint64_t>(), 2000u);
  EXPECT_EQ(delay.at("actual_delay_us").to_number<std::uint64_t>(), 2013u);
  EXPECT_EQ(delay.at("detail"), "");
  EXPECT_EQ(delay.at("text"), "slow-banner (delay) delay at banner [delay planned 2.000 ms, actual 2.013 ms]");
  EXPECT_EQ(faults[3].at("detail"), "451 4.7.1 Greylisted, try again in 300 seconds");
}
