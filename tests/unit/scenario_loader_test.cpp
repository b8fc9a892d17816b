// policies/scenario_loader: every common key and every type's keys, strictness (one-line
// errors naming file, line and key, first problem in file order), scenario files, and the
// firewall profiles' expansion.
#include "policies/scenario_loader.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "policies/engine.hpp"
#include "policies/limits.hpp"

namespace {

namespace fs = std::filesystem;
using namespace mailtap::policies;
using mailtap::protocol::phase;
using mailtap::protocol::reply_spec;

constexpr std::uint64_t second_us = 1'000'000;

load_result load_text(const std::string& text, const std::string& name = "s.toml") {
  toml::table doc = toml::parse(text, name);
  return rules_from_toml(doc, name);
}

std::vector<rule> ok(const std::string& text) {
  auto res = load_text(text);
  EXPECT_TRUE(res.ok()) << res.error;
  return res.rules;
}

rule one(const std::string& text) {
  auto rules = ok(text);
  EXPECT_EQ(rules.size(), 1u);
  return rules.empty() ? rule{} : rules.front();
}

// Expects failure; returns the one-line error.
std::string error_of(const std::string& text) {
  auto res = load_text(text);
  EXPECT_FALSE(res.ok()) << text;
  EXPECT_TRUE(res.rules.empty());
  EXPECT_EQ(res.error.find('\n'), std::string::npos) << res.error;
  return res.error;
}

// A fresh directory under the system temp dir, removed at the end of the test.
class temp_dir {
 public:
  temp_dir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("mailtap_scenario_test_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

 private:
  fs::path path_;
};

// ---- good input ------------------------------------------------------------------------

TEST(ScenarioLoader, ReadmeExample) {
  rule r = one(R"(# Mailbox full: the recipient's mailbox is over quota (field article 1).
[[fault]]
name = "mailbox-full"
type = "reply"
phase = "rcpt"
recipient = "*@full.example"
code = 552
enhanced = "5.2.2"
text = "Mailbox full"
)");
  EXPECT_EQ(r.name, "mailbox-full");
  EXPECT_EQ(r.type(), "reply");
  EXPECT_EQ(r.phases, std::vector<phase>{phase::rcpt});
  EXPECT_EQ(r.match.recipient, "*@full.example");
  EXPECT_EQ(std::get<reply_params>(r.params).reply, (reply_spec{552, "5.2.2", "Mailbox full"}));
}

TEST(ScenarioLoader, EveryCommonKey) {
  rule r = one(R"(
[[fault]]
name = "all-keys"
type = "reply"
code = 550
phase = ["mail", "rcpt", "data_end"]
verb = "MA?L"
argument = "FROM:*"
sender = "*@spam.example"
sender_domain = "spam.example"
recipient = "bob@*"
recipient_domain = "dest.example"
ehlo = "*.example"
client = ["127.0.0.0/8", "::1/128"]
tls = false
nth_session = 3
nth_transaction = 2
after = "250ms"
for = "2m"
until = 2030-01-01T01:00:00+01:00
probability = 0.25
max_count = 7
line_longer_than = 100
address_longer_than = 50
recipients_more_than = 10
)");
  const matcher& m = r.match;
  EXPECT_EQ(r.phases, (std::vector<phase>{phase::mail, phase::rcpt, phase::data_end}));
  EXPECT_EQ(m.verb, "MA?L");
  EXPECT_EQ(m.argument, "FROM:*");
  EXPECT_EQ(m.sender, "*@spam.example");
  EXPECT_EQ(m.sender_domain, "spam.example");
  EXPECT_EQ(m.recipient, "bob@*");
  EXPECT_EQ(m.recipient_domain, "dest.example");
  EXPECT_EQ(m.ehlo, "*.example");
  ASSERT_EQ(m.client.size(), 2u);
  EXPECT_EQ(m.client[0].to_string(), "127.0.0.0/8");
  EXPECT_EQ(m.client[1].to_string(), "::1/128");
  EXPECT_EQ(m.tls, false);
  EXPECT_EQ(m.nth_session, 3u);
  EXPECT_EQ(m.nth_transaction, 2u);
  EXPECT_EQ(m.after_us, 250'000u);
  EXPECT_EQ(m.for_us, 120 * second_us);
  EXPECT_EQ(m.until_s, 1'893'456'000);   // 2030-01-01T00:00:00Z
  EXPECT_DOUBLE_EQ(m.probability, 0.25);
  EXPECT_EQ(m.max_count, 7u);
  EXPECT_EQ(m.line_longer_than, 100u);
  EXPECT_EQ(m.address_longer_than, 50u);
  EXPECT_EQ(m.recipients_more_than, 10u);
}

TEST(ScenarioLoader, SingleClientAndIntegerProbability) {
  rule r = one("[[fault]]\nname='x'\ntype='reset'\nphase='mail'\nclient='10.0.0.0/8'\nprobability=1\n");
  ASSERT_EQ(r.match.client.size(), 1u);
  EXPECT_DOUBLE_EQ(r.match.probability, 1.0);
}

TEST(ScenarioLoader, EveryTypesKeys) {
  auto rules = ok(R"(
[[fault]]
name = "d1"
type = "delay"
phase = "banner"
delay = "5s"
[[fault]]
name = "d2"
type = "delay"
phase = "mail"
when = "command"
min = "1s"
max = "2s"
[[fault]]
name = "d3"
type = "delay"
phase = "data_end"
mean = "1m"
jitter = "10s"
[[fault]]
name = "rc"
type = "reply_and_close"
phase = "mail"
code = 554
text = "go away"
[[fault]]
name = "dc"
type = "disconnect"
phase = "rcpt"
code = 421
enhanced = "4.4.2"
text = "bye"
[[fault]]
name = "rst"
type = "reset"
phase = "data"
[[fault]]
name = "st"
type = "stall"
phase = "auth"
max = "1h"
[[fault]]
name = "th"
type = "throttle"
bytes_per_second = 300
direction = "to_upstream"
[[fault]]
name = "sl"
type = "slice"
segment = 7
gap = "0ms"
direction = "to_client"
split_dot = true
[[fault]]
name = "caps"
type = "capabilities"
strip = ["PIPELINING", "chunking"]
mask = ["starttls"]
size = 0
[[fault]]
name = "ban"
type = "banner"
text = "*** ** ****"
[[fault]]
name = "grey"
type = "greylist"
retry_after = "30s"
code = 450
enhanced = "4.2.0"
text = "later"
[[fault]]
name = "quota"
type = "quota"
limit = 5
window = "1h"
per = "sender"
code = 421
text = "enough"
[[fault]]
name = "ftp"
type = "fail_then_pass"
failures = 3
key = "sender"
code = 452
enhanced = "4.3.1"
text = "full"
[[fault]]
name = "bh"
type = "blackhole"
text = "Ok: queued as FAKE"
[[fault]]
name = "down"
type = "upstream_unreachable"
mode = "no_greeting"
[[fault]]
name = "vf"
type = "verb_filter"
allow = ["HELO", "mail"]
phase = ["helo", "mail", "other"]
[[fault]]
name = "sdw"
type = "split_dot_withhold"
)");
  ASSERT_EQ(rules.size(), 18u);
  const auto& d1 = std::get<delay_params>(rules[0].params);
  EXPECT_EQ(d1.draw, delay_params::draw_kind::fixed);
  EXPECT_EQ(d1.when, delay_params::when_kind::reply);
  EXPECT_EQ(d1.delay_us, 5 * second_us);
  const auto& d2 = std::get<delay_params>(rules[1].params);
  EXPECT_EQ(d2.draw, delay_params::draw_kind::uniform);
  EXPECT_EQ(d2.when, delay_params::when_kind::command);
  EXPECT_EQ(d2.min_us, second_us);
  EXPECT_EQ(d2.max_us, 2 * second_us);
  const auto& d3 = std::get<delay_params>(rules[2].params);
  EXPECT_EQ(d3.draw, delay_params::draw_kind::normal);
  EXPECT_EQ(d3.mean_us, 60 * second_us);
  EXPECT_EQ(d3.jitter_us, 10 * second_us);
  EXPECT_EQ(std::get<reply_and_close_params>(rules[3].params).reply, (reply_spec{554, "", "go away"}));
  EXPECT_EQ(std::get<disconnect_params>(rules[4].params).reply, (reply_spec{421, "4.4.2", "bye"}));
  EXPECT_EQ(rules[5].type(), "reset");
  EXPECT_EQ(std::get<stall_params>(rules[6].params).max_us, 3600 * second_us);
  const auto& th = std::get<throttle_params>(rules[7].params);
  EXPECT_EQ(th.bytes_per_second, 300u);
  EXPECT_EQ(th.direction, shaping_direction::to_upstream);
  EXPECT_TRUE(rules[7].phases.empty());
  const auto& sl = std::get<slice_params>(rules[8].params);
  EXPECT_EQ(sl.segment_bytes, 7u);
  EXPECT_EQ(sl.gap_us, 0u);
  EXPECT_EQ(sl.direction, shaping_direction::to_client);
  EXPECT_TRUE(sl.split_dot);
  const auto& caps = std::get<capabilities_params>(rules[9].params);
  EXPECT_EQ(caps.strip, (std::vector<std::string>{"PIPELINING", "CHUNKING"}));
  EXPECT_EQ(caps.mask, std::vector<std::string>{"STARTTLS"});
  EXPECT_EQ(caps.size, 0u);
  EXPECT_EQ(rules[9].phases, std::vector<phase>{phase::ehlo});
  EXPECT_EQ(std::get<banner_params>(rules[10].params).text, "*** ** ****");
  EXPECT_EQ(rules[10].phases, std::vector<phase>{phase::banner});
  const auto& grey = std::get<greylist_params>(rules[11].params);
  EXPECT_EQ(grey.retry_after_us, 30 * second_us);
  EXPECT_EQ(grey.reply, (reply_spec{450, "4.2.0", "later"}));
  EXPECT_EQ(rules[11].phases, std::vector<phase>{phase::rcpt});
  const auto& quota = std::get<quota_params>(rules[12].params);
  EXPECT_EQ(quota.limit, 5u);
  EXPECT_EQ(quota.window_us, 3600 * second_us);
  EXPECT_EQ(quota.per, quota_params::per_kind::sender);
  EXPECT_EQ(quota.reply, (reply_spec{421, "4.7.0", "enough"}));
  EXPECT_EQ(rules[12].phases, std::vector<phase>{phase::mail});
  const auto& ftp = std::get<fail_then_pass_params>(rules[13].params);
  EXPECT_EQ(ftp.failures, 3u);
  EXPECT_EQ(ftp.key, fail_then_pass_params::key_kind::sender);
  EXPECT_EQ(ftp.reply, (reply_spec{452, "4.3.1", "full"}));
  EXPECT_EQ(rules[13].phases, std::vector<phase>{phase::data_end});
  EXPECT_EQ(std::get<blackhole_params>(rules[14].params).text, "Ok: queued as FAKE");
  EXPECT_EQ(rules[14].phases, std::vector<phase>{phase::data_end});
  EXPECT_TRUE(std::get<upstream_unreachable_params>(rules[15].params).no_greeting);
  EXPECT_EQ(rules[15].phases, std::vector<phase>{phase::connect});
  EXPECT_EQ(std::get<verb_filter_params>(rules[16].params).allow, (std::vector<std::string>{"HELO", "MAIL"}));
  EXPECT_EQ(rules[16].phases, (std::vector<phase>{phase::helo, phase::mail, phase::other}));
  EXPECT_EQ(rules[17].type(), "split_dot_withhold");

  // All of them load into an engine.
  engine e(1, [] { return std::uint64_t{0}; }, [] { return std::int64_t{0}; });
  EXPECT_FALSE(e.add_all(rules));
  EXPECT_EQ(e.list().size(), 18u);
}

TEST(ScenarioLoader, DefaultsPerType) {
  auto rules = ok(R"(
[[fault]]
name = "q"
type = "quota"
limit = 1
window = "1s"
[[fault]]
name = "g"
type = "greylist"
[[fault]]
name = "f"
type = "fail_then_pass"
failures = 1
[[fault]]
name = "s"
type = "slice"
segment = 10
[[fault]]
name = "u"
type = "upstream_unreachable"
[[fault]]
name = "v"
type = "verb_filter"
allow = []
)");
  ASSERT_EQ(rules.size(), 6u);
  const auto& q = std::get<quota_params>(rules[0].params);
  EXPECT_EQ(q.per, quota_params::per_kind::all);
  EXPECT_EQ(q.reply.code, 452);
  EXPECT_EQ(q.reply.enhanced, "4.5.3");
  const auto& g = std::get<greylist_params>(rules[1].params);
  EXPECT_EQ(g.retry_after_us, 300 * second_us);
  EXPECT_EQ(g.reply.code, 451);
  EXPECT_EQ(g.reply.enhanced, "4.7.1");
  const auto& f = std::get<fail_then_pass_params>(rules[2].params);
  EXPECT_EQ(f.key, fail_then_pass_params::key_kind::envelope);
  EXPECT_EQ(f.reply.code, 451);
  EXPECT_EQ(f.reply.enhanced, "4.3.0");
  const auto& s = std::get<slice_params>(rules[3].params);
  EXPECT_EQ(s.gap_us, 10'000u);
  EXPECT_EQ(s.direction, shaping_direction::both);
  EXPECT_FALSE(s.split_dot);
  EXPECT_FALSE(std::get<upstream_unreachable_params>(rules[4].params).no_greeting);
  EXPECT_EQ(rules[5].phases.size(), 15u);   // every phase with a verb
}

TEST(ScenarioLoader, NoFaultKeyIsNoRules) {
  toml::table doc = toml::parse("listen = \"127.0.0.1:25\"\n");
  auto res = rules_from_toml(doc, "mailtap.toml");
  EXPECT_TRUE(res.ok());
  EXPECT_TRUE(res.rules.empty());
}

// ---- errors ----------------------------------------------------------------------------

TEST(ScenarioLoader, ErrorsNameFileLineAndKey) {
  struct bad_case {
    std::string text;
    const char* expected;
  };
  const bad_case cases[] = {
      {"[[fault]]\nname='a'\ntype='reply'\nphase='mail'\ncode=550\ncolour='red'\n", "s.toml:6: key 'colour': unknown key"},
      {"[[fault]]\nname='a'\ntype='delay'\nphase='mail'\ndelay='1s'\ncode=550\n",
       "s.toml:6: key 'code': not a key of type 'delay' (it belongs to reply, reply_and_close, disconnect, greylist, "
       "quota, fail_then_pass)"},
      {"[[fault]]\nname='a'\ntype='reply'\nphase='mail'\ncode='550'\n",
       "s.toml:5: key 'code': expected an integer from 200 to 599, got string"},
      {"[[fault]]\nname='a'\ntype='reply'\nphase='mail'\ncode=650\n",
       "s.toml:5: key 'code': expected an integer from 200 to 599, got 650"},
      {"[[fault]]\nname='a'\ntype='delay'\nphase='mail'\n\ndelay='5 s'\n",
       "s.toml:6: key 'delay': expected a duration like \"250ms\", \"5s\", \"2m\", \"1h\" or \"7d\", got '5 s'"},
      {"[[fault]]\nname='a'\ntype='delay'\nphase='mail'\ndelay=5\n",
       "s.toml:5: key 'delay': expected a duration string like \"250ms\", \"5s\", \"2m\", \"1h\" or \"7d\", got integer"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='mail'\nclient=['10.0.0.0/8',\n  '10.0.0.300/8']\n",
       "s.toml:6: key 'client': bad CIDR '10.0.0.300/8': not an IPv4 or IPv6 address"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='body'\n",
       "s.toml:4: key 'phase': unknown phase 'body' (expected one of connect|banner|ehlo|helo|starttls|auth|mail|rcpt|"
       "data|data_end|bdat|rset|noop|vrfy|expn|help|quit|other)"},
      {"[[fault]]\nname='a'\ntype='banner'\nmask=true\nphase=['banner', 'mail']\n",
       "s.toml:5: key 'phase': phase 'mail' is not allowed for type 'banner' (allowed: banner)"},
      {"[[fault]]\nname='a'\ntype='reset'\n", "s.toml:1: key 'phase': required for type 'reset'"},
      {"[[fault]]\nname='a'\nphase='mail'\n", "s.toml:1: key 'type': required (one of delay|reply|"},
      {"[[fault]]\nname='a'\ntype='explode'\n", "s.toml:3: key 'type': unknown fault type 'explode'"},
      {"[[fault]]\ntype='reset'\nphase='mail'\n", "s.toml:1: key 'name': required"},
      {"[[fault]]\nname='a b'\ntype='reset'\nphase='mail'\n", "s.toml:2: key 'name': expected 1 to 100 printable"},
      {"[[fault]]\nname='a'\ntype='reply'\nphase='mail'\n", "s.toml:1: key 'code': required for type 'reply'"},
      {"[[fault]]\nname='a'\ntype='throttle'\nbytes_per_second=10\nsender='*'\n",
       "s.toml:5: key 'sender': not allowed here: type 'throttle' is session-wide"},
      {"[[fault]]\nname='a'\ntype='slice'\nsegment=1\nphase='mail'\n",
       "s.toml:5: key 'phase': not allowed here: type 'slice' is session-wide"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='mail'\nuntil=2030-01-01T00:00:00\n",
       "s.toml:5: key 'until': expected a TOML date-time with an offset, e.g. 2030-01-01T00:00:00Z, got a local date-time"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='mail'\nuntil='tomorrow'\n",
       "s.toml:5: key 'until': expected a TOML date-time with an offset, e.g. 2030-01-01T00:00:00Z, got string"},
      {"[[fault]]\nname='a'\ntype='delay'\nphase='mail'\ndelay='1s'\nmin='1s'\nmax='2s'\n",
       "s.toml:6: key 'min': choose one of 'delay', 'min' + 'max' or 'mean' + 'jitter'"},
      {"[[fault]]\nname='a'\ntype='delay'\nphase='mail'\nmin='3s'\nmax='2s'\n", "s.toml:5: key 'min': is greater than 'max'"},
      {"[[fault]]\nname='a'\ntype='delay'\nphase='mail'\nmean='3s'\n", "s.toml:1: key 'jitter': required with 'mean'"},
      {"[[fault]]\nname='a'\ntype='delay'\nphase='mail'\n",
       "s.toml:1: key 'delay': required: 'delay', or 'min' and 'max', or 'mean' and 'jitter'"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='mail'\nprobability=1.5\n",
       "s.toml:5: key 'probability': expected a number from 0 to 1, got 1.5"},
      {"[[fault]]\nname='a'\ntype='reply'\nphase='mail'\ncode=550\nenhanced='4.2.2'\n",
       "s.toml:6: key 'enhanced': class 4 does not match code 550"},
      {"[[fault]]\nname='a'\ntype='reply'\nphase='mail'\ncode=550\nenhanced='5.2'\n",
       "s.toml:6: key 'enhanced': expected an enhanced status code like \"5.2.2\" (RFC 3463), got '5.2'"},
      {"[[fault]]\nname='a'\ntype='reply'\nphase='mail'\ncode=550\ntext=\"two\\r\\nlines\"\n",
       "s.toml:6: key 'text': only printable ASCII on one line is allowed"},
      {"[[fault]]\nname='a'\ntype='quota'\nlimit=1\nwindow='1m'\ncode=250\n",
       "s.toml:6: key 'code': expected an integer from 400 to 599, got 250"},
      {"[[fault]]\nname='a'\ntype='quota'\nlimit=1\n", "s.toml:1: key 'window': required for type 'quota'"},
      {"[[fault]]\nname='a'\ntype='quota'\nlimit=1\nwindow='1m'\ncode=550\nenhanced='4.5.3'\n",
       "s.toml:7: key 'enhanced': class 4 does not match code 550"},
      {"[[fault]]\nname='a'\ntype='quota'\nlimit=1\nwindow='1m'\nenhanced='5.4.5'\n",
       "s.toml:6: key 'enhanced': class 5 does not match code 452"},
      // Item 19: a code the relay cannot stand behind is reported at the code's line, not the table's.
      {"[[fault]]\nname='a'\ntype='reply'\nphase='mail'\n\ncode=354\n", "s.toml:6: key 'code': code 354: a fault's reply"},
      {"# mailbox\n[[fault]]\nname='a'\ntype='reply'\nphase='data_end'\ncode=250\n",
       "s.toml:6: key 'code': code 250 at phase 'data_end'"},
      {"[[fault]]\nname='a'\ntype='reply_and_close'\nphase='mail'\ncode=334\n\n\ntext='bye'\n",
       "s.toml:5: key 'code': code 334"},
      {"[[fault]]\nname='a'\ntype='reply'\nphase='bdat'\ncode=452\n", "s.toml:4: key 'phase': phase 'bdat' takes no reply"},
      // Item 21: nth_recipient counts RCPTs, so it means something only at `rcpt`.
      {"[[fault]]\nname='a'\ntype='reply'\nphase='mail'\ncode=452\nnth_recipient=2\n",
       "s.toml:6: key 'nth_recipient': nth_recipient matches only at phase 'rcpt'"},
      {"[[fault]]\nname='a'\ntype='reply'\nphase='rcpt'\ncode=452\nnth_recipient=0\n",
       "s.toml:6: key 'nth_recipient': expected an integer from 1 to 100000, got 0"},
      {"[[fault]]\nname='a'\ntype='fail_then_pass'\nfailures=0\n",
       "s.toml:4: key 'failures': expected an integer from 1 to 1000000000, got 0"},
      {"[[fault]]\nname='a'\ntype='banner'\n", "s.toml:1: key 'mask': type 'banner' needs 'mask = true' or 'text'"},
      {"[[fault]]\nname='a'\ntype='banner'\nmask=true\ntext='x'\n", "s.toml:5: key 'text': choose 'mask = true' or 'text', not both"},
      {"[[fault]]\nname='a'\ntype='capabilities'\nstrip=['STARTTLS', 'start tls']\n",
       "s.toml:4: key 'strip': 'start tls' is not a verb or keyword"},
      {"[[fault]]\nname='a'\ntype='capabilities'\n", "s.toml:1: key 'strip': type 'capabilities' needs 'strip', 'mask' or 'size'"},
      {"[[fault]]\nname='a'\ntype='verb_filter'\nallow=['HELO','helo']\n", "s.toml:4: key 'allow': 'helo' is listed twice"},
      {"[[fault]]\nname='a'\ntype='verb_filter'\nphase='data_end'\nallow=['HELO']\n",
       "s.toml:4: key 'phase': phase 'data_end' is not allowed for type 'verb_filter'"},
      {"[[fault]]\nname='a'\ntype='blackhole'\nphase='rcpt'\n", "s.toml:4: key 'phase': phase 'rcpt' is not allowed for type 'blackhole'"},
      {"[[fault]]\nname='a'\ntype='upstream_unreachable'\nmode='maybe'\n",
       "s.toml:4: key 'mode': expected one of refused|no_greeting, got 'maybe'"},
      {"[[fault]]\nname='a'\ntype='throttle'\n", "s.toml:1: key 'bytes_per_second': required for type 'throttle'"},
      {"[[fault]]\nname='a'\ntype='slice'\ngap='1ms'\n", "s.toml:1: key 'segment': required unless split_dot = true"},
      {"[[fault]]\nname='a'\ntype='disconnect'\nphase='mail'\ntext='x'\n", "s.toml:5: key 'text': needs 'code'"},
      {"[[fault]]\nname='a'\ntype='stall'\nphase='mail'\nmax='0s'\n", "s.toml:5: key 'max': expected a duration > 0"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='mail'\nfor='0s'\n", "s.toml:5: key 'for': expected a duration > 0"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='mail'\nnth_session=0\n",
       "s.toml:5: key 'nth_session': expected an integer from 1 to 1000000000, got 0"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase=['mail','mail']\n", "s.toml:4: key 'phase': phase 'mail' is listed twice"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='mail'\nsender_domain='a@b'\n", "s.toml:5: key 'sender_domain': expected a domain"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='mail'\ntls='yes'\n", "s.toml:5: key 'tls': expected true or false, got string"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='mail'\nline_longer_than=-1\n",
       "s.toml:5: key 'line_longer_than': expected an integer from 0 to 1048576, got -1"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='mail'\n[[fault]]\nname='a'\ntype='reset'\nphase='rcpt'\n",
       "s.toml:6: key 'name': duplicate rule name 'a' (first at line 1)"},
      {"[fault]\nname='a'\n", "s.toml:1: key 'fault': expected [[fault]] tables"},
      {"[[fault]]\nname='fw'\ntype='firewall'\nprofile='cisco-fw'\n",
       "s.toml:4: key 'profile': expected one of cisco-pix-fixup|cisco-asa-esmtp, got 'cisco-fw'"},
      {"[[fault]]\nname='fw'\ntype='firewall'\n", "s.toml:1: key 'profile': required"},
      {"[[fault]]\nname='fw'\ntype='firewall'\nprofile='cisco-pix-fixup'\nsender='*'\n",
       "s.toml:5: key 'sender': not allowed here: a firewall can match only"},
      {"[[fault]]\nname='fw'\ntype='firewall'\nprofile='cisco-pix-fixup'\ncode=550\n",
       "s.toml:5: key 'code': not a key of type 'firewall'"},
      {"[[fault]]\nname='" + std::string(95, 'f') + "'\ntype='firewall'\nprofile='cisco-pix-fixup'\n",
       "s.toml:2: key 'name': firewall part 'fffff"},
      {"[[fault]]\nname='fw/banner'\ntype='reset'\nphase='mail'\n[[fault]]\nname='fw'\ntype='firewall'\n"
       "profile='cisco-pix-fixup'\n",
       "s.toml:6: key 'name': duplicate rule name 'fw/banner' (first at line 1)"},
  };
  for (const auto& c : cases) {
    const std::string err = error_of(c.text);
    EXPECT_EQ(err.rfind(c.expected, 0), 0u) << "input:\n" << c.text << "\nerror:    " << err << "\nexpected: " << c.expected;
  }
}

TEST(ScenarioLoader, FirstProblemInFileOrderWins) {
  // toml++ iterates keys alphabetically; the error still names the earliest line.
  EXPECT_EQ(error_of("[[fault]]\nname='a'\ntype='reply'\nzzz=1\nphase='mail'\ncode=9\n"), "s.toml:4: key 'zzz': unknown key");
  EXPECT_EQ(error_of("[[fault]]\nname='a'\ntype='reply'\nphase='mail'\ncode=550\n[[fault]]\nname='b'\ntype='nope'\n"),
            "s.toml:8: key 'type': unknown fault type 'nope' (expected one of delay|reply|reply_and_close|disconnect|"
            "reset|stall|throttle|slice|capabilities|banner|greylist|quota|fail_then_pass|blackhole|"
            "upstream_unreachable|verb_filter|split_dot_withhold|firewall)");
}

TEST(ScenarioLoader, LongValuesAreCutInErrors) {
  const std::string err = error_of("[[fault]]\nname='a'\ntype='reset'\nphase='" + std::string(5000, 'x') + "'\n");
  EXPECT_LT(err.size(), 400u);
}

// ---- scenario files --------------------------------------------------------------------

TEST(ScenarioFile, LoadsAFile) {
  temp_dir dir;
  const auto path = dir.write("ok.toml", "# Greylisting MX (postgrey).\n[[fault]]\nname='g'\ntype='greylist'\n");
  auto res = load_scenario(path);
  ASSERT_TRUE(res.ok()) << res.error;
  ASSERT_EQ(res.rules.size(), 1u);
  EXPECT_EQ(res.rules[0].name, "g");
}

TEST(ScenarioFile, Errors) {
  temp_dir dir;
  auto res = load_scenario(dir.write("empty.toml", "# nothing\n"));
  EXPECT_EQ(res.error.substr(res.error.size() - std::string("no [[fault]] tables").size()), "no [[fault]] tables");
  EXPECT_NE(res.error.find("empty.toml"), std::string::npos);

  res = load_scenario(dir.write("stray.toml", "[[fault]]\nname='g'\ntype='greylist'\n[other]\nx=1\n"));
  EXPECT_NE(res.error.find("stray.toml:4: key 'other': unknown key"), std::string::npos) << res.error;

  res = load_scenario(dir.write("syntax.toml", "[[fault]]\nname='g'\ntype = \n"));
  EXPECT_NE(res.error.find("syntax.toml:3: "), std::string::npos) << res.error;
  EXPECT_EQ(res.error.find('\n'), std::string::npos);

  res = load_scenario(dir.write("bad.toml", "[[fault]]\nname='g'\ntype='greylist'\nretry_after='soon'\n"));
  EXPECT_NE(res.error.find("bad.toml:4: key 'retry_after': expected a duration"), std::string::npos) << res.error;

  res = load_scenario(dir.write("big.toml", "#" + std::string(limits::scenario_file_bytes + 10, 'x') + "\n"));
  EXPECT_NE(res.error.find("larger than"), std::string::npos) << res.error;

  res = load_scenario("/nonexistent/dir/scenario.toml");
  EXPECT_FALSE(res.ok());
  EXPECT_NE(res.error.find("cannot open"), std::string::npos) << res.error;
}

// ---- firewall profiles -----------------------------------------------------------------

std::vector<std::string> names_of(const std::vector<rule>& rules) {
  std::vector<std::string> out;
  for (const auto& r : rules) out.push_back(r.name);
  return out;
}

TEST(Firewall, PixExpansion) {
  auto rules = ok("[[fault]]\nname='pix'\ntype='firewall'\nprofile='cisco-pix-fixup'\nclient='10.0.0.0/8'\n");
  EXPECT_EQ(names_of(rules), (std::vector<std::string>{"pix/banner", "pix/verb_filter", "pix/split_dot_withhold"}));
  EXPECT_TRUE(std::get<banner_params>(rules[0].params).mask);
  EXPECT_EQ(rules[0].phases, std::vector<phase>{phase::banner});
  EXPECT_EQ(std::get<verb_filter_params>(rules[1].params).allow,
            (std::vector<std::string>{"HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"}));
  EXPECT_EQ(rules[2].type(), "split_dot_withhold");
  for (const auto& r : rules) {
    ASSERT_EQ(r.match.client.size(), 1u) << r.name;   // the firewall's matchers go to every part
    EXPECT_EQ(r.match.client[0].to_string(), "10.0.0.0/8");
  }
}

TEST(Firewall, AsaExpansion) {
  auto rules = ok("[[fault]]\nname='asa'\ntype='firewall'\nprofile='cisco-asa-esmtp'\n");
  EXPECT_EQ(names_of(rules), (std::vector<std::string>{"asa/banner", "asa/verb_filter", "asa/capabilities",
                                                       "asa/line_limit", "asa/rcpt_limit", "asa/sender_limit",
                                                       "asa/split_dot_withhold"}));
  EXPECT_EQ(std::get<verb_filter_params>(rules[1].params).allow.size(), 15u);
  // CHUNKING too: BDAT is not among its verbs (a fifth trial: offered CHUNKING, BDAT got 500).
  EXPECT_EQ(std::get<capabilities_params>(rules[2].params).mask, (std::vector<std::string>{"STARTTLS", "CHUNKING"}));
  EXPECT_EQ(rules[3].type(), "disconnect");
  EXPECT_EQ(rules[3].match.line_longer_than, 512u);
  EXPECT_EQ(rules[4].match.recipients_more_than, 100u);
  EXPECT_EQ(rules[4].phases, std::vector<phase>{phase::rcpt});
  EXPECT_EQ(rules[5].match.address_longer_than, 320u);
  EXPECT_EQ(rules[5].phases, std::vector<phase>{phase::mail});
  EXPECT_FALSE(std::get<disconnect_params>(rules[3].params).reply);   // a drop: no reply
}

TEST(Firewall, AsaInTheEngine) {
  auto rules = ok("[[fault]]\nname='asa'\ntype='firewall'\nprofile='cisco-asa-esmtp'\n");
  engine e(7, [] { return std::uint64_t{0}; }, [] { return std::int64_t{0}; });
  ASSERT_FALSE(e.add_all(rules));
  auto s = e.open_session(1, "192.0.2.1:1000");
  auto plan = s->plan_session();
  EXPECT_TRUE(plan.withhold_split_dot);

  mailtap::protocol::reply banner{220, "", {"mx.example ESMTP"}, ""};
  mailtap::protocol::fault_query q;
  q.ph = phase::banner;
  q.stage = mailtap::protocol::fault_stage::reply;
  q.upstream_reply = &banner;
  EXPECT_TRUE(s->decide(q).rewrites.mask_banner);

  mailtap::protocol::fault_query starttls;
  starttls.ph = phase::starttls;
  starttls.verb = "STARTTLS";
  starttls.line_length = 10;
  auto d = s->decide(starttls);
  EXPECT_TRUE(d.rewrites.mask_command);   // not among the 15 verbs: the server answers 500

  mailtap::protocol::fault_query ehlo;
  ehlo.ph = phase::ehlo;
  ehlo.verb = "EHLO";
  ehlo.line_length = 700;
  d = s->decide(ehlo);
  EXPECT_EQ(d.what, mailtap::protocol::verdict::disconnect);
  EXPECT_EQ(d.rule, "asa/line_limit");
}

}  // namespace

TEST(ScenarioLoader, RulesRememberWhereTheirNameIs) {
  auto res = load_text("# x\n[[fault]]\nname = \"a\"\ntype = \"reset\"\nphase = \"rcpt\"\n\n"
                       "[[fault]]\ntype = \"firewall\"\nname = \"fw\"\nprofile = \"cisco-pix-fixup\"\n",
                       "dir/x.toml");
  ASSERT_TRUE(res.ok()) << res.error;
  ASSERT_GE(res.rules.size(), 2u);
  EXPECT_EQ(res.rules[0].origin, "dir/x.toml:3");
  for (std::size_t i = 1; i < res.rules.size(); ++i) EXPECT_EQ(res.rules[i].origin, "dir/x.toml:9");   // firewall parts
}

TEST(ScenarioLoader, DuplicateNamesAcrossFilesNameBothPlaces) {
  auto a = load_text("[[fault]]\nname = \"same\"\ntype = \"reset\"\nphase = \"rcpt\"\n", "a.toml");
  auto b = load_text("# b\n\n[[fault]]\nname = \"same\"\ntype = \"reset\"\nphase = \"mail\"\n", "b.toml");
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<rule> all = a.rules;
  EXPECT_EQ(duplicate_rule_name(all), std::nullopt);
  all.insert(all.end(), b.rules.begin(), b.rules.end());
  EXPECT_EQ(duplicate_rule_name(all), "b.toml:4: key 'name': duplicate rule name 'same' (first at a.toml:2)");
}

// Duplicate names are found by one function (registry.cpp find_duplicate_name), so the engine
// names both places exactly as the loader does.
TEST(ScenarioLoader, TheEngineNamesDuplicatesLikeTheLoader) {
  auto a = load_text("[[fault]]\nname = \"same\"\ntype = \"reset\"\nphase = \"rcpt\"\n", "a.toml");
  auto b = load_text("# b\n\n[[fault]]\nname = \"same\"\ntype = \"reset\"\nphase = \"mail\"\n", "b.toml");
  ASSERT_TRUE(a.ok() && b.ok());
  auto engine = make_engine(1);
  EXPECT_EQ(engine->add_all(a.rules), std::nullopt);
  EXPECT_EQ(engine->add_all(b.rules), "b.toml:4: key 'name': duplicate rule name 'same' (first at a.toml:2)");
}

// A rule is checked in one place (registry.cpp rule_problems): a rule made in code gets the
// same verdict, in the same words, as one read from a file.
TEST(ScenarioLoader, RulesMadeInCodeAreCheckedLikeLoadedOnes) {
  EXPECT_EQ(error_of("[[fault]]\nname='a'\ntype='slice'\nsegment=1\nphase='mail'\n"),
            "s.toml:5: key 'phase': not allowed here: type 'slice' is session-wide (decided once at connect): it can "
            "match only client, tls, nth_session, after, for, until, probability and max_count");
  rule r = one("[[fault]]\nname='a'\ntype='slice'\nsegment=1\n");
  r.phases = {phase::mail};
  EXPECT_EQ(check_rule(r), "not allowed here: type 'slice' is session-wide (decided once at connect): it can match "
                           "only client, tls, nth_session, after, for, until, probability and max_count");
  rule banner = one("[[fault]]\nname='b'\ntype='banner'\nmask=true\n");
  banner.phases = {phase::mail};
  EXPECT_EQ(check_rule(banner), "phase 'mail' is not allowed for type 'banner' (allowed: banner)");
  // Every problem is reported at its own key; the first in file order wins.
  EXPECT_EQ(error_of("[[fault]]\nname='a'\ntype='throttle'\nbytes_per_second=10\nrecipient='*'\nsender='*'\n"),
            "s.toml:5: key 'recipient': not allowed here: type 'throttle' is session-wide (decided once at connect): "
            "it can match only client, tls, nth_session, after, for, until, probability and max_count");
}

// A fault's reply must leave the relay in a state it can carry on from (registry.cpp check_reply_code).
TEST(ScenarioLoader, ReplyCodesTheRelayCannotStandBehindAreRefused) {
  auto fault = [](const std::string& type, const std::string& phase, int code) {
    return "[[fault]]\nname = \"x\"\ntype = \"" + type + "\"\nphase = \"" + phase + "\"\ncode = " +
           std::to_string(code) + "\n";
  };
  EXPECT_NE(error_of(fault("reply", "data", 354)).find("1xx/3xx"), std::string::npos);
  EXPECT_NE(error_of(fault("reply", "auth", 334)).find("1xx/3xx"), std::string::npos);
  EXPECT_NE(error_of(fault("reply", "data_end", 250)).find("blackhole"), std::string::npos);   // only blackhole may answer 2xx
  EXPECT_NE(error_of(fault("reply", "starttls", 220)).find("2xx"), std::string::npos);
  EXPECT_NE(error_of(fault("reply", "connect", 220)).find("banner"), std::string::npos);
  EXPECT_NE(error_of(fault("reply_and_close", "auth", 235)).find("2xx"), std::string::npos);
  EXPECT_NE(error_of(fault("reply", "bdat", 552)).find("data_end"), std::string::npos);
  EXPECT_NE(error_of(fault("disconnect", "data_end", 250)).find("2xx"), std::string::npos);
  // A QA trial: a 250 to an RCPT not forwarded lost that recipient, while the destination's 250
  // to the message told the client it was delivered (and every record said so). MAIL likewise.
  EXPECT_NE(error_of(fault("reply", "rcpt", 250)).find("recipient the destination never sees"), std::string::npos);
  EXPECT_NE(error_of(fault("reply", "mail", 250)).find("transaction the destination never sees"), std::string::npos);
  EXPECT_NE(error_of(fault("reply_and_close", "rcpt", 251)).find("2xx"), std::string::npos);
  EXPECT_NE(error_of(fault("disconnect", "mail", 250)).find("2xx"), std::string::npos);
  // A plain acceptance of a command that was not forwarded and carries no mail is a fault the
  // relay can carry.
  EXPECT_EQ(one(fault("reply", "rset", 250)).name, "x");
  EXPECT_EQ(one(fault("reply", "ehlo", 250)).name, "x");
  EXPECT_EQ(one(fault("reply", "data_end", 552)).name, "x");
}

// A newcomer's trial: a capabilities rule (phase ehlo) with a recipient matcher loaded ("ok (1
// fault rule)") and never stripped anything, since there is no recipient at EHLO. A matcher
// the relay can know at none of the rule's phases is refused at its line (registry.cpp
// check_matchers_known).
TEST(ScenarioLoader, AMatcherNeverKnownAtTheRulesPhasesIsRefused) {
  EXPECT_EQ(error_of("[[fault]]\nname='strip-tls'\ntype='capabilities'\nstrip=['STARTTLS']\nrecipient='*@example.test'\n"),
            "s.toml:5: key 'recipient': can never match at phase 'ehlo', the default of type 'capabilities' (the "
            "recipients are known only in a transaction from rcpt on: at rcpt, data, data_end, bdat and the commands a "
            "client may send inside one (rset, noop, vrfy, expn, help, quit, other))");
  struct bad_case {
    std::string text;
    const char* expected;
  };
  const bad_case cases[] = {
      // quota's default phase is mail: the MAIL's own recipients come later.
      {"[[fault]]\nname='a'\ntype='quota'\nlimit=1\nwindow='1m'\nrecipient_domain='x.example'\n",
       "s.toml:6: key 'recipient_domain': can never match at phase 'mail', the default of type 'quota' (the recipients"},
      {"[[fault]]\nname='a'\ntype='reply'\nphase=['connect', 'banner']\ncode=421\nsender='*@x.example'\n",
       "s.toml:6: key 'sender': can never match at any of phases connect|banner (the sender is known only in a "
       "transaction"},
      {"[[fault]]\nname='a'\ntype='reply'\nphase='auth'\ncode=535\n\nnth_transaction=2\n",
       "s.toml:7: key 'nth_transaction': can never match at phase 'auth' (the transaction is known only"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='banner'\nehlo='*.example'\n",
       "s.toml:5: key 'ehlo': can never match at phase 'banner' (the EHLO or HELO name is known only once one was sent"},
      {"[[fault]]\nname='a'\ntype='reset'\nphase='noop'\naddress_longer_than=10\n",
       "s.toml:5: key 'address_longer_than': can never match at phase 'noop' (the MAIL or RCPT address is known only at "
       "mail and rcpt)"},
      // The end of data is asked about without a command line.
      {"[[fault]]\nname='a'\ntype='reply'\nphase='data_end'\ncode=554\nverb='DATA'\n",
       "s.toml:6: key 'verb': can never match at phase 'data_end' (the verb is known only at a command"},
      // A delay holds the reply by default, and a reply is asked about without its command's line.
      {"[[fault]]\nname='a'\ntype='delay'\nphase='other'\ndelay='5s'\nverb='XCLIENT'\n",
       "s.toml:6: key 'verb': can never match at phase 'other' (the verb is known only at a command (any phase but "
       "connect, banner and data_end), before it goes on: not at its reply (a delay needs when = \"command\"))"},
      {"[[fault]]\nname='a'\ntype='capabilities'\nstrip=['STARTTLS']\nargument='*.example'\n",
       "s.toml:5: key 'argument': can never match at phase 'ehlo', the default of type 'capabilities' (the argument"},
      {"[[fault]]\nname='a'\ntype='fail_then_pass'\nfailures=1\nkey='message_id'\nline_longer_than=100\n",
       "s.toml:6: key 'line_longer_than': can never match at phase 'data_end', the default of type 'fail_then_pass'"},
  };
  for (const auto& c : cases) {
    const std::string err = error_of(c.text);
    EXPECT_EQ(err.rfind(c.expected, 0), 0u) << "input:\n" << c.text << "\nerror:    " << err << "\nexpected: " << c.expected;
  }
  // A rule made in code (the admin API, `faults add`) gets the same verdict.
  rule r = one("[[fault]]\nname='strip-tls'\ntype='capabilities'\nstrip=['STARTTLS']\n");
  r.match.recipient = "*@example.test";
  const auto problem = check_rule(r);
  ASSERT_TRUE(problem);
  EXPECT_EQ(problem->rfind("can never match at phase 'ehlo'", 0), 0u) << *problem;
}

// What works today still loads: one phase where the matcher is known is enough, and a
// transaction's matchers apply at the commands a client may send inside one.
TEST(ScenarioLoader, AMatcherKnownAtOneOfTheRulesPhasesLoads) {
  const char* good[] = {
      "[[fault]]\nname='a'\ntype='reply'\nphase=['ehlo', 'rcpt']\ncode=550\nrecipient='*@x.example'\n",
      "[[fault]]\nname='a'\ntype='quota'\nphase='rcpt'\nlimit=1\nwindow='1m'\nrecipient_domain='x.example'\n",
      "[[fault]]\nname='a'\ntype='capabilities'\nstrip=['STARTTLS']\nehlo='*.example'\nclient='10.0.0.0/8'\ntls=false\n",
      "[[fault]]\nname='a'\ntype='delay'\nphase='other'\nwhen='command'\ndelay='5s'\nverb='XCLIENT'\n",
      "[[fault]]\nname='a'\ntype='delay'\nphase='rcpt'\ndelay='5s'\naddress_longer_than=10\nrecipients_more_than=1\n",
      "[[fault]]\nname='a'\ntype='reply'\nphase='mail'\ncode=550\nsender='*@x.example'\nnth_transaction=2\n",
      "[[fault]]\nname='a'\ntype='reset'\nphase='rset'\nsender_domain='x.example'\nrecipient='*'\n",
      "[[fault]]\nname='a'\ntype='stall'\nphase='quit'\nrecipients_more_than=0\n",
      "[[fault]]\nname='a'\ntype='fail_then_pass'\nfailures=1\nkey='message_id'\nsender='*'\nehlo='*'\n",
      "[[fault]]\nname='a'\ntype='reply'\nphase='helo'\ncode=550\nehlo='*.bad.example'\nverb='HEL?'\nargument='h*'\n",
      "[[fault]]\nname='a'\ntype='greylist'\nsender='*'\nrecipient='*'\nline_longer_than=10\n",
  };
  for (const char* text : good) EXPECT_EQ(ok(text).size(), 1u) << text;
}


