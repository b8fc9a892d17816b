// policies/: glob, CIDR, durations, the seeded generator, every fault type's decision,
// precedence and rewrite composition, max_count and counters, probability determinism,
// stateful types across sessions (greylist, quota, fail_then_pass), time windows and a
// thread-safety smoke test. Fakes only: the clocks are injected, nothing sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <toml++/toml.h>

#include "policies/cidr.hpp"
#include "policies/engine.hpp"
#include "policies/glob.hpp"
#include "policies/random.hpp"
#include "policies/rule_state.hpp"
#include "policies/scenario_loader.hpp"

namespace {

using namespace mailtap::policies;
using mailtap::protocol::fault_decision;
using mailtap::protocol::fault_query;
using mailtap::protocol::fault_stage;
using mailtap::protocol::phase;
using mailtap::protocol::reply;
using mailtap::protocol::reply_spec;
using mailtap::protocol::session_plan;
using mailtap::protocol::verdict;

constexpr std::uint64_t second_us = 1'000'000;

// ---- glob, CIDR, durations, randomness -------------------------------------------------

TEST(Glob, WholeStringCaseInsensitive) {
  EXPECT_TRUE(glob_match("*@spam.example", "bob@SPAM.example"));
  EXPECT_FALSE(glob_match("*@spam.example", "bob@spam.example.org"));
  EXPECT_TRUE(glob_match("b?b@*", "bob@x"));
  EXPECT_FALSE(glob_match("b?b@*", "bb@x"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("", ""));
  EXPECT_FALSE(glob_match("", "a"));
  EXPECT_TRUE(glob_match("a*b*c", "aXXbYYbZZc"));
  EXPECT_FALSE(glob_match("a*b*c", "aXXbYYbZZ"));
  EXPECT_TRUE(glob_match("**x**", "abcx"));
  EXPECT_TRUE(glob_match("EHLO", "ehlo"));
}

TEST(Glob, HostilePatternStaysFast) {
  const std::string text(4000, 'a');
  EXPECT_FALSE(glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*b", text));
}

TEST(Glob, AddressDomain) {
  EXPECT_EQ(address_domain("a@b@c.example"), "c.example");
  EXPECT_EQ(address_domain("postmaster"), "");
}

TEST(Cidr, ParsesAndContains) {
  std::string problem;
  auto c = parse_cidr("127.0.0.0/8", problem);
  ASSERT_TRUE(c) << problem;
  EXPECT_TRUE(c->contains(*parse_client_address("127.1.2.3")));
  EXPECT_FALSE(c->contains(*parse_client_address("128.0.0.1")));
  EXPECT_FALSE(c->contains(*parse_client_address("::1")));
  EXPECT_EQ(c->to_string(), "127.0.0.0/8");

  auto v6 = parse_cidr("2001:db8::/32", problem);
  ASSERT_TRUE(v6) << problem;
  EXPECT_TRUE(v6->contains(*parse_client_address("2001:db8:1::5")));
  EXPECT_FALSE(v6->contains(*parse_client_address("2001:db9::5")));

  auto host = parse_cidr("::1", problem);
  ASSERT_TRUE(host);
  EXPECT_EQ(host->prefix, 128u);
  EXPECT_TRUE(host->contains(*parse_client_address("[::1]:4711")));

  auto odd = parse_cidr("10.1.0.0/15", problem);
  EXPECT_FALSE(odd);
  EXPECT_NE(problem.find("did you mean 10.0.0.0/15"), std::string::npos) << problem;
  auto all = parse_cidr("0.0.0.0/0", problem);
  ASSERT_TRUE(all);
  EXPECT_TRUE(all->contains(*parse_client_address("203.0.113.9")));
}

TEST(Cidr, RejectsBadBlocks) {
  std::string problem;
  for (const char* bad : {"10.0.0.300/8", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "", "host.example/8",
                          "::ffff:10.0.0.0/104", "fe80::1%eth0/128"}) {
    EXPECT_FALSE(parse_cidr(bad, problem)) << bad;
    EXPECT_FALSE(problem.empty()) << bad;
  }
}

TEST(Cidr, ClientAddressForms) {
  auto v4 = parse_client_address("192.0.2.1:4711");
  ASSERT_TRUE(v4);
  EXPECT_TRUE(v4->v4);
  EXPECT_EQ(to_string(*v4), "192.0.2.1");
  auto mapped = parse_client_address("::ffff:192.0.2.1");
  ASSERT_TRUE(mapped);
  EXPECT_TRUE(mapped->v4);   // v4-mapped clients match IPv4 blocks
  EXPECT_EQ(to_string(*mapped), "192.0.2.1");
  auto zoned = parse_client_address("fe80::1%eth0");
  ASSERT_TRUE(zoned);
  EXPECT_EQ(to_string(*zoned), "fe80::1");
  EXPECT_FALSE(parse_client_address("not-an-address"));
  EXPECT_FALSE(parse_client_address(""));
}

TEST(Random, SessionSeedIsTheRelaysSplitmix) {
  const auto reference = [](std::uint64_t master, std::uint64_t number) {
    std::uint64_t z = master + 0x9e3779b97f4a7c15ull * (number + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  for (std::uint64_t m : {0ull, 1ull, 42ull, ~0ull})
    for (std::uint64_t n : {0ull, 1ull, 2ull, 1000ull}) EXPECT_EQ(session_seed(m, n), reference(m, n));
}

TEST(Random, DeterministicAndInRange) {
  rng a(7), b(7), c(8);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const auto x = a.next();
    EXPECT_EQ(x, b.next());
    differs = differs || x != c.next();
  }
  EXPECT_TRUE(differs);
  double sum = 0, sq = 0;
  for (int i = 0; i < 20000; ++i) {
    const double u = a.uniform01();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    const auto k = a.uniform(10, 12);
    ASSERT_GE(k, 10u);
    ASSERT_LE(k, 12u);
    const double n = a.normal();
    sum += n;
    sq += n * n;
  }
  EXPECT_NEAR(sum / 20000, 0.0, 0.05);
  EXPECT_NEAR(sq / 20000, 1.0, 0.05);
  EXPECT_EQ(a.uniform(5, 5), 5u);
}

TEST(RuleState, BoundedOldestEvicted) {
  rule_state s(3);
  bool created = false;
  for (const char* k : {"a", "b", "c", "d"}) {
    s.get(k, created).count = 1;
    EXPECT_TRUE(created);
  }
  EXPECT_EQ(s.size(), 3u);
  s.get("b", created);
  EXPECT_FALSE(created);
  EXPECT_EQ(s.get("a", created).count, 0u);   // "a" was evicted
  EXPECT_TRUE(created);
  const std::string huge(10'000, 'x');
  EXPECT_LE(rule_state::bounded_key(huge).size(), limits::state_key_bytes);
  EXPECT_NE(rule_state::bounded_key(huge), rule_state::bounded_key(huge + "y"));
}

// ---- engine fixture --------------------------------------------------------------------

// Injected clocks the test moves by hand.
struct fake_clock {
  std::atomic<std::uint64_t> steady_us{1'000 * second_us};
  std::atomic<std::int64_t> wall_s{1'900'000'000};   // 2030-03-17
  void advance(std::uint64_t us) {
    steady_us += us;
    wall_s += static_cast<std::int64_t>(us / second_us);
  }
};

// Holds the strings a query's views point into.
struct command_view {
  phase ph = phase::other;
  fault_stage stage = fault_stage::command;
  std::string verb{}, argument{}, address{}, ehlo_name = "client.example", mail_from{};
  std::vector<std::string> recipients{};
  std::uint64_t transaction = 0;
  std::size_t line_length = 0;
  bool tls = false;
  std::optional<reply> upstream{};
  std::string message_id{};

  fault_query query() const {
    fault_query q;
    q.ph = ph;
    q.stage = stage;
    q.verb = verb;
    q.argument = argument;
    q.address = address;
    q.ehlo_name = ehlo_name;
    q.mail_from = mail_from;
    q.recipients = recipients;
    q.transaction_number = transaction;
    q.line_length = line_length ? line_length : (verb.empty() ? 0 : verb.size() + 1 + argument.size() + 2);
    q.upstream_reply = upstream ? &*upstream : nullptr;
    q.client_tls = tls;
    q.message_id = message_id;
    return q;
  }
  command_view at(fault_stage s) const {
    command_view c = *this;
    c.stage = s;
    if (s == fault_stage::reply && !c.upstream) c.upstream = reply{250, "2.1.0", {"Ok"}, "250 2.1.0 Ok\r\n"};
    return c;
  }
};

command_view connect_view() { return {.ph = phase::connect}; }
command_view banner_view() {
  command_view c{.ph = phase::banner, .stage = fault_stage::reply};
  c.upstream = reply{220, "", {"mx.example ESMTP"}, "220 mx.example ESMTP\r\n"};
  return c;
}
command_view ehlo_view(int code = 250) {
  command_view c{.ph = phase::ehlo, .stage = fault_stage::reply, .verb = "EHLO", .argument = "client.example"};
  c.upstream = reply{code, "", {"mx.example", "PIPELINING", "SIZE 10240000", "STARTTLS"}, ""};
  return c;
}
command_view mail_view(std::string sender, std::uint64_t transaction = 1) {
  return {.ph = phase::mail, .verb = "MAIL", .argument = "FROM:<" + sender + ">", .address = sender,
          .transaction = transaction};
}
command_view rcpt_view(std::string sender, std::string rcpt, std::vector<std::string> before = {},
                       std::uint64_t transaction = 1) {
  return {.ph = phase::rcpt, .verb = "RCPT", .argument = "TO:<" + rcpt + ">", .address = rcpt,
          .mail_from = std::move(sender), .recipients = std::move(before), .transaction = transaction};
}
command_view data_end_view(std::string sender, std::vector<std::string> rcpts, std::uint64_t transaction = 1) {
  return {.ph = phase::data_end, .mail_from = std::move(sender), .recipients = std::move(rcpts),
          .transaction = transaction};
}

class Policies : public ::testing::Test {
 protected:
  std::unique_ptr<engine> make(std::uint64_t seed) {
    return std::make_unique<engine>(
        seed, [this] { return clock_.steady_us.load(); }, [this] { return clock_.wall_s.load(); });
  }

  // Loads [[fault]] tables through the real loader; fails the test on any error.
  void load(const std::string& toml_text, engine* into = nullptr) {
    toml::table doc = toml::parse(std::string_view(toml_text), std::string_view("test.toml"));
    auto res = rules_from_toml(doc, "test.toml");
    ASSERT_TRUE(res.ok()) << res.error;
    auto err = (into ? into : engine_.get())->add_all(res.rules);
    ASSERT_FALSE(err) << *err;
  }

  // The loader's one-line error for rules it must refuse.
  std::string load_error(const std::string& toml_text) {
    toml::table doc = toml::parse(std::string_view(toml_text), std::string_view("test.toml"));
    auto res = rules_from_toml(doc, "test.toml");
    EXPECT_FALSE(res.ok());
    return res.error;
  }

  // One decision in a session of its own, which the relay then applies (fault_advisor::applied
  // for its rule and each contributing rewrite), as it does every decision it acts on.
  fault_decision decide(const command_view& c, std::uint64_t session = 1, const std::string& client = "192.0.2.1:4000") {
    auto advisor = engine_->open_session(session, client);
    fault_decision d = advisor->decide(c.query());
    apply(*advisor, d);
    return d;
  }
  // One decision in a session the test keeps open, applied by the relay likewise.
  static fault_decision decide_in(mailtap::protocol::fault_advisor& advisor, const command_view& c) {
    fault_decision d = advisor.decide(c.query());
    apply(advisor, d);
    return d;
  }
  static void apply(mailtap::protocol::fault_advisor& advisor, const fault_decision& d) {
    if (d.what != verdict::proceed) advisor.applied(d.rule);
    for (const auto& c : d.rewrites.rules) advisor.applied(c.rule);
  }

  std::uint64_t count_of(const std::string& rule) const {
    for (const auto& c : engine_->counters())
      if (c.rule == rule) return c.count;
    return ~0ull;
  }

  fake_clock clock_;
  std::unique_ptr<engine> engine_ = make(42);
};

// ---- each type -------------------------------------------------------------------------

TEST_F(Policies, NoRulesProceed) {
  auto d = decide(rcpt_view("a@x", "b@y"));
  EXPECT_EQ(d.what, verdict::proceed);
  EXPECT_TRUE(d.rule.empty());
  EXPECT_TRUE(d.rewrites.empty());
}

TEST_F(Policies, ReplyAtRcptMatchingRecipient) {
  load(R"(
[[fault]]
name = "mailbox-full"
type = "reply"
phase = "rcpt"
recipient = "*@full.example"
code = 552
enhanced = "5.2.2"
text = "Mailbox full"
)");
  auto d = decide(rcpt_view("a@x", "bob@FULL.example"));
  EXPECT_EQ(d.what, verdict::reply);
  EXPECT_EQ(d.rule, "mailbox-full");
  EXPECT_EQ(d.type, "reply");
  EXPECT_EQ(d.reply, (reply_spec{552, "5.2.2", "Mailbox full"}));
  EXPECT_EQ(decide(rcpt_view("a@x", "bob@ok.example")).what, verdict::proceed);
  // Reply rules act at the command stage only.
  EXPECT_EQ(decide(rcpt_view("a@x", "bob@full.example").at(fault_stage::reply)).what, verdict::proceed);
  EXPECT_EQ(count_of("mailbox-full"), 1u);
}

TEST_F(Policies, ReplyDefaultTextByClass) {
  load("[[fault]]\nname='r'\ntype='reply'\nphase='mail'\ncode=450\n");
  EXPECT_EQ(decide(mail_view("a@x")).reply, (reply_spec{450, "", "Temporary failure, please try again later"}));
}

TEST_F(Policies, ReplyAtBannerActsAtReplyStageAndAtConnectAtCommandStage) {
  load(R"(
[[fault]]
name = "busy"
type = "reply"
phase = ["connect", "banner"]
code = 554
text = "No SMTP service here"
)");
  EXPECT_EQ(decide(connect_view()).what, verdict::reply);
  EXPECT_EQ(decide(banner_view()).what, verdict::reply);
  EXPECT_EQ(decide(banner_view().at(fault_stage::command)).what, verdict::proceed);
}

TEST_F(Policies, ReplyAndCloseDefaults) {
  load("[[fault]]\nname='rc'\ntype='reply_and_close'\nphase='helo'\n");
  command_view helo{.ph = phase::helo, .verb = "HELO", .argument = "x"};
  auto d = decide(helo);
  EXPECT_EQ(d.what, verdict::reply_and_close);
  EXPECT_EQ(d.reply.code, 421);
  EXPECT_EQ(d.reply.enhanced, "4.7.0");
  EXPECT_FALSE(d.reply.text.empty());
}

TEST_F(Policies, DisconnectWithAndWithoutReply) {
  load(R"(
[[fault]]
name = "fin"
type = "disconnect"
phase = "data_end"
[[fault]]
name = "fin-polite"
type = "disconnect"
phase = "quit"
code = 421
text = "bye"
)");
  auto d = decide(data_end_view("a@x", {"b@y"}));
  EXPECT_EQ(d.what, verdict::disconnect);
  EXPECT_FALSE(d.with_reply);
  command_view quit{.ph = phase::quit, .verb = "QUIT"};
  d = decide(quit);
  EXPECT_EQ(d.what, verdict::disconnect);
  EXPECT_TRUE(d.with_reply);
  EXPECT_EQ(d.reply, (reply_spec{421, "", "bye"}));
}

TEST_F(Policies, ResetAndStall) {
  load(R"(
[[fault]]
name = "rst"
type = "reset"
phase = "noop"
[[fault]]
name = "hang"
type = "stall"
phase = "vrfy"
max = "30s"
[[fault]]
name = "hang-forever"
type = "stall"
phase = "expn"
)");
  EXPECT_EQ(decide({.ph = phase::noop, .verb = "NOOP"}).what, verdict::reset);
  auto d = decide({.ph = phase::vrfy, .verb = "VRFY", .argument = "x"});
  EXPECT_EQ(d.what, verdict::stall);
  EXPECT_EQ(d.stall_max_us, 30 * second_us);
  d = decide({.ph = phase::expn, .verb = "EXPN", .argument = "x"});
  EXPECT_EQ(d.what, verdict::stall);
  EXPECT_EQ(d.stall_max_us, 0u);
}

TEST_F(Policies, DelayFixedAtReplyStageByDefault) {
  load("[[fault]]\nname='slow'\ntype='delay'\nphase='rcpt'\ndelay='250ms'\n");
  EXPECT_EQ(decide(rcpt_view("a@x", "b@y")).what, verdict::proceed);   // command stage: nothing
  auto d = decide(rcpt_view("a@x", "b@y").at(fault_stage::reply));
  EXPECT_EQ(d.what, verdict::delay);
  EXPECT_EQ(d.delay_us, 250'000u);
  EXPECT_EQ(d.rule, "slow");
}

TEST_F(Policies, DelayCommandUniformAndNormal) {
  load(R"(
[[fault]]
name = "hold-mail"
type = "delay"
when = "command"
phase = "mail"
min = "100ms"
max = "200ms"
[[fault]]
name = "jittery-banner"
type = "delay"
phase = "banner"
mean = "10ms"
jitter = "50ms"
)");
  auto session = engine_->open_session(1, "192.0.2.1");
  bool varied = false;
  std::uint64_t first = 0;
  for (int i = 0; i < 50; ++i) {
    auto d = session->decide(mail_view("a@x").query());
    ASSERT_EQ(d.what, verdict::delay);
    EXPECT_GE(d.delay_us, 100'000u);
    EXPECT_LE(d.delay_us, 200'000u);
    if (i == 0) first = d.delay_us;
    varied = varied || d.delay_us != first;
  }
  EXPECT_TRUE(varied);
  bool clipped = false;
  for (int i = 0; i < 200; ++i) {
    auto d = session->decide(banner_view().query());
    ASSERT_EQ(d.what, verdict::delay);
    EXPECT_LE(d.delay_us, 10'000u + 50'000u * 7);
    clipped = clipped || d.delay_us == 0;   // mean - jitter * z < 0 for z > 0.2
  }
  EXPECT_TRUE(clipped);
}

TEST_F(Policies, ThrottleSliceAndSplitDotPlan) {
  load(R"(
[[fault]]
name = "slow-link"
type = "throttle"
bytes_per_second = 1200
direction = "to_client"
[[fault]]
name = "tiny-writes"
type = "slice"
segment = 1
gap = "5ms"
direction = "to_upstream"
split_dot = true
[[fault]]
name = "second-throttle"
type = "throttle"
bytes_per_second = 99
[[fault]]
name = "pix-dot"
type = "split_dot_withhold"
client = "10.0.0.0/8"
)");
  session_plan p = engine_->open_session(1, "192.0.2.1:1")->plan_session();
  EXPECT_EQ(p.to_client.bytes_per_second, 1200u);
  EXPECT_EQ(p.to_upstream.bytes_per_second, 99u);   // the first rule paced only the client leg
  EXPECT_EQ(p.to_upstream.segment_bytes, 1u);
  EXPECT_EQ(p.to_upstream.gap_us, 5'000u);
  EXPECT_EQ(p.to_client.segment_bytes, 0u);
  EXPECT_EQ(p.split_dot_gap_us, 5'000u);
  EXPECT_FALSE(p.withhold_split_dot);   // client 192.0.2.1 is outside 10.0.0.0/8
  ASSERT_EQ(p.rules.size(), 3u);
  EXPECT_EQ(p.rules[0], (std::pair<std::string, std::string>{"slow-link", "throttle"}));

  session_plan q = engine_->open_session(2, "10.1.2.3:1")->plan_session();
  EXPECT_TRUE(q.withhold_split_dot);
  // Session-wide rules are never part of a per-command decision.
  EXPECT_EQ(decide(connect_view()).what, verdict::proceed);
}

// Issue 14 item 14: split_dot_withhold is planned for every session but counts (and uses up
// max_count) only when the relay withheld a dot (reserved as it acts, counted with its record);
// other plan rules count at plan time.
TEST_F(Policies, SplitDotWithholdCountsWhenItActs) {
  load(R"(
[[fault]]
name = "slow-link"
type = "throttle"
bytes_per_second = 1200
[[fault]]
name = "pix-dot"
type = "split_dot_withhold"
)");
  auto first = engine_->open_session(1, "192.0.2.1:1");
  auto second = engine_->open_session(2, "192.0.2.1:2");
  EXPECT_TRUE(first->plan_session().withhold_split_dot);
  EXPECT_TRUE(second->plan_session().withhold_split_dot);
  EXPECT_EQ(count_of("slow-link"), 2u);
  EXPECT_EQ(count_of("pix-dot"), 0u) << "planned twice, withheld nothing yet";
  EXPECT_TRUE(second->reserve_plan_rule("pix-dot"));
  EXPECT_EQ(count_of("pix-dot"), 0u) << "reserved, not yet applied";
  second->applied("pix-dot");
  EXPECT_EQ(count_of("pix-dot"), 1u);
  EXPECT_FALSE(second->reserve_plan_rule("slow-link"));   // not a type that counts when acting
  second->applied("slow-link");
  EXPECT_EQ(count_of("slow-link"), 2u);
}

// A review: split_dot_withhold reserved nothing when armed, so every session armed before the
// first split dot withheld one, past max_count. Reserved as it acts, it acts max_count times;
// a reservation the session never applied is given back.
TEST_F(Policies, SplitDotWithholdArmedInSessionsAtOnceActsAtMostMaxCountTimes) {
  load(R"(
[[fault]]
name = "pix-dot"
type = "split_dot_withhold"
max_count = 1
)");
  auto first = engine_->open_session(1, "192.0.2.1:1");
  auto second = engine_->open_session(2, "192.0.2.1:2");
  EXPECT_TRUE(first->plan_session().withhold_split_dot);
  EXPECT_TRUE(second->plan_session().withhold_split_dot);
  EXPECT_TRUE(second->reserve_plan_rule("pix-dot"));
  EXPECT_FALSE(first->reserve_plan_rule("pix-dot")) << "max_count = 1 is held by the other session";
  second.reset();   // ended before it applied it: given back uncounted
  EXPECT_EQ(count_of("pix-dot"), 0u);
  EXPECT_TRUE(first->reserve_plan_rule("pix-dot"));
  first->applied("pix-dot");
  EXPECT_EQ(count_of("pix-dot"), 1u);
  EXPECT_FALSE(first->reserve_plan_rule("pix-dot")) << "spent";
  EXPECT_FALSE(engine_->open_session(3, "192.0.2.1:3")->plan_session().withhold_split_dot) << "spent: not armed";
}

TEST_F(Policies, CapabilitiesEditTheEhloReply) {
  load(R"(
[[fault]]
name = "no-pipelining"
type = "capabilities"
strip = ["pipelining"]
size = 1000
[[fault]]
name = "asa-starttls"
type = "capabilities"
mask = ["STARTTLS"]
size = 5
)");
  auto d = decide(ehlo_view());
  EXPECT_EQ(d.what, verdict::proceed);
  EXPECT_EQ(d.rewrites.strip_capabilities, std::vector<std::string>{"PIPELINING"});
  EXPECT_EQ(d.rewrites.mask_capabilities, std::vector<std::string>{"STARTTLS"});
  EXPECT_EQ(d.rewrites.size, 1000u);   // the rule loaded first keeps SIZE
  ASSERT_EQ(d.rewrites.rules.size(), 2u);
  // Each rule with its own edits, so that the relay counts only one whose edit changed the reply.
  EXPECT_EQ(d.rewrites.rules[0].rule, "no-pipelining");
  EXPECT_EQ(d.rewrites.rules[0].asked.strip_capabilities, std::vector<std::string>{"PIPELINING"});
  EXPECT_EQ(d.rewrites.rules[0].asked.size, 1000u);
  EXPECT_TRUE(d.rewrites.rules[0].asked.mask_capabilities.empty());
  EXPECT_EQ(d.rewrites.rules[1].rule, "asa-starttls");
  EXPECT_EQ(d.rewrites.rules[1].asked.mask_capabilities, std::vector<std::string>{"STARTTLS"});
  EXPECT_EQ(d.rewrites.rules[1].asked.size, 5u);
  EXPECT_TRUE(d.rewrites.rules[1].asked.strip_capabilities.empty());
  EXPECT_EQ(count_of("no-pipelining"), 1u);
  // A refused EHLO lists nothing to edit.
  EXPECT_TRUE(decide(ehlo_view(502)).rewrites.empty());
  // Nothing at the command stage.
  EXPECT_TRUE(decide(ehlo_view().at(fault_stage::command)).rewrites.empty());
}

TEST_F(Policies, BannerMaskAndText) {
  load("[[fault]]\nname='pix'\ntype='banner'\nmask=true\n");
  auto d = decide(banner_view());
  EXPECT_TRUE(d.rewrites.mask_banner);
  EXPECT_FALSE(d.rewrites.banner_text);

  auto e = make(1);
  load("[[fault]]\nname='t'\ntype='banner'\ntext='mail.example ESMTP ready'\n", e.get());
  d = e->open_session(1, "x")->decide(banner_view().query());
  EXPECT_EQ(d.rewrites.banner_text, "mail.example ESMTP ready");
}

TEST_F(Policies, GreylistAcrossSessions) {
  load("[[fault]]\nname='grey'\ntype='greylist'\nretry_after='5m'\n");
  auto first = engine_->open_session(1, "192.0.2.1:1000");
  auto d = decide_in(*first, rcpt_view("a@x", "b@y"));
  EXPECT_EQ(d.what, verdict::reply);
  EXPECT_EQ(d.type, "greylist");
  EXPECT_EQ(d.reply.code, 451);
  EXPECT_EQ(d.reply.enhanced, "4.7.1");
  // Another triple is greylisted independently; the first one's retry is too early.
  clock_.advance(60 * second_us);
  auto second = engine_->open_session(2, "192.0.2.1:2000");   // another port: same client
  EXPECT_EQ(decide_in(*second, rcpt_view("A@X", "b@y")).what, verdict::reply);
  EXPECT_EQ(decide_in(*second, rcpt_view("a@x", "c@y")).what, verdict::reply);
  clock_.advance(241 * second_us);
  auto third = engine_->open_session(3, "192.0.2.1:3000");
  EXPECT_EQ(decide_in(*third, rcpt_view("a@x", "b@y")).what, verdict::proceed);
  EXPECT_EQ(decide_in(*third, rcpt_view("a@x", "c@y")).what, verdict::reply);   // seen 4 min ago
  // Another client is another triple.
  EXPECT_EQ(decide_in(*engine_->open_session(4, "192.0.2.2:1"), rcpt_view("a@x", "b@y")).what, verdict::reply);
  // The passing triple was not an injection.
  EXPECT_EQ(count_of("grey"), 5u);   // five refusals
}

TEST_F(Policies, QuotaWindow) {
  load(R"(
[[fault]]
name = "rate"
type = "quota"
limit = 2
window = "1m"
per = "client"
)");
  auto s = engine_->open_session(1, "192.0.2.1");
  EXPECT_EQ(s->decide(mail_view("a@x").query()).what, verdict::proceed);
  clock_.advance(10 * second_us);
  EXPECT_EQ(s->decide(mail_view("a@x").query()).what, verdict::proceed);
  auto d = s->decide(mail_view("a@x").query());
  EXPECT_EQ(d.what, verdict::reply);
  EXPECT_EQ(d.reply.code, 452);
  EXPECT_EQ(d.reply.enhanced, "4.5.3");
  // Another client has its own window.
  EXPECT_EQ(engine_->open_session(2, "192.0.2.9")->decide(mail_view("a@x").query()).what, verdict::proceed);
  // The window started at the first match: 50 s later it is over.
  clock_.advance(50 * second_us);
  EXPECT_EQ(s->decide(mail_view("a@x").query()).what, verdict::proceed);
}

TEST_F(Policies, QuotaWith421Closes) {
  load("[[fault]]\nname='conn-rate'\ntype='quota'\nphase='connect'\nlimit=1\nwindow='1h'\ncode=421\n");
  EXPECT_EQ(decide(connect_view(), 1).what, verdict::proceed);
  auto d = decide(connect_view(), 2);
  EXPECT_EQ(d.what, verdict::reply_and_close);
  EXPECT_EQ(d.reply.code, 421);
  EXPECT_EQ(d.reply.enhanced, "4.7.0");
}

// Item 21: any 4xx/5xx with its enhanced code, e.g. Gmail's daily sending limit.
TEST_F(Policies, QuotaTakesAnyFailureCodeWithItsEnhancedCode) {
  load("[[fault]]\nname='gmail-daily'\ntype='quota'\nlimit=1\nwindow='24h'\ncode=550\nenhanced='5.4.5'\n"
       "text='Daily user sending limit exceeded'\n");
  EXPECT_EQ(decide(mail_view("a@x"), 1).what, verdict::proceed);
  auto d = decide(mail_view("a@x"), 2);
  EXPECT_EQ(d.what, verdict::reply);   // a 5xx answers the command; only a 421 closes
  EXPECT_EQ(d.reply, (reply_spec{550, "5.4.5", "Daily user sending limit exceeded"}));
}

TEST_F(Policies, QuotaDefaultsFollowTheCode) {
  load("[[fault]]\nname='q451'\ntype='quota'\nlimit=0\nwindow='1m'\ncode=451\n"
       "[[fault]]\nname='q554'\ntype='quota'\nphase='rcpt'\nlimit=0\nwindow='1m'\ncode=554\n");
  EXPECT_EQ(decide(mail_view("a@x")).reply, (reply_spec{451, "", "Quota exceeded, please try again later"}));
  EXPECT_EQ(decide(rcpt_view("a@x", "b@y")).reply, (reply_spec{554, "", "Quota exceeded"}));
}

// Item 21: "the second RCPT gets 452" leaves the first and the third alone.
TEST_F(Policies, NthRecipientMatchesOnlyThatRcpt) {
  load("[[fault]]\nname='second-rcpt-full'\ntype='reply'\nphase='rcpt'\nnth_recipient=2\ncode=452\n"
       "enhanced='4.2.2'\n");
  EXPECT_EQ(decide(rcpt_view("a@x", "r1@y")).what, verdict::proceed);
  auto d = decide(rcpt_view("a@x", "r2@y", {"r1@y"}));
  EXPECT_EQ(d.what, verdict::reply);
  EXPECT_EQ(d.reply.code, 452);
  EXPECT_EQ(decide(rcpt_view("a@x", "r3@y", {"r1@y", "r2@y"})).what, verdict::proceed);
  EXPECT_EQ(decide(rcpt_view("a@x", "r4@y", {"r1@y", "r2@y", "r3@y"})).what, verdict::proceed);
}

// At a RCPT's reply (a delay with when = "reply") the relay shows the recipients before it, as
// at its command (protocol/fault.hpp), pipelined or not: the counting matchers pick the same RCPT.
TEST_F(Policies, NthRecipientAndRecipientsMoreThanCountTheSameAtTheReply) {
  load("[[fault]]\nname='second-slow'\ntype='delay'\nphase='rcpt'\nwhen='reply'\nnth_recipient=2\ndelay='1s'\n"
       "[[fault]]\nname='past-two'\ntype='delay'\nphase='rcpt'\nwhen='reply'\nrecipients_more_than=2\ndelay='2s'\n");
  auto at_reply = [&](std::string rcpt, std::vector<std::string> before) {
    return decide(rcpt_view("a@x", std::move(rcpt), std::move(before)).at(fault_stage::reply));
  };
  EXPECT_EQ(at_reply("r1@y", {}).what, verdict::proceed);
  auto d = at_reply("r2@y", {"r1@y"});
  EXPECT_EQ(d.what, verdict::delay);
  EXPECT_EQ(d.rule, "second-slow");
  d = at_reply("r3@y", {"r1@y", "r2@y"});
  EXPECT_EQ(d.what, verdict::delay);
  EXPECT_EQ(d.rule, "past-two");
  EXPECT_EQ(decide(rcpt_view("a@x", "r2@y", {"r1@y"})).what, verdict::proceed) << "when = reply: not at the command";
}

TEST_F(Policies, FailThenPassByEnvelope) {
  load("[[fault]]\nname='flaky'\ntype='fail_then_pass'\nfailures=2\n");
  auto d = decide(data_end_view("a@x", {"b@y", "c@y"}), 1);
  EXPECT_EQ(d.what, verdict::reply);
  EXPECT_EQ(d.reply, (reply_spec{451, "4.3.0", "Temporary failure, please try again later"}));
  EXPECT_EQ(decide(data_end_view("a@x", {"c@y", "B@Y"}), 2).what, verdict::reply);   // same envelope, reordered
  EXPECT_EQ(decide(data_end_view("other@x", {"b@y"}), 3).what, verdict::reply);      // another envelope: its first
  EXPECT_EQ(decide(data_end_view("a@x", {"b@y", "c@y"}), 4).what, verdict::proceed);
  EXPECT_EQ(decide(data_end_view("a@x", {"b@y", "c@y"}), 5).what, verdict::proceed);
}

TEST_F(Policies, FailThenPassByClient) {
  load("[[fault]]\nname='flaky'\ntype='fail_then_pass'\nkey='client'\nphase='mail'\nfailures=1\ncode=421\n");
  auto d = decide(mail_view("a@x"), 1, "192.0.2.1:1");
  EXPECT_EQ(d.what, verdict::reply);
  EXPECT_EQ(d.reply.code, 421);
  EXPECT_EQ(d.reply.enhanced, "");   // the 4.3.0 default belongs to 451
  EXPECT_EQ(decide(mail_view("b@x"), 2, "192.0.2.1:2").what, verdict::proceed);
}

TEST_F(Policies, FailThenPassByMessageIdActsAtTheMessageStage) {
  load("[[fault]]\nname='flaky'\ntype='fail_then_pass'\nkey='message_id'\nfailures=2\n");
  command_view v = data_end_view("a@x", {"b@y"});
  EXPECT_EQ(decide(v, 1).what, verdict::proceed) << "not asked when DATA arrives";
  v.stage = fault_stage::message;
  EXPECT_EQ(decide(v, 1).what, verdict::proceed) << "no Message-ID: nothing to count by";
  v.message_id = "<m1@example.org>";
  EXPECT_EQ(decide(v, 2).what, verdict::reply);
  EXPECT_EQ(decide(v, 3).what, verdict::reply);
  EXPECT_EQ(decide(v, 4).what, verdict::proceed);
  v.message_id = "<m2@example.org>";
  EXPECT_EQ(decide(v, 5).what, verdict::reply);   // another message: its own first attempt
}

// The relay holds a pipelined BDAT message's end for the replies before it only while a rule
// could act at the message stage (relay_fsm::release_bdat_message): the plan says so.
TEST_F(Policies, ASessionPlanSaysWhetherARuleDecidesAtTheMessageStage) {
  load("[[fault]]\nname='flaky'\ntype='fail_then_pass'\nkey='envelope'\nfailures=2\n"
       "[[fault]]\nname='cut'\ntype='disconnect'\nphase='data_end'\n");
  EXPECT_FALSE(engine_->open_session(1, "192.0.2.1:1")->plan_session().decides_messages);
  load("[[fault]]\nname='flaky-id'\ntype='fail_then_pass'\nkey='message_id'\nfailures=2\n");
  EXPECT_TRUE(engine_->open_session(2, "192.0.2.1:1")->plan_session().decides_messages);
}

TEST_F(Policies, FailThenPassByMessageIdNeedsDataEnd) {
  EXPECT_NE(load_error("[[fault]]\nname='flaky'\ntype='fail_then_pass'\nkey='message_id'\nphase='rcpt'\nfailures=1\n")
                .find("needs phase 'data_end'"),
            std::string::npos);
}

TEST_F(Policies, BlackholeSynthesizesADeterministicQueueId) {
  load("[[fault]]\nname='void'\ntype='blackhole'\n");
  auto d = decide(data_end_view("a@x", {"b@y"}, 3), 7);
  EXPECT_EQ(d.what, verdict::blackhole);
  EXPECT_EQ(d.reply.code, 250);
  EXPECT_EQ(d.reply.enhanced, "2.0.0");
  ASSERT_EQ(d.reply.text.rfind("Ok: queued as ", 0), 0u) << d.reply.text;
  EXPECT_EQ(d.reply.text.size(), std::string("Ok: queued as ").size() + 10);
  EXPECT_EQ(decide(data_end_view("a@x", {"b@y"}, 3), 7).reply.text, d.reply.text);
  EXPECT_NE(decide(data_end_view("a@x", {"b@y"}, 4), 7).reply.text, d.reply.text);
}

TEST_F(Policies, UpstreamUnreachableModes) {
  load(R"(
[[fault]]
name = "down"
type = "upstream_unreachable"
nth_session = 1
[[fault]]
name = "mute"
type = "upstream_unreachable"
mode = "no_greeting"
nth_session = 2
)");
  auto d = decide(connect_view(), 1);
  EXPECT_EQ(d.what, verdict::unreachable);
  EXPECT_FALSE(d.no_greeting);
  EXPECT_EQ(d.reply.code, 421);
  EXPECT_EQ(d.reply.enhanced, "4.4.1");
  d = decide(connect_view(), 2);
  EXPECT_EQ(d.what, verdict::unreachable);
  EXPECT_TRUE(d.no_greeting);
  EXPECT_EQ(decide(connect_view(), 3).what, verdict::proceed);
}

TEST_F(Policies, VerbFilterMasksOtherVerbs) {
  load("[[fault]]\nname='pix'\ntype='verb_filter'\nallow=['helo','mail','rcpt','data','rset','noop','quit']\n");
  auto d = decide({.ph = phase::ehlo, .verb = "EHLO", .argument = "x"});
  EXPECT_EQ(d.what, verdict::proceed);
  EXPECT_TRUE(d.rewrites.mask_command);
  ASSERT_EQ(d.rewrites.rules.size(), 1u);
  EXPECT_EQ(d.rewrites.rules[0].type, "verb_filter");
  EXPECT_FALSE(decide({.ph = phase::helo, .verb = "HELO", .argument = "x"}).rewrites.mask_command);
  EXPECT_TRUE(decide({.ph = phase::other, .verb = "XCLIENT", .argument = "x"}).rewrites.mask_command);
  EXPECT_EQ(count_of("pix"), 2u);
}

// ---- precedence and composition --------------------------------------------------------

TEST_F(Policies, MostDestructiveVerdictWins) {
  load(R"(
[[fault]]
name = "slow"
type = "delay"
when = "command"
phase = "rcpt"
delay = "1s"
[[fault]]
name = "refuse"
type = "reply"
phase = "rcpt"
code = 550
[[fault]]
name = "hang"
type = "stall"
phase = "rcpt"
[[fault]]
name = "drop"
type = "disconnect"
phase = "rcpt"
[[fault]]
name = "close"
type = "reply_and_close"
phase = "rcpt"
[[fault]]
name = "rst"
type = "reset"
phase = "rcpt"
[[fault]]
name = "grey"
type = "greylist"
[[fault]]
name = "filter"
type = "verb_filter"
allow = ["MAIL"]
)");
  auto d = decide(rcpt_view("a@x", "b@y"));
  EXPECT_EQ(d.what, verdict::disconnect);
  EXPECT_EQ(d.rule, "drop");
  EXPECT_TRUE(d.rewrites.empty());   // rewrites never join a verdict that stops the command
  EXPECT_EQ(count_of("drop"), 1u);
  EXPECT_EQ(count_of("filter"), 0u);
  EXPECT_EQ(count_of("slow"), 0u);
  // Removing the winners one by one walks down the order.
  const std::pair<const char*, verdict> order[] = {{"drop", verdict::reset},   {"rst", verdict::reply_and_close},
                                                   {"close", verdict::reply},  {"refuse", verdict::reply},
                                                   {"grey", verdict::stall},   {"hang", verdict::delay}};
  for (const auto& [gone, next] : order) {
    ASSERT_TRUE(engine_->remove(gone));
    EXPECT_EQ(decide(rcpt_view("a@x", "b@y")).what, next) << "after removing " << gone;
  }
  d = decide(rcpt_view("a@x", "b@y"));
  EXPECT_EQ(d.rule, "slow");
  EXPECT_TRUE(d.rewrites.mask_command);   // a delay carries the rewrites
  ASSERT_TRUE(engine_->remove("slow"));
  d = decide(rcpt_view("a@x", "b@y"));
  EXPECT_EQ(d.what, verdict::proceed);
  EXPECT_TRUE(d.rewrites.mask_command);
}

TEST_F(Policies, UnreachableOutranksEverything) {
  load(R"(
[[fault]]
name = "drop"
type = "disconnect"
phase = "connect"
[[fault]]
name = "down"
type = "upstream_unreachable"
)");
  EXPECT_EQ(decide(connect_view()).rule, "down");
}

TEST_F(Policies, SameVerdictFirstLoadedWins) {
  load(R"(
[[fault]]
name = "first"
type = "reply"
phase = "mail"
code = 451
[[fault]]
name = "second"
type = "reply"
phase = "mail"
code = 550
[[fault]]
name = "third"
type = "blackhole"
)");
  auto d = decide(mail_view("a@x"));
  EXPECT_EQ(d.rule, "first");
  EXPECT_EQ(d.reply.code, 451);
  EXPECT_EQ(count_of("second"), 0u);
}

TEST_F(Policies, RewritesComposeWithDelay) {
  load(R"(
[[fault]]
name = "pix-banner"
type = "banner"
mask = true
[[fault]]
name = "slow-banner"
type = "delay"
phase = "banner"
delay = "2s"
[[fault]]
name = "text-banner"
type = "banner"
text = "hello"
)");
  auto d = decide(banner_view());
  EXPECT_EQ(d.what, verdict::delay);
  EXPECT_EQ(d.rule, "slow-banner");
  EXPECT_EQ(d.delay_us, 2 * second_us);
  EXPECT_TRUE(d.rewrites.mask_banner);
  EXPECT_EQ(d.rewrites.banner_text, "hello");
  ASSERT_EQ(d.rewrites.rules.size(), 2u);
  EXPECT_EQ(d.rewrites.rules[0].rule, "pix-banner");
  EXPECT_EQ(d.rewrites.rules[1].rule, "text-banner");
  EXPECT_EQ(count_of("pix-banner"), 1u);
  EXPECT_EQ(count_of("slow-banner"), 1u);
  EXPECT_EQ(count_of("text-banner"), 1u);
}

TEST_F(Policies, RewriteDroppedUnderAStoppingVerdict) {
  load(R"(
[[fault]]
name = "mask"
type = "banner"
mask = true
[[fault]]
name = "refuse"
type = "reply"
phase = "banner"
code = 554
)");
  auto d = decide(banner_view());
  EXPECT_EQ(d.what, verdict::reply);
  EXPECT_TRUE(d.rewrites.empty());
  EXPECT_EQ(count_of("mask"), 0u);
}

// ---- max_count, counters, probability --------------------------------------------------

TEST_F(Policies, MaxCountAcrossSessions) {
  load("[[fault]]\nname='twice'\ntype='reply'\nphase='mail'\ncode=451\nmax_count=2\n");
  EXPECT_EQ(decide(mail_view("a@x"), 1).what, verdict::reply);
  EXPECT_EQ(decide(mail_view("a@x"), 2).what, verdict::reply);
  EXPECT_EQ(decide(mail_view("a@x"), 3).what, verdict::proceed);
  auto list = engine_->list();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].name, "twice");
  EXPECT_EQ(list[0].type, "reply");
  EXPECT_EQ(list[0].injected, 2u);
  EXPECT_EQ(list[0].max_count, 2u);
  EXPECT_FALSE(list[0].active);
  auto counters = engine_->counters();
  ASSERT_EQ(counters.size(), 1u);
  EXPECT_EQ(counters[0].rule, "twice");
  EXPECT_EQ(counters[0].type, "reply");
  EXPECT_EQ(counters[0].count, 2u);
}

// A rule the relay decided on and then did not apply (a blackhole for a message whose every
// recipient was refused) used up max_count and counted as injected. Now a decision reserves
// the rule (max_count holds for sessions deciding at once), the relay's `applied` counts it,
// and `not_applied`, or the session's end, gives the reservation back uncounted.
TEST_F(Policies, ARuleCountsOnlyWhenTheRelayAppliesIt) {
  load("[[fault]]\nname='void'\ntype='blackhole'\nmax_count=1\n");
  const auto message = data_end_view("a@x", {"b@y"});
  auto first = engine_->open_session(1, "192.0.2.1:1");
  EXPECT_EQ(first->decide(message.query()).what, verdict::blackhole);
  EXPECT_EQ(count_of("void"), 0u) << "decided, not applied yet";
  EXPECT_TRUE(engine_->injected_since_start().empty() || engine_->injected_since_start()[0].count == 0u);
  // Reserved: another session deciding meanwhile does not get it too (max_count = 1).
  auto second = engine_->open_session(2, "192.0.2.1:2");
  EXPECT_EQ(second->decide(message.query()).what, verdict::proceed);
  first->not_applied("void");   // e.g. 554: no recipient was accepted
  EXPECT_EQ(count_of("void"), 0u);
  EXPECT_TRUE(engine_->list()[0].active) << "its budget is whole again";
  // A session that ends holding a reservation gives it back uncounted.
  EXPECT_EQ(second->decide(message.query()).what, verdict::blackhole);
  second.reset();
  EXPECT_EQ(count_of("void"), 0u);
  EXPECT_EQ(first->decide(message.query()).what, verdict::blackhole);
  first->applied("void");
  first->applied("void");   // nothing reserved any more: not counted twice
  EXPECT_EQ(count_of("void"), 1u);
  ASSERT_EQ(engine_->injected_since_start().size(), 1u);
  EXPECT_EQ(engine_->injected_since_start()[0].count, 1u);
  EXPECT_EQ(engine_->list()[0].injected, 1u);
  EXPECT_FALSE(engine_->list()[0].active);
  EXPECT_EQ(engine_->open_session(3, "192.0.2.1:3")->decide(message.query()).what, verdict::proceed);
}

// A newcomer's trial: a faults reset removed the mailtap_faults_injected_total series, and a
// rule loaded again started it at 0, which Prometheus reads as a counter reset. The totals
// since start outlive the rule; the rule's own counts (list, counters) start afresh.
TEST_F(Policies, InjectedSinceStartOutlivesResetRemovalAndReload) {
  const std::string rule = "[[fault]]\nname='full'\ntype='reply'\nphase='mail'\ncode=452\n";
  load(rule);
  auto in_flight = engine_->open_session(1, "192.0.2.1");
  EXPECT_EQ(decide(mail_view("a@x"), 2).what, verdict::reply);
  engine_->reset();
  EXPECT_TRUE(engine_->counters().empty());
  // A session opened before the reset keeps its rule, and what it injects still counts.
  EXPECT_EQ(in_flight->decide(mail_view("a@x").query()).what, verdict::reply);
  in_flight->applied("full");
  auto totals = engine_->injected_since_start();
  ASSERT_EQ(totals.size(), 1u);
  EXPECT_EQ(totals[0].rule, "full");
  EXPECT_EQ(totals[0].type, "reply");
  EXPECT_EQ(totals[0].count, 2u);
  load(rule);   // loaded again: its own count starts at 0, the total goes on
  EXPECT_EQ(decide(mail_view("a@x"), 3).what, verdict::reply);
  ASSERT_EQ(engine_->counters().size(), 1u);
  EXPECT_EQ(engine_->counters()[0].count, 1u);
  EXPECT_EQ(engine_->injected_since_start()[0].count, 3u);
  ASSERT_TRUE(engine_->remove("full"));
  ASSERT_FALSE(engine_->replace_all({}));
  ASSERT_EQ(engine_->injected_since_start().size(), 1u);
  EXPECT_EQ(engine_->injected_since_start()[0].count, 3u);
}

TEST_F(Policies, OnlyTheWinnerCountsTowardMaxCount) {
  load(R"(
[[fault]]
name = "refuse"
type = "reply"
phase = "mail"
code = 550
max_count = 1
[[fault]]
name = "later"
type = "reply"
phase = "mail"
code = 451
max_count = 1
)");
  EXPECT_EQ(decide(mail_view("a@x")).rule, "refuse");
  EXPECT_EQ(decide(mail_view("a@x")).rule, "later");   // it matched before but did not win
  EXPECT_EQ(decide(mail_view("a@x")).what, verdict::proceed);
}

// The verdicts of one probabilistic rule over `n` sessions of a few commands each.
std::vector<bool> draws(engine& e, int n) {
  std::vector<bool> out;
  for (int s = 1; s <= n / 4; ++s) {
    auto advisor = e.open_session(static_cast<std::uint64_t>(s), "192.0.2.1");
    for (int i = 0; i < 4; ++i) out.push_back(advisor->decide(mail_view("a@x").query()).what == verdict::reply);
  }
  return out;
}

TEST_F(Policies, ProbabilityIsDeterministicPerSeed) {
  const std::string rules = "[[fault]]\nname='coin'\ntype='reply'\nphase='mail'\ncode=451\nprobability=0.5\n";
  auto a = make(1234), b = make(1234), c = make(99);
  load(rules, a.get());
  load(rules, b.get());
  load(rules, c.get());
  const auto da = draws(*a, 200), db = draws(*b, 200), dc = draws(*c, 200);
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
  const auto hits = std::count(da.begin(), da.end(), true);
  EXPECT_GT(hits, 60);
  EXPECT_LT(hits, 140);
  EXPECT_EQ(a->master_seed(), 1234u);
}

TEST_F(Policies, CertainRulesDoNotShiftTheDraws) {
  const std::string coin = "[[fault]]\nname='coin'\ntype='reply'\nphase='mail'\ncode=451\nprobability=0.3\n";
  const std::string sure = "[[fault]]\nname='sure'\ntype='delay'\nphase='mail'\ndelay='1s'\n";
  auto a = make(5), b = make(5);
  load(coin, a.get());
  load(sure + coin, b.get());
  EXPECT_EQ(draws(*a, 200), draws(*b, 200));
}

TEST_F(Policies, ExhaustedRulesStillDrawSoOtherSessionsNeverShiftTheDraws) {
  const std::string coin = "[[fault]]\nname='coin'\ntype='reply'\nphase='mail'\ncode=451\nprobability=0.3\n";
  const auto slow = [](int max_count) {
    return "[[fault]]\nname='slow'\ntype='delay'\nphase='mail'\nwhen='command'\ndelay='1s'\nprobability=0.5\n"
           "max_count=" + std::to_string(max_count) + "\n";
  };
  auto a = make(11), b = make(11);
  load(slow(0) + coin, a.get());      // never injects, still draws
  load(slow(1000) + coin, b.get());
  EXPECT_EQ(draws(*a, 200), draws(*b, 200));
}

TEST_F(Policies, ProbabilityZeroNeverMatches) {
  load("[[fault]]\nname='never'\ntype='reset'\nphase='mail'\nprobability=0\n");
  for (int i = 0; i < 50; ++i) EXPECT_EQ(decide(mail_view("a@x"), static_cast<std::uint64_t>(i + 1)).what, verdict::proceed);
}

// ---- matchers --------------------------------------------------------------------------

TEST_F(Policies, TimeWindows) {
  load(R"(
[[fault]]
name = "later"
type = "reset"
phase = "mail"
after = "10s"
for = "1m"
)");
  EXPECT_EQ(decide(mail_view("a@x")).what, verdict::proceed);
  clock_.advance(10 * second_us);
  EXPECT_EQ(decide(mail_view("a@x")).what, verdict::reset);
  clock_.advance(59 * second_us);
  EXPECT_EQ(decide(mail_view("a@x")).what, verdict::reset);
  clock_.advance(1 * second_us);
  EXPECT_EQ(decide(mail_view("a@x")).what, verdict::proceed);
}

TEST_F(Policies, UntilIsWallClock) {
  clock_.wall_s = 1'893'455'990;   // 2029-12-31T23:59:50Z
  load("[[fault]]\nname='expiring'\ntype='reset'\nphase='mail'\nuntil=2030-01-01T00:00:00Z\n");
  EXPECT_EQ(decide(mail_view("a@x")).what, verdict::reset);
  clock_.wall_s = 1'893'456'000;
  EXPECT_EQ(decide(mail_view("a@x")).what, verdict::proceed);
}

TEST_F(Policies, SessionAndTransactionMatchers) {
  load(R"(
[[fault]]
name = "third-session-second-mail"
type = "reset"
phase = "mail"
nth_session = 3
nth_transaction = 2
client = ["192.0.2.0/24", "2001:db8::/32"]
tls = true
)");
  command_view m = mail_view("a@x", 2);
  m.tls = true;
  EXPECT_EQ(decide(m, 3, "192.0.2.7:25").what, verdict::reset);
  EXPECT_EQ(decide(m, 3, "[2001:db8::1]:25").what, verdict::reset);
  EXPECT_EQ(decide(m, 3, "198.51.100.1:25").what, verdict::proceed);
  EXPECT_EQ(decide(m, 2, "192.0.2.7:25").what, verdict::proceed);
  EXPECT_EQ(decide(mail_view("a@x", 1), 3, "192.0.2.7:25").what, verdict::proceed);
  m.tls = false;
  EXPECT_EQ(decide(m, 3, "192.0.2.7:25").what, verdict::proceed);
}

TEST_F(Policies, AddressMatchers) {
  load(R"(
[[fault]]
name = "spam-sender"
type = "reply"
phase = "mail"
sender = "*@spam.example"
code = 550
[[fault]]
name = "by-domain"
type = "reply"
phase = ["rcpt", "data_end"]
sender_domain = "Corp.Example"
recipient_domain = "dest.example"
code = 551
[[fault]]
name = "by-helo"
type = "reply"
phase = "helo"
ehlo = "*.bad.example"
verb = "HEL?"
argument = "host*"
code = 552
)");
  EXPECT_EQ(decide(mail_view("x@spam.example")).reply.code, 550);
  EXPECT_EQ(decide(mail_view("x@ham.example")).what, verdict::proceed);
  EXPECT_EQ(decide(rcpt_view("ann@corp.example", "b@dest.example")).reply.code, 551);
  EXPECT_EQ(decide(rcpt_view("ann@corp.example", "b@other.example", {"c@dest.example"})).what, verdict::proceed);
  // Later phases: any recipient of the transaction.
  EXPECT_EQ(decide(data_end_view("ann@corp.example", {"x@other.example", "y@DEST.example"})).reply.code, 551);
  EXPECT_EQ(decide(data_end_view("ann@corp.example", {"x@other.example"})).what, verdict::proceed);
  EXPECT_EQ(decide({.ph = phase::helo, .verb = "HELO", .argument = "host.bad.example"}).reply.code, 552);
  EXPECT_EQ(decide({.ph = phase::helo, .verb = "HELO", .argument = "host.good.example"}).what, verdict::proceed);
}

TEST_F(Policies, LengthAndCountMatchers) {
  load(R"(
[[fault]]
name = "long-line"
type = "disconnect"
phase = "noop"
line_longer_than = 512
[[fault]]
name = "long-address"
type = "disconnect"
phase = "mail"
address_longer_than = 10
[[fault]]
name = "many-rcpt"
type = "disconnect"
phase = "rcpt"
recipients_more_than = 2
)");
  command_view noop{.ph = phase::noop, .verb = "NOOP", .line_length = 512};
  EXPECT_EQ(decide(noop).what, verdict::proceed);
  noop.line_length = 513;
  EXPECT_EQ(decide(noop).what, verdict::disconnect);
  EXPECT_EQ(decide(mail_view("a@xxxx.exa")).what, verdict::proceed);   // 10 bytes
  EXPECT_EQ(decide(mail_view("a@xxxx.exam")).what, verdict::disconnect);
  EXPECT_EQ(decide(rcpt_view("a@x", "r2@y", {"r1@y"})).what, verdict::proceed);
  EXPECT_EQ(decide(rcpt_view("a@x", "r3@y", {"r1@y", "r2@y"})).what, verdict::disconnect);   // the 3rd RCPT
}

// The loader refuses a matcher it cannot know at any of the rule's phases and keeps those it
// can (scenario_loader_test AMatcherNeverKnownAtTheRulesPhasesIsRefused): each kept one
// matches at the phase that makes it known, as the relay asks there.
TEST_F(Policies, AMatcherKnownAtOneOfItsPhasesMatchesThere) {
  load(R"(
[[fault]]
name = "abandoned"
type = "reset"
phase = "rset"
sender_domain = "corp.example"
recipient = "*@dest.example"
[[fault]]
name = "late-rcpt"
type = "reply"
phase = ["ehlo", "rcpt"]
recipient = "*@gone.example"
code = 550
)");
  command_view rset{.ph = phase::rset, .verb = "RSET", .mail_from = "ann@corp.example",
                    .recipients = {"b@dest.example"}, .transaction = 1};
  EXPECT_EQ(decide(rset).what, verdict::reset);
  rset.recipients = {"b@other.example"};
  EXPECT_EQ(decide(rset).what, verdict::proceed);
  EXPECT_EQ(decide({.ph = phase::ehlo, .verb = "EHLO", .argument = "client.example"}).what, verdict::proceed);
  EXPECT_EQ(decide(rcpt_view("ann@corp.example", "x@gone.example")).reply.code, 550);
  // Made in code, as the admin API's rules are: refused the same way.
  rule dead;
  dead.name = "strip-tls";
  dead.params = capabilities_params{.strip = {"STARTTLS"}, .mask = {}, .size = {}};
  dead.match.recipient = "*@example.test";
  auto err = engine_->add(dead);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->rfind("rule 'strip-tls': can never match at phase 'ehlo'", 0), 0u) << *err;
  EXPECT_EQ(engine_->list().size(), 2u);
}

// ---- engine management -----------------------------------------------------------------

// A name already loaded is told apart from a name twice among the new rules, so that the
// admin API can say the rule is armed (a newcomer's trial: its 409 read as a duplicate
// within the request).
TEST_F(Policies, AddAllNamesTheRuleAlreadyLoaded) {
  rule r;
  r.name = "armed";
  r.params = reply_params{reply_spec{550, "5.7.1", "No"}};
  r.phases = {phase::mail};
  ASSERT_FALSE(engine_->add(r));
  std::string loaded;
  rule other = r;
  other.name = "other";
  EXPECT_TRUE(engine_->add_all({other, r}, &loaded));
  EXPECT_EQ(loaded, "armed");
  loaded.clear();
  rule twice = r;
  twice.name = "twice";
  EXPECT_TRUE(engine_->add_all({twice, twice}, &loaded));
  EXPECT_EQ(loaded, "");
  EXPECT_EQ(engine_->list().size(), 1u);
}

TEST_F(Policies, AddRemoveResetList) {
  rule r;
  r.name = "prog";
  r.params = reply_params{reply_spec{550, "5.7.1", "No"}};
  r.phases = {phase::mail};
  EXPECT_FALSE(engine_->add(r));
  auto dup = engine_->add(r);
  ASSERT_TRUE(dup);
  EXPECT_NE(dup->find("duplicate"), std::string::npos) << *dup;

  rule grey;
  grey.name = "grey";
  grey.params = greylist_params{};
  EXPECT_FALSE(engine_->add(grey));   // phase defaults to rcpt
  auto list = engine_->list();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1].phases, std::vector<phase>{phase::rcpt});
  EXPECT_TRUE(list[1].active);

  rule bad_phase = r;
  bad_phase.name = "bad";
  bad_phase.params = banner_params{.mask = true, .text = {}};
  bad_phase.phases = {phase::mail};
  auto err = engine_->add(bad_phase);
  ASSERT_TRUE(err);
  EXPECT_NE(err->find("not allowed"), std::string::npos) << *err;

  rule session_with_sender;
  session_with_sender.name = "t";
  session_with_sender.params = throttle_params{.bytes_per_second = 10, .direction = shaping_direction::both};
  session_with_sender.match.sender = "*";
  EXPECT_TRUE(engine_->add(session_with_sender));
  rule unnamed = r;
  unnamed.name = "has space";
  EXPECT_TRUE(engine_->add(unnamed));

  // add_all is all or none.
  rule ok1 = r, ok2 = r;
  ok1.name = "ok1";
  ok2.name = "prog";
  EXPECT_TRUE(engine_->add_all({ok1, ok2}));
  EXPECT_EQ(engine_->list().size(), 2u);

  EXPECT_EQ(decide(rcpt_view("a@x", "b@y")).what, verdict::reply);
  EXPECT_EQ(decide(rcpt_view("a@x", "b@y")).what, verdict::reply);
  EXPECT_TRUE(engine_->remove("prog"));
  EXPECT_FALSE(engine_->remove("prog"));
  engine_->reset();
  EXPECT_TRUE(engine_->list().empty());
  EXPECT_FALSE(engine_->add(grey));
  // After reset the greylist has forgotten every triple.
  clock_.advance(3600 * second_us);
  EXPECT_EQ(decide(rcpt_view("a@x", "b@y")).what, verdict::reply);
}

TEST_F(Policies, AdvisorOutlivesEngine) {
  load("[[fault]]\nname='r'\ntype='reset'\nphase='mail'\n");
  auto advisor = engine_->open_session(1, "192.0.2.1");
  engine_.reset();
  EXPECT_EQ(advisor->decide(mail_view("a@x").query()).what, verdict::reset);
}

// A reload (relay/reload.cpp) swaps the whole rule set; a session already open keeps the
// rules it opened with, the next session gets the new ones.
TEST_F(Policies, ReplaceAllAppliesToNewSessionsOnly) {
  load("[[fault]]\nname='old'\ntype='reset'\nphase='mail'\n");
  auto in_flight = engine_->open_session(1, "192.0.2.1");
  toml::table doc = toml::parse(std::string_view("[[fault]]\nname='new'\ntype='reply'\nphase='mail'\ncode=451\n"),
                                std::string_view("reload.toml"));
  auto res = rules_from_toml(doc, "reload.toml");
  ASSERT_TRUE(res.ok()) << res.error;
  ASSERT_FALSE(engine_->replace_all(res.rules));
  EXPECT_EQ(in_flight->decide(mail_view("a@x").query()).what, verdict::reset);
  const auto fresh = decide(mail_view("a@x"), 2);
  EXPECT_EQ(fresh.what, verdict::reply);
  EXPECT_EQ(fresh.rule, "new");
  ASSERT_EQ(engine_->list().size(), 1u);
  EXPECT_EQ(engine_->list().front().name, "new");
  // Emptied: new sessions get no fault, the old session still has its rule.
  ASSERT_FALSE(engine_->replace_all({}));
  EXPECT_EQ(decide(mail_view("a@x"), 3).what, verdict::proceed);
  EXPECT_EQ(in_flight->decide(mail_view("a@x").query()).what, verdict::reset);
}

TEST_F(Policies, ReplaceAllWithABadRuleKeepsTheCurrentRules) {
  load("[[fault]]\nname='old'\ntype='reset'\nphase='mail'\n");
  rule a;
  a.name = "twin";
  a.params = delay_params{};
  rule b = a;
  auto problem = engine_->replace_all({a, b});
  ASSERT_TRUE(problem);
  EXPECT_NE(problem->find("twin"), std::string::npos) << *problem;
  ASSERT_EQ(engine_->list().size(), 1u);
  EXPECT_EQ(engine_->list().front().name, "old");
  EXPECT_EQ(decide(mail_view("a@x")).what, verdict::reset);
}

TEST_F(Policies, RemovedRuleStaysWithTheSessionsThatOpenedWithIt) {
  load("[[fault]]\nname='r'\ntype='reset'\nphase='mail'\n");
  auto in_flight = engine_->open_session(1, "192.0.2.1");
  ASSERT_TRUE(engine_->remove("r"));
  EXPECT_EQ(in_flight->decide(mail_view("a@x").query()).what, verdict::reset);
  EXPECT_EQ(decide(mail_view("a@x"), 2).what, verdict::proceed);
}

// A firewall rule is armed as its parts (pix/banner, pix/verbs, ...): its own name removes
// them all (a fifth trial: `mailtap faults remove pix` said "no fault rule named 'pix'").
TEST_F(Policies, AFirewallRulesNameRemovesItsParts) {
  load("[[fault]]\nname='pix'\ntype='firewall'\nprofile='cisco-pix-fixup'\n"
       "[[fault]]\nname='pixie'\ntype='reset'\nphase='mail'\n"
       "[[fault]]\nname='pix/mine'\ntype='reset'\nphase='rcpt'\n");
  const auto before = engine_->list().size();
  ASSERT_GT(before, 3u);
  ASSERT_TRUE(engine_->remove("pix"));
  // Only the profile's parts go: a rule someone named pix/mine is not one of them.
  ASSERT_EQ(engine_->list().size(), 2u);
  EXPECT_EQ(engine_->list().front().name, "pixie");
  EXPECT_EQ(engine_->list().back().name, "pix/mine");
  EXPECT_FALSE(engine_->remove("pix"));
}

TEST_F(Policies, ThrowingClockFallsBackToProceedAndCounts) {
  bool fail = false;
  engine e(1, [&]() -> std::uint64_t {
    if (fail) throw std::runtime_error("clock");
    return 1;
  }, [] { return std::int64_t{0}; });
  load("[[fault]]\nname='r'\ntype='reset'\nphase='mail'\n", &e);
  auto advisor = e.open_session(1, "192.0.2.1");
  fail = true;
  EXPECT_EQ(advisor->decide(mail_view("a@x").query()).what, verdict::proceed);
  EXPECT_FALSE(advisor->plan_session().to_client.active());
  EXPECT_EQ(e.decide_errors(), 2u);
}

TEST_F(Policies, ThreadSafetySmoke) {
  load("[[fault]]\nname='base'\ntype='greylist'\n[[fault]]\nname='q'\ntype='quota'\nlimit=3\nwindow='1s'\n");
  constexpr int deciders_count = 2;
  constexpr int sessions_each = 500;
  std::atomic<int> finished{0};
  std::thread mutator([&] {
    // Bounded: stops when both deciders are done, or after this many rounds.
    for (int i = 0; i < 100'000 && finished.load() < deciders_count; ++i) {
      rule r;
      r.name = "dyn";
      r.params = delay_params{};
      r.phases = {phase::rcpt, phase::mail};
      (void)engine_->add(r);
      (void)engine_->list();
      (void)engine_->counters();
      (void)engine_->remove("dyn");
      if (i % 100 == 99) {
        engine_->reset();
        load("[[fault]]\nname='base'\ntype='greylist'\n");
      }
      clock_.advance(1000);
    }
  });
  std::vector<std::thread> deciders;
  std::atomic<std::uint64_t> decisions{0};
  for (int t = 0; t < deciders_count; ++t) {
    deciders.emplace_back([&, t] {
      for (int s = 0; s < sessions_each; ++s) {
        auto a = engine_->open_session(static_cast<std::uint64_t>(s + 1), "192.0.2." + std::to_string(t));
        (void)a->plan_session();
        (void)a->decide(mail_view("a@x").query());
        (void)a->decide(rcpt_view("a@x", "b" + std::to_string(s) + "@y").query());
        decisions += 2;
      }
      ++finished;
    });
  }
  for (auto& d : deciders) d.join();
  mutator.join();
  EXPECT_EQ(decisions.load(), 2u * deciders_count * sessions_each);
  EXPECT_EQ(engine_->decide_errors(), 0u);
}

}  // namespace
