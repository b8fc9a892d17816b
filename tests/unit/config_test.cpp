// relay/config: defaults, every key, every error kind (one line naming file, line and key),
// path resolution against the config file's directory, and the shipped example file.
#include "relay/config.hpp"
#include "policies/scenario_loader.hpp"

#include <gtest/gtest.h>

#include <pwd.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#ifndef MAILTAP_SOURCE_DIR
#error "MAILTAP_SOURCE_DIR must be defined"
#endif

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using mailtap::config;
using mailtap::endpoint;
using mailtap::load_config_file;
using mailtap::load_config_text;
using mailtap::parse_endpoint;

// A fresh directory under the system temp dir, removed at the end of the test.
class temp_dir {
 public:
  temp_dir() {
    std::random_device rd;
    path_ = fs::temp_directory_path() / ("mailtap_config_test_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path write(const fs::path& relative, const std::string& text) const {
    const fs::path p = path_ / relative;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }

 private:
  fs::path path_;
};

// Loads text and expects failure; returns the error.
std::string error_of(const std::string& text, const std::string& name = "mailtap.toml") {
  std::string error;
  auto c = load_config_text(text, name, config{}, error);
  EXPECT_FALSE(c.has_value()) << text;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  return error;
}

bool same(const endpoint& a, const endpoint& b) { return a.host == b.host && a.port == b.port; }

// ---- parse_endpoint / to_string -------------------------------------------------------------

TEST(ParseEndpoint, HostAndPort) {
  std::string err;
  auto e = parse_endpoint("127.0.0.1:2525", err);
  ASSERT_TRUE(e) << err;
  EXPECT_TRUE(err.empty());
  EXPECT_EQ(e->host, "127.0.0.1");
  EXPECT_EQ(e->port, 2525);
  EXPECT_EQ(e->to_string(), "127.0.0.1:2525");

  e = parse_endpoint("mx.example.com:25", err);
  ASSERT_TRUE(e) << err;
  EXPECT_EQ(e->host, "mx.example.com");
  EXPECT_EQ(e->port, 25);

  e = parse_endpoint("localhost:0", err);
  ASSERT_TRUE(e) << err;
  EXPECT_EQ(e->port, 0);
  e = parse_endpoint("h:65535", err);
  ASSERT_TRUE(e) << err;
  EXPECT_EQ(e->port, 65535);
}

TEST(ParseEndpoint, BracketedIpv6) {
  std::string err;
  auto e = parse_endpoint("[::1]:2525", err);
  ASSERT_TRUE(e) << err;
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->port, 2525);
  EXPECT_EQ(e->to_string(), "[::1]:2525");

  e = parse_endpoint("[2001:db8::25]:587", err);
  ASSERT_TRUE(e) << err;
  EXPECT_EQ(e->host, "2001:db8::25");
  EXPECT_EQ(e->to_string(), "[2001:db8::25]:587");

  EXPECT_EQ((endpoint{"::", 25}).to_string(), "[::]:25");
}

TEST(ParseEndpoint, RejectsWithAMessageNamingTheProblem) {
  struct bad_case {
    const char* text;
    const char* problem;
  };
  const bad_case cases[] = {
      {"127.0.0.1", "missing port"},
      {"127.0.0.1:", "missing port"},
      {"[::1]", "missing port"},
      {"[::1]:", "missing port"},
      {"[::1]2525", "expected ':' after ']'"},
      {"[::1:25", "missing ']'"},
      {"host:65536", "port greater than 65535"},
      {"host:99999999999999999999", "port greater than 65535"},
      {"host:25a", "port is not a number"},
      {"host:-1", "port is not a number"},
      {"host:+25", "port is not a number"},
      {"host: 25", "port is not a number"},
      {":25", "empty host"},
      {"[]:25", "empty host"},
      {"", "missing port"},
      {"::1:25", "IPv6 address must be in brackets"},
      {"[1.2.3.4]:25", "brackets hold only IPv6 addresses"},
      {"ho st:25", "invalid character in host"},
      {"[::1 ]:25", "invalid character in IPv6 address"},
  };
  for (const auto& c : cases) {
    std::string err;
    auto e = parse_endpoint(c.text, err);
    EXPECT_FALSE(e) << c.text;
    EXPECT_NE(err.find(c.problem), std::string::npos) << c.text << " -> " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos);
  }
}

TEST(ParseEndpoint, ClearsAStaleError) {
  std::string err = "old";
  ASSERT_TRUE(parse_endpoint("a:1", err));
  EXPECT_TRUE(err.empty());
}

// ---- defaults and every key --------------------------------------------------------------

TEST(ConfigLoad, EmptyTextKeepsTheBase) {
  std::string error = "stale";
  auto c = load_config_text("", "mailtap.toml", config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_TRUE(error.empty());
  const config d;
  EXPECT_TRUE(same(c->listen, endpoint{"127.0.0.1", 2525}));
  EXPECT_FALSE(c->upstream.has_value());
  EXPECT_TRUE(same(c->admin, endpoint{"127.0.0.1", 8025}));
  EXPECT_EQ(c->captures_dir, d.captures_dir);
  EXPECT_TRUE(c->scenarios.empty());
  EXPECT_EQ(c->seed, 0u);
  EXPECT_EQ(c->max_sessions, 256u);
  EXPECT_EQ(c->threads, 0u);
  EXPECT_EQ(c->busy_poll, 200us);
  EXPECT_EQ(c->bare_eol, mailtap::protocol::bare_eol_mode::strict);
  EXPECT_EQ(c->timeouts.client_idle, 300s);
  EXPECT_EQ(c->timeouts.upstream_greeting, 300s);
  EXPECT_EQ(c->timeouts.upstream_reply, 300s);
  EXPECT_EQ(c->timeouts.upstream_data_init, 120s);
  EXPECT_EQ(c->timeouts.upstream_data_end, 600s);
  EXPECT_EQ(c->upstream_connect_timeout, 30s);
  EXPECT_EQ(c->drain_timeout, 30s);
  EXPECT_EQ(c->relay_name, "mailtap");
  EXPECT_EQ(c->log_level, "info");
}

TEST(ConfigLoad, CommentsOnlyAndEmptyTablesKeepTheBase) {
  config base;
  base.seed = 7;
  base.upstream = endpoint{"mx", 25};
  std::string error;
  auto c = load_config_text("# nothing\n\n[data]\n[timeouts]\n", "m.toml", base, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->seed, 7u);
  ASSERT_TRUE(c->upstream);
  EXPECT_TRUE(same(*c->upstream, endpoint{"mx", 25}));
}

// A minimal valid scenario file (scenario files must hold at least one [[fault]]).
std::string scenario_text(const std::string& name) {
  return "# test scenario\n[[fault]]\nname = \"" + name + "\"\ntype = \"reset\"\nphase = \"rcpt\"\n";
}

TEST(ConfigLoad, EveryKeyParsed) {
  temp_dir dir;
  dir.write("policies/scenarios/a.toml", scenario_text("s1"));
  dir.write("b.toml", scenario_text("s2"));
  const std::string text = R"(
listen = "[::1]:2626"
upstream = "mx.example.com:25"
admin = "0.0.0.0:9025"
captures = "/srv/captures"
scenarios = ["policies/scenarios/a.toml", "b.toml"]
seed = 42
max_sessions = 1000
threads = 4
busy_poll_us = 0
relay_name = "relay.test"
log_level = "debug"
[data]
bare_line_endings = "normalize"
[timeouts]
client_idle = 60
upstream_connect = 1.5
upstream_greeting = 2
upstream_reply = 3
upstream_data_init = 4
upstream_data_end = 0.25
drain = 5
)";
  const fs::path file = dir.write("mailtap.toml", text);
  std::string error;
  auto c = load_config_file(file, config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_TRUE(same(c->listen, endpoint{"::1", 2626}));
  ASSERT_TRUE(c->upstream);
  EXPECT_TRUE(same(*c->upstream, endpoint{"mx.example.com", 25}));
  EXPECT_TRUE(same(c->admin, endpoint{"0.0.0.0", 9025}));
  EXPECT_EQ(c->captures_dir, fs::path("/srv/captures"));
  ASSERT_EQ(c->scenarios.size(), 2u);
  EXPECT_EQ(c->scenarios[0], dir.path() / "policies/scenarios/a.toml");
  ASSERT_EQ(c->faults.size(), 2u);   // the scenario files' rules, in list order
  EXPECT_EQ(c->faults[0].name, "s1");
  EXPECT_EQ(c->faults[1].name, "s2");
  EXPECT_EQ(c->scenarios[1], dir.path() / "b.toml");
  EXPECT_EQ(c->seed, 42u);
  EXPECT_EQ(c->max_sessions, 1000u);
  EXPECT_EQ(c->threads, 4u);
  EXPECT_EQ(c->busy_poll, 0us);
  EXPECT_EQ(c->relay_name, "relay.test");
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->bare_eol, mailtap::protocol::bare_eol_mode::normalize);
  EXPECT_EQ(c->timeouts.client_idle, 60s);
  EXPECT_EQ(c->upstream_connect_timeout, 1500ms);
  EXPECT_EQ(c->timeouts.upstream_greeting, 2s);
  EXPECT_EQ(c->timeouts.upstream_reply, 3s);
  EXPECT_EQ(c->timeouts.upstream_data_init, 4s);
  EXPECT_EQ(c->timeouts.upstream_data_end, 250ms);
  EXPECT_EQ(c->drain_timeout, 5s);
}

TEST(ConfigLoad, EnumValues) {
  std::string error;
  for (auto [name, mode] : {std::pair{"strict", mailtap::protocol::bare_eol_mode::strict},
                            std::pair{"normalize", mailtap::protocol::bare_eol_mode::normalize},
                            std::pair{"raw", mailtap::protocol::bare_eol_mode::raw}}) {
    auto c = load_config_text(std::string("data.bare_line_endings = \"") + name + "\"", "m.toml",
                              config{}, error);
    ASSERT_TRUE(c) << error;
    EXPECT_EQ(c->bare_eol, mode);
  }
  for (const char* level : {"trace", "debug", "info", "warn", "error", "off"}) {
    auto c = load_config_text(std::string("log_level = '") + level + "'", "m.toml", config{}, error);
    ASSERT_TRUE(c) << error;
    EXPECT_EQ(c->log_level, level);
  }
}

// The admin API: an address given in the file must bind (admin_explicit); "off" disables it.
TEST(ConfigLoad, AdminAddressOrOff) {
  std::string error;
  auto d = load_config_text("", "m.toml", config{}, error);
  ASSERT_TRUE(d) << error;
  EXPECT_FALSE(d->admin_off);
  EXPECT_FALSE(d->admin_explicit);
  auto off = load_config_text("admin = \"off\"", "m.toml", config{}, error);
  ASSERT_TRUE(off) << error;
  EXPECT_TRUE(off->admin_off);
  EXPECT_TRUE(off->admin_explicit);
  auto set = load_config_text("admin = \"127.0.0.1:0\"", "m.toml", config{}, error);
  ASSERT_TRUE(set) << error;
  EXPECT_FALSE(set->admin_off);
  EXPECT_TRUE(set->admin_explicit);
  EXPECT_TRUE(same(set->admin, endpoint{"127.0.0.1", 0}));
  EXPECT_FALSE(load_config_text("admin = \"nope\"", "m.toml", config{}, error));
  EXPECT_EQ(error.rfind("m.toml:1: key 'admin': ", 0), 0u) << error;
}

// The admin token: inline or from a file (relative to the config's directory, trailing line
// end dropped), one or the other; a bad token is refused without being repeated.
TEST(ConfigLoad, AdminTokenInlineOrFromAFile) {
  const std::string token = "0123456789abcdef0123456789ABCDEF";
  std::string error;
  auto inline_token = load_config_text("admin_token = \"" + token + "\"", "m.toml", config{}, error);
  ASSERT_TRUE(inline_token) << error;
  EXPECT_EQ(inline_token->admin_token, token);
  EXPECT_TRUE(load_config_text("", "m.toml", config{}, error)->admin_token.empty());

  temp_dir dir;
  dir.write("secret/token", token + "\n");
  const auto conf = dir.write("mailtap.toml", "admin = \"0.0.0.0:0\"\nadmin_token_file = \"secret/token\"\n");
  auto from_file = load_config_file(conf, config{}, error);
  ASSERT_TRUE(from_file) << error;
  EXPECT_EQ(from_file->admin_token, token);

  EXPECT_NE(error_of("admin_token = \"short\"").find("key 'admin_token': expected an admin token of 16 to 256"),
            std::string::npos);
  const std::string spaced = error_of("admin_token = \"has spaces in it, sixteen+\"");
  EXPECT_NE(spaced.find("may hold only"), std::string::npos) << spaced;
  EXPECT_EQ(spaced.find("has spaces"), std::string::npos) << "the token is repeated: " << spaced;
  dir.write("bad", "not a token at all\n");
  EXPECT_FALSE(load_config_file(dir.write("b.toml", "admin_token_file = \"bad\"\n"), config{}, error));
  EXPECT_NE(error.find("b.toml:1: key 'admin_token_file': "), std::string::npos) << error;
  EXPECT_FALSE(load_config_file(dir.write("c.toml", "admin_token_file = \"missing\"\n"), config{}, error));
  EXPECT_NE(error.find("key 'admin_token_file'"), std::string::npos) << error;
  EXPECT_FALSE(load_config_file(
      dir.write("d.toml", "admin_token = \"" + token + "\"\nadmin_token_file = \"secret/token\"\n"), config{}, error));
  EXPECT_NE(error.find("go one without the other"), std::string::npos) << error;
}

TEST(ConfigLoad, AdminHostsAreNamesOrAddressesLowerCased) {
  std::string error;
  auto c = load_config_text("admin_hosts = [\"Mailtap.Example.NET\", \"192.0.2.7\", \"2001:DB8::1\", \"[::2]\"]",
                            "m.toml", config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->admin_hosts, (std::vector<std::string>{"mailtap.example.net", "192.0.2.7", "[2001:db8::1]", "[::2]"}));
  EXPECT_EQ(error_of("admin_hosts = [\"ok.example\", \"bad/name\"]"),
            "mailtap.toml:1: key 'admin_hosts': 'bad/name' is not a host name or an IP address (no port)");
  EXPECT_NE(error_of("admin_hosts = [\"[name]\"]").find("not a host name"), std::string::npos);
  EXPECT_NE(error_of("admin_hosts = \"one.example\"").find("key 'admin_hosts'"), std::string::npos);
  EXPECT_NE(error_of("admin_hosts = [1]").find("key 'admin_hosts'"), std::string::npos);
}

TEST(AdminToken, FileIsTrimmedAndChecked) {
  temp_dir dir;
  std::string error;
  auto t = mailtap::read_admin_token_file(dir.write("t", "abcdefghijklmnopq \r\n\n"), error);
  ASSERT_TRUE(t) << error;
  EXPECT_EQ(*t, "abcdefghijklmnopq");
  EXPECT_FALSE(mailtap::read_admin_token_file(dir.write("empty", ""), error));
  EXPECT_NE(error.find("got 0"), std::string::npos) << error;
  EXPECT_FALSE(mailtap::read_admin_token_file(dir.write("big", std::string(400, 'a')), error));
  EXPECT_FALSE(mailtap::read_admin_token_file(dir.path() / "none", error));
  EXPECT_NE(error.find("cannot read the admin token"), std::string::npos) << error;
  EXPECT_EQ(mailtap::admin_token_problem(std::string(256, 'a')), "");
  EXPECT_NE(mailtap::admin_token_problem(std::string(257, 'a')), "");
  EXPECT_NE(mailtap::admin_token_problem("abcdefghijklmnop/"), "");
}

TEST(ConfigLoad, BuiltinUpstreamOverridesABaseUpstream) {
  config base;
  base.upstream = endpoint{"mx", 25};
  std::string error;
  auto c = load_config_text("upstream = \"builtin\"", "m.toml", base, error);
  ASSERT_TRUE(c) << error;
  EXPECT_FALSE(c->upstream.has_value());
}

TEST(ConfigLoad, RangeBoundsAccepted) {
  std::string error;
  auto c = load_config_text("max_sessions = 1\nthreads = 256\nseed = 9223372036854775807\n"
                            "timeouts.drain = 0.001\ntimeouts.client_idle = 31536000",
                            "m.toml", config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->max_sessions, 1u);
  EXPECT_EQ(c->threads, 256u);
  EXPECT_EQ(c->seed, 9223372036854775807u);
  EXPECT_EQ(c->drain_timeout, 1ms);
  c = load_config_text("max_sessions = 100000\nthreads = 0", "m.toml", config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->max_sessions, 100000u);
}

TEST(ConfigLoad, FailureClearsNothingButReturnsNullopt) {
  std::string error;
  EXPECT_FALSE(load_config_text("seed = -1", "m.toml", config{}, error));
  EXPECT_FALSE(error.empty());
  // A later success clears the error.
  EXPECT_TRUE(load_config_text("seed = 1", "m.toml", config{}, error));
  EXPECT_TRUE(error.empty());
}

// ---- errors: one line, file, line, key -----------------------------------------------------

TEST(ConfigErrors, SyntaxError) {
  const std::string e = error_of("seed = 1\n\nlisten = \n");
  EXPECT_EQ(e.rfind("mailtap.toml:3: ", 0), 0u) << e;
  EXPECT_NE(e.find("expected"), std::string::npos) << e;
}

// A hostile trial: a config error echoed a value's bidirectional controls and line separators raw,
// so a right-to-left override in it reordered the rest of the error line on the terminal. They
// are escaped as the capture readers' errors escape them (captures/show.hpp terminal_safe).
TEST(ConfigErrors, AnErrorEscapesBidirectionalControlsAndLineSeparatorsInTheValue) {
  const std::string controls[] = {
      "\xe2\x80\xaa", "\xe2\x80\xab", "\xe2\x80\xac", "\xe2\x80\xad", "\xe2\x80\xae",   // U+202A..202E
      "\xe2\x81\xa6", "\xe2\x81\xa7", "\xe2\x81\xa8", "\xe2\x81\xa9",                   // U+2066..2069
      "\xe2\x80\x8e", "\xe2\x80\x8f", "\xd8\x9c",                                       // U+200E, U+200F, U+061C
      "\xe2\x80\xa8", "\xe2\x80\xa9",                                                   // U+2028, U+2029
  };
  temp_dir dir;
  for (const std::string& raw : controls) {
    std::string escaped;
    for (unsigned char b : raw) {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", b);
      escaped += buf;
    }
    // A file, as `mailtap run --config` reads it; and a key whose value is echoed in the error.
    const fs::path file = dir.write("bidi.toml", "seed = 1\nlisten = \"127.0.0.1:25" + raw + "25\"\n");
    std::string error;
    EXPECT_FALSE(load_config_file(file, config{}, error).has_value());
    EXPECT_NE(error.find(":2: key 'listen': "), std::string::npos) << error;
    EXPECT_NE(error.find("127.0.0.1:25" + escaped + "25"), std::string::npos) << error;
    EXPECT_EQ(error.find(raw), std::string::npos) << "raw control in: " << error;
    // A value echoed by config_reader itself (a duration), and an unknown key.
    for (const std::string& text : {"[timeouts]\nclient_idle = \"5" + raw + "s\"\n", "seed = 1\nli" + raw + "sten = 1\n"}) {
      const std::string e = error_of(text);
      EXPECT_NE(e.find(escaped), std::string::npos) << e;
      EXPECT_EQ(e.find(raw), std::string::npos) << "raw control in: " << e;
    }
  }
  // What is no control stays as it is: an en dash, a right single quotation mark.
  const std::string e = error_of("listen = \"h\xe2\x80\x93x\xe2\x80\x99:1:\"\n");
  EXPECT_NE(e.find("h\xe2\x80\x93x\xe2\x80\x99"), std::string::npos) << e;
}

// A hostile trial: a scenario file's error (`mailtap run --scenario`, a config's `scenarios`,
// the admin API's POST /api/v1/scenarios: all policies::load_scenario) echoed a value's U+202E
// raw, and a C1 control (a raw C0 one is a TOML syntax error); config errors escaped them (4fa4545) but scenario files did not. The
// echo is config_reader's, now safe on a terminal itself (protocol/terminal_text.hpp).
TEST(ConfigErrors, AScenarioFilesErrorEscapesBidirectionalAndOtherControls) {
  temp_dir dir;
  for (const std::string raw : {"\xe2\x80\xae", "\xe2\x81\xa6", "\xe2\x80\xa8", "\xc2\x9b"}) {
    std::string escaped;
    for (unsigned char b : raw) {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", b);
      escaped += buf;
    }
    const fs::path file = dir.write("s.toml", "[[fault]]\nname = \"d\"\ntype = \"delay\"\nphase = \"mail\"\ndelay = \"5" +
                                                  raw + "s\"\n");
    const auto loaded = mailtap::policies::load_scenario(file.native());
    ASSERT_FALSE(loaded.ok());
    EXPECT_NE(loaded.error.find(":5: key 'delay': "), std::string::npos) << loaded.error;
    EXPECT_NE(loaded.error.find("'5" + escaped + "s'"), std::string::npos) << loaded.error;
    EXPECT_EQ(loaded.error.find(raw), std::string::npos) << "raw control in: " << loaded.error;
  }
}

// A newcomer's trial: a config listing the same scenario file twice said "cfg/a.toml:2: key
// 'name': duplicate rule name 'a' (first at line 1)", the file's own first rule against itself.
// It says the file is listed twice, also when the second spelling differs ("./cfg/a.toml").
TEST(ConfigErrors, AScenarioFileListedTwiceSaysSo) {
  temp_dir dir;
  dir.write("cfg/a.toml", scenario_text("a"));
  for (const std::string second : {"cfg/a.toml", "./cfg/../cfg/a.toml"}) {
    const fs::path file = dir.write("mailtap.toml", "seed = 1\nscenarios = [\"cfg/a.toml\", \"" + second + "\"]\n");
    std::string error;
    EXPECT_FALSE(load_config_file(file, config{}, error).has_value());
    EXPECT_NE(error.find(":2: key 'scenarios[1]': the scenario file "), std::string::npos) << error;
    EXPECT_NE(error.find("a.toml is listed twice (also scenarios[0]): list each file once"), std::string::npos) << error;
    EXPECT_EQ(error.find("duplicate rule name"), std::string::npos) << error;
  }
}

TEST(ConfigErrors, DuplicateKeyIsASyntaxError) {
  const std::string e = error_of("seed = 1\nseed = 2\n");
  EXPECT_EQ(e.rfind("mailtap.toml:2: ", 0), 0u) << e;
}

TEST(ConfigErrors, UnknownKey) {
  EXPECT_EQ(error_of("seed = 1\nlistne = \"a:1\"\n"), "mailtap.toml:2: key 'listne': unknown key");
}

TEST(ConfigErrors, UnknownKeyInsideATable) {
  EXPECT_EQ(error_of("[timeouts]\nclient_idle = 1\nclient_idel = 2\n"),
            "mailtap.toml:3: key 'timeouts.client_idel': unknown key");
  EXPECT_EQ(error_of("[data]\n\nbare = 'raw'\n"), "mailtap.toml:3: key 'data.bare': unknown key");
}

TEST(ConfigErrors, UnknownTable) {
  EXPECT_EQ(error_of("seed = 1\n\n[timeout]\nclient_idle = 3\n"),
            "mailtap.toml:3: key 'timeout': unknown key");
  EXPECT_EQ(error_of("seed = 1\n[[listeners]]\nport = 1\n"),
            "mailtap.toml:2: key 'listeners': unknown key");
  EXPECT_EQ(error_of("[data.extra]\nx = 1\n"), "mailtap.toml:1: key 'data.extra': unknown key");
}

TEST(ConfigErrors, WrongType) {
  EXPECT_EQ(error_of("\n\n\n\n\n[timeouts]\nclient_idle = \"300\"\n"),
            "mailtap.toml:7: key 'timeouts.client_idle': expected a number of seconds or a duration like \"250ms\", "
            "\"5s\", \"5m\", \"1h\" or \"7d\", got '300'");
  EXPECT_EQ(error_of("seed = 1.5"), "mailtap.toml:1: key 'seed': expected a non-negative integer, got float");
  EXPECT_EQ(error_of("\nmax_sessions = \"256\""),
            "mailtap.toml:2: key 'max_sessions': expected an integer from 1 to 100000, got string");
  EXPECT_EQ(error_of("listen = 2525"),
            "mailtap.toml:1: key 'listen': expected a string HOST:PORT or [V6]:PORT, got integer");
  EXPECT_EQ(error_of("scenarios = \"a.toml\""),
            "mailtap.toml:1: key 'scenarios': expected an array of file paths, got string");
  EXPECT_EQ(error_of("timeouts = 5"), "mailtap.toml:1: key 'timeouts': expected a table, got integer");
  EXPECT_EQ(error_of("data = 'raw'"), "mailtap.toml:1: key 'data': expected a table, got string");
  EXPECT_EQ(error_of("timeouts.drain = true"),
            "mailtap.toml:1: key 'timeouts.drain': expected a number of seconds > 0 or a duration string like "
            "\"5m\", got boolean");
  const std::string e = error_of("relay_name = 1979-05-27");
  EXPECT_EQ(e.rfind("mailtap.toml:1: key 'relay_name': expected", 0), 0u) << e;
  EXPECT_NE(e.find("got date"), std::string::npos) << e;
  EXPECT_NE(error_of("captures = ['a']").find("key 'captures': expected a string"), std::string::npos);
}

TEST(ConfigErrors, OutOfRange) {
  EXPECT_EQ(error_of("seed = -1"), "mailtap.toml:1: key 'seed': expected a non-negative integer, got -1");
  EXPECT_EQ(error_of("\n\nmax_sessions = 0"),
            "mailtap.toml:3: key 'max_sessions': expected an integer from 1 to 100000, got 0");
  EXPECT_EQ(error_of("max_sessions = 100001"),
            "mailtap.toml:1: key 'max_sessions': expected an integer from 1 to 100000, got 100001");
  EXPECT_EQ(error_of("threads = 257"),
            "mailtap.toml:1: key 'threads': expected an integer from 0 (one per core) to 256, got 257");
  EXPECT_EQ(error_of("threads = -1"),
            "mailtap.toml:1: key 'threads': expected an integer from 0 (one per core) to 256, got -1");
  EXPECT_EQ(error_of("busy_poll_us = 100001"),
            "mailtap.toml:1: key 'busy_poll_us': expected an integer from 0 (never) to 100000, got 100001");
  constexpr std::string_view seconds = "expected a number of seconds > 0 or a duration string like \"5m\"";
  EXPECT_EQ(error_of("[timeouts]\ndrain = 0"), "mailtap.toml:2: key 'timeouts.drain': " + std::string(seconds) + ", got 0");
  EXPECT_EQ(error_of("[timeouts]\nupstream_reply = -2.5"),
            "mailtap.toml:2: key 'timeouts.upstream_reply': " + std::string(seconds) + ", got -2.5");
  EXPECT_EQ(error_of("timeouts.client_idle = nan"),
            "mailtap.toml:1: key 'timeouts.client_idle': " + std::string(seconds) + ", got nan");
  EXPECT_NE(error_of("timeouts.client_idle = inf").find("key 'timeouts.client_idle': expected at most"),
            std::string::npos);
  EXPECT_NE(error_of("timeouts.client_idle = 0.0001").find("key 'timeouts.client_idle': expected at least"),
            std::string::npos);
  EXPECT_NE(error_of("timeouts.upstream_data_end = 9223372036854775807")
                .find("key 'timeouts.upstream_data_end': expected at most"),
            std::string::npos);
}

// Item 20: timeouts take the duration strings scenario files take; seconds still work.
TEST(ConfigLoad, TimeoutsTakeDurationStringsAndSeconds) {
  std::string error;
  auto c = load_config_text("[timeouts]\nclient_idle = \"5m\"\nupstream_connect = \"250ms\"\ndrain = \"1h\"\n"
                            "upstream_reply = 30\nupstream_data_end = 1.5\n[tls]\nhandshake_timeout = \"10s\"\n",
                            "mailtap.toml", config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->timeouts.client_idle, 300'000ms);
  EXPECT_EQ(c->upstream_connect_timeout, 250ms);
  EXPECT_EQ(c->drain_timeout, 3'600'000ms);
  EXPECT_EQ(c->timeouts.upstream_reply, 30'000ms);
  EXPECT_EQ(c->timeouts.upstream_data_end, 1'500ms);
  EXPECT_EQ(c->tls.handshake_timeout, 10'000ms);
}

// `captures` is a directory, or a [captures] table with the directory and the barrier's fsync.
TEST(ConfigLoad, CapturesTableTakesDirAndFsync) {
  temp_dir dir;
  const fs::path file = dir.write("mailtap.toml", "[captures]\ndir = 'caps'\nfsync = true\n");
  std::string error;
  auto c = load_config_file(file, config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->captures_dir, dir.path() / "caps");
  EXPECT_TRUE(c->captures_fsync);
  auto d = load_config_text("captures = '/srv/caps'\n", "m.toml", config{}, error);
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(d->captures_dir, fs::path("/srv/caps"));
  EXPECT_FALSE(d->captures_fsync);
  EXPECT_EQ(error_of("[captures]\nfsync = 'yes'\n"), "mailtap.toml:2: key 'captures.fsync': expected true or false, got string");
  EXPECT_EQ(error_of("[captures]\n\nfsinc = true\n"), "mailtap.toml:3: key 'captures.fsinc': unknown key");
  EXPECT_EQ(error_of("[captures]\ndir = ''\n"),
            "mailtap.toml:2: key 'captures.dir': expected a directory path, got an empty string");
}

// Retention: [captures] max_age and max_bytes, and the flags' parsers (issue 13 item 5).
TEST(ConfigLoad, CapturesRetentionLimits) {
  std::string error;
  auto c = load_config_text("[captures]\nmax_age = \"168h\"\nmax_bytes = \"10GiB\"\n", "m.toml", config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->captures_max_age, std::chrono::seconds(168 * 3600));
  EXPECT_EQ(c->captures_max_bytes, 10ull << 30);
  auto d = load_config_text("captures.max_bytes = 1048576\n", "m.toml", config{}, error);
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(d->captures_max_bytes, 1048576u);
  EXPECT_FALSE(d->captures_max_age);
  EXPECT_EQ(error_of("[captures]\nmax_bytes = 0\n").rfind("mailtap.toml:2: key 'captures.max_bytes': expected a size in bytes from 1", 0),
            0u);
  EXPECT_EQ(error_of("[captures]\nmax_age = \"0s\"\n"), "mailtap.toml:2: key 'captures.max_age': expected at least 1ms, got '0s'");
  std::string problem;
  EXPECT_EQ(mailtap::parse_captures_max_age("30m", problem), std::chrono::seconds(1800));
  EXPECT_EQ(mailtap::parse_captures_max_age("3600", problem), std::chrono::seconds(3600));   // seconds, as in the file
  EXPECT_FALSE(mailtap::parse_captures_max_age("0", problem));
  EXPECT_FALSE(mailtap::parse_captures_max_age("0h", problem));
  EXPECT_FALSE(mailtap::parse_captures_max_age("7 days", problem));
  EXPECT_EQ(mailtap::parse_captures_max_bytes("500MB", problem), 500'000'000u);
  EXPECT_FALSE(mailtap::parse_captures_max_bytes("0", problem));
  EXPECT_FALSE(mailtap::parse_captures_max_bytes("lots", problem));
  EXPECT_EQ(problem.find('\n'), std::string::npos);
}

TEST(ConfigErrors, BadDurationStrings) {
  const std::string expected = "expected a number of seconds or a duration like \"250ms\", \"5s\", \"5m\", \"1h\" or \"7d\"";
  EXPECT_EQ(error_of("[timeouts]\n\nclient_idle = \"5 m\""),
            "mailtap.toml:3: key 'timeouts.client_idle': " + expected + ", got '5 m'");
  EXPECT_EQ(error_of("timeouts.drain = \"1.5s\""), "mailtap.toml:1: key 'timeouts.drain': " + expected + ", got '1.5s'");
  EXPECT_EQ(error_of("timeouts.drain = \"-5s\""), "mailtap.toml:1: key 'timeouts.drain': " + expected + ", got '-5s'");
  EXPECT_EQ(error_of("timeouts.drain = \"0s\""), "mailtap.toml:1: key 'timeouts.drain': expected at least 1ms, got '0s'");
  EXPECT_EQ(error_of("timeouts.drain = \"9000h\""),
            "mailtap.toml:1: key 'timeouts.drain': duration is longer than one year, got '9000h'");
  EXPECT_EQ(error_of("tls.handshake_timeout = \"\""),
            "mailtap.toml:1: key 'tls.handshake_timeout': " + expected + ", got ''");
}

TEST(ConfigErrors, BadEndpoint) {
  EXPECT_EQ(error_of("seed = 1\nlisten = \"127.0.0.1\"\n"),
            "mailtap.toml:2: key 'listen': missing port in '127.0.0.1' (expected HOST:PORT or [V6]:PORT)");
  const std::string e = error_of("\n\n\nadmin = \"[::1]:70000\"");
  EXPECT_EQ(e.rfind("mailtap.toml:4: key 'admin': port greater than 65535", 0), 0u) << e;
  const std::string u = error_of("upstream = \"mx:smtp\"");
  EXPECT_EQ(u.rfind("mailtap.toml:1: key 'upstream': port is not a number", 0), 0u) << u;
  const std::string h = error_of("upstream = \":25\"");
  EXPECT_EQ(h.rfind("mailtap.toml:1: key 'upstream': empty host", 0), 0u) << h;
  const std::string z = error_of("upstream = \"mx:0\"");
  EXPECT_EQ(z.rfind("mailtap.toml:1: key 'upstream': port 0", 0), 0u) << z;
}

TEST(ConfigErrors, BadEnum) {
  EXPECT_EQ(error_of("[data]\nbare_line_endings = \"lenient\""),
            "mailtap.toml:2: key 'data.bare_line_endings': expected one of strict|normalize|raw, got 'lenient'");
  EXPECT_EQ(error_of("log_level = \"verbose\""),
            "mailtap.toml:1: key 'log_level': expected one of trace|debug|info|warn|error|off, got 'verbose'");
  EXPECT_EQ(error_of("log_level = \"INFO\""),
            "mailtap.toml:1: key 'log_level': expected one of trace|debug|info|warn|error|off, got 'INFO'");
}

TEST(ConfigErrors, BadRelayName) {
  for (const char* bad : {R"("")", R"("two words")", R"("tab\there")", R"("caf\u00e9")", R"("nl\nx")"}) {
    const std::string e = error_of(std::string("relay_name = ") + bad);
    EXPECT_EQ(e.rfind("mailtap.toml:1: key 'relay_name': expected a non-empty name", 0), 0u) << e;
  }
  EXPECT_NE(error_of("relay_name = '" + std::string(256, 'a') + "'").find("key 'relay_name'"),
            std::string::npos);
}

TEST(ConfigErrors, EmptyCapturesPath) {
  EXPECT_EQ(error_of("captures = ''"),
            "mailtap.toml:1: key 'captures': expected a directory path, got an empty string");
}

TEST(ConfigErrors, MissingScenarioFile) {
  temp_dir dir;
  dir.write("present.toml", scenario_text("s3"));
  fs::create_directories(dir.path() / "adir");
  const fs::path file = dir.write("mailtap.toml", "seed = 1\nscenarios = [\n  \"present.toml\",\n  \"absent.toml\",\n]\n");
  std::string error;
  EXPECT_FALSE(load_config_file(file, config{}, error));
  EXPECT_EQ(error, file.string() + ":4: key 'scenarios[1]': scenario file not found: " +
                       (dir.path() / "absent.toml").string());

  const fs::path file2 = dir.write("m2.toml", "scenarios = ['adir']\n");
  EXPECT_FALSE(load_config_file(file2, config{}, error));
  EXPECT_NE(error.find(":1: key 'scenarios[0]': scenario path is a directory"), std::string::npos) << error;

  const fs::path file3 = dir.write("m3.toml", "scenarios = ['present.toml', 7]\n");
  EXPECT_FALSE(load_config_file(file3, config{}, error));
  EXPECT_NE(error.find(":1: key 'scenarios[1]': expected a string"), std::string::npos) << error;
}

TEST(ConfigErrors, FirstErrorInFileOrderIsReported) {
  // Keys are visited in name order ("admin" before "threads"); the report follows the file.
  EXPECT_EQ(error_of("threads = 999\nadmin = 5\n"),
            "mailtap.toml:1: key 'threads': expected an integer from 0 (one per core) to 256, got 999");
  EXPECT_EQ(error_of("[timeouts]\nupstream_reply = 0\nclient_idle = 'x'\n"),
            "mailtap.toml:2: key 'timeouts.upstream_reply': expected a number of seconds > 0 or a duration string "
            "like \"5m\", got 0");
}

// Item 18: --log-level and log_level check against the same list.
TEST(ConfigLoad, LogLevelsAreOneList) {
  for (auto level : {"trace", "debug", "info", "warn", "error", "off"}) EXPECT_TRUE(mailtap::is_log_level(level));
  for (auto level : {"verbose", "", "INFO", "warning", "critical"}) EXPECT_FALSE(mailtap::is_log_level(level));
  EXPECT_EQ(error_of("log_level = 'verbose'"),
            "mailtap.toml:1: key 'log_level': expected one of trace|debug|info|warn|error|off, got 'verbose'");
}

TEST(ConfigErrors, AFailedLoadLeavesNoPartialConfig) {
  config base;
  base.seed = 3;
  std::string error;
  auto c = load_config_text("seed = 5\nthreads = -4\n", "m.toml", base, error);
  EXPECT_FALSE(c);
  EXPECT_EQ(base.seed, 3u);
}

TEST(ConfigErrors, KeysAndValuesAreEchoedOnOneLine) {
  const std::string e = error_of("\"evil\\nkey\" = 1\n");
  EXPECT_EQ(e, "mailtap.toml:1: key 'evil\\nkey': unknown key");
  const std::string v = error_of("log_level = \"a\\r\\nb\"");
  EXPECT_EQ(v, "mailtap.toml:1: key 'log_level': expected one of trace|debug|info|warn|error|off, got 'a\\r\\nb'");
}

// ---- paths ---------------------------------------------------------------------------------

TEST(ConfigPaths, RelativePathsResolveAgainstTheFilesDirectory) {
  temp_dir dir;
  dir.write("etc/policies/s1.toml", scenario_text("s4"));
  const fs::path file = dir.write("etc/mailtap.toml",
                                  "captures = \"../var/captures\"\nscenarios = [\"./policies/s1.toml\"]\n");
  std::string error;
  auto c = load_config_file(file, config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->captures_dir, dir.path() / "var/captures");
  ASSERT_EQ(c->scenarios.size(), 1u);
  EXPECT_EQ(c->scenarios[0], dir.path() / "etc/policies/s1.toml");
  EXPECT_TRUE(c->captures_dir.is_absolute());
}

TEST(ConfigPaths, RelativeConfigFileNameStillResolvesAbsolutely) {
  temp_dir dir;
  dir.write("conf/s.toml", scenario_text("s5"));
  dir.write("conf/mailtap.toml", "captures = 'cap'\nscenarios = ['s.toml']\n");
  const fs::path old = fs::current_path();
  fs::current_path(dir.path());
  std::string error;
  auto c = load_config_file("conf/mailtap.toml", config{}, error);
  fs::current_path(old);
  ASSERT_TRUE(c) << error;
  const fs::path real = fs::canonical(dir.path());   // getcwd() resolves symlinks
  EXPECT_EQ(c->captures_dir, real / "conf/cap");
  ASSERT_EQ(c->scenarios.size(), 1u);
  EXPECT_EQ(c->scenarios[0], real / "conf/s.toml");
}

TEST(ConfigPaths, AbsolutePathsAreKept) {
  temp_dir dir;
  const fs::path scenario = dir.write("x/s.toml", scenario_text("s6"));
  const fs::path file = dir.write("m.toml", "captures = '/tmp/mailtap-caps'\nscenarios = ['" +
                                                scenario.string() + "']\n");
  std::string error;
  auto c = load_config_file(file, config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->captures_dir, fs::path("/tmp/mailtap-caps"));
  ASSERT_EQ(c->scenarios.size(), 1u);
  EXPECT_EQ(c->scenarios[0], scenario);
}

TEST(ConfigPaths, TextSourceNameStandsInForTheFile) {
  temp_dir dir;
  dir.write("s.toml", scenario_text("s7"));
  std::string error;
  auto c = load_config_text("scenarios = ['s.toml']", (dir.path() / "virtual.toml").string(), config{}, error);
  ASSERT_TRUE(c) << error;
  ASSERT_EQ(c->scenarios.size(), 1u);
  EXPECT_EQ(c->scenarios[0], dir.path() / "s.toml");
}

// ---- files ---------------------------------------------------------------------------------

TEST(ConfigFile, MissingFile) {
  temp_dir dir;
  const fs::path file = dir.path() / "nope.toml";
  std::string error;
  EXPECT_FALSE(load_config_file(file, config{}, error));
  EXPECT_EQ(error, file.string() + ": cannot read: No such file or directory");
}

TEST(ConfigFile, DirectoryIsUnreadable) {
  temp_dir dir;
  std::string error;
  EXPECT_FALSE(load_config_file(dir.path(), config{}, error));
  EXPECT_EQ(error.rfind(dir.path().string() + ": cannot read: ", 0), 0u) << error;
}

TEST(ConfigFile, ErrorsNameTheFileAsGiven) {
  temp_dir dir;
  const fs::path file = dir.write("bad.toml", "\nthreads = 'many'\n");
  std::string error;
  EXPECT_FALSE(load_config_file(file, config{}, error));
  EXPECT_EQ(error, file.string() + ":2: key 'threads': expected an integer from 0 (one per core) to 256, got string");
}

TEST(ConfigFile, SyntaxErrorInAFile) {
  temp_dir dir;
  const fs::path file = dir.write("bad.toml", "seed = 1\n[timeouts\n");
  std::string error;
  EXPECT_FALSE(load_config_file(file, config{}, error));
  EXPECT_EQ(error.rfind(file.string() + ":2: ", 0), 0u) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos);
}

TEST(ConfigFile, ShippedExampleLoadsAtDefaults) {
  const fs::path example = fs::path(MAILTAP_SOURCE_DIR) / "relay" / "mailtap.example.toml";
  std::string error;
  auto c = load_config_file(example, config{}, error);
  ASSERT_TRUE(c) << error;
  const config d;
  EXPECT_TRUE(same(c->listen, d.listen));
  EXPECT_FALSE(c->upstream.has_value());
  EXPECT_TRUE(same(c->admin, d.admin));
  EXPECT_EQ(c->captures_dir, d.captures_dir);
  EXPECT_TRUE(c->scenarios.empty());
  EXPECT_EQ(c->seed, d.seed);
  EXPECT_EQ(c->max_sessions, d.max_sessions);
  EXPECT_EQ(c->threads, d.threads);
  EXPECT_EQ(c->busy_poll, d.busy_poll);
  EXPECT_EQ(c->bare_eol, d.bare_eol);
  EXPECT_EQ(c->timeouts.client_idle, d.timeouts.client_idle);
  EXPECT_EQ(c->timeouts.upstream_greeting, d.timeouts.upstream_greeting);
  EXPECT_EQ(c->timeouts.upstream_reply, d.timeouts.upstream_reply);
  EXPECT_EQ(c->timeouts.upstream_data_init, d.timeouts.upstream_data_init);
  EXPECT_EQ(c->timeouts.upstream_data_end, d.timeouts.upstream_data_end);
  EXPECT_EQ(c->upstream_connect_timeout, d.upstream_connect_timeout);
  EXPECT_EQ(c->drain_timeout, d.drain_timeout);
  EXPECT_EQ(c->relay_name, d.relay_name);
  EXPECT_EQ(c->log_level, d.log_level);
  EXPECT_EQ(c->identity, d.identity);
  EXPECT_EQ(c->listen_proxy_protocol, d.listen_proxy_protocol);
}

TEST(ConfigFile, ShippedExampleMentionsEveryKey) {
  std::ifstream in(fs::path(MAILTAP_SOURCE_DIR) / "relay" / "mailtap.example.toml");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const char* key : {"listen =", "upstream =", "admin =", "captures =", "scenarios =", "seed =",
                          "max_sessions =", "threads =", "busy_poll_us =", "relay_name =", "log_level =", "[data]",
                          "bare_line_endings =", "[timeouts]", "client_idle =", "upstream_connect =",
                          "upstream_greeting =", "upstream_reply =", "upstream_data_init =",
                          "upstream_data_end =", "upstream_data_block =", "drain =", "upstream_identity =", "listen_proxy_protocol =",
                          "fsync =", "max_age =", "max_bytes =", "admin_token_file =", "admin_token", "admin_hosts ="})
    EXPECT_NE(text.find(key), std::string::npos) << key;
}

// ---- default_captures_dir ------------------------------------------------------------------

class env_guard {
 public:
  explicit env_guard(const char* name) : name_(name) {
    if (const char* v = std::getenv(name)) saved_ = v;
  }
  ~env_guard() {
    if (saved_) ::setenv(name_, saved_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> saved_;
};

TEST(DefaultCapturesDir, FollowsTheDocumentedOrder) {
  env_guard g1("MAILTAP_CAPTURES"), g2("XDG_STATE_HOME"), g3("HOME");
  ::setenv("MAILTAP_CAPTURES", "/data/caps", 1);
  ::setenv("XDG_STATE_HOME", "/state", 1);
  ::setenv("HOME", "/home/u", 1);
  EXPECT_EQ(mailtap::default_captures_dir(), fs::path("/data/caps"));
  ::unsetenv("MAILTAP_CAPTURES");
  EXPECT_EQ(mailtap::default_captures_dir(), fs::path("/state/mailtap/captures"));
  ::setenv("XDG_STATE_HOME", "relative", 1);   // invalid per the XDG spec: ignored
  EXPECT_EQ(mailtap::default_captures_dir(), fs::path("/home/u/.local/state/mailtap/captures"));
  ::unsetenv("XDG_STATE_HOME");
  EXPECT_EQ(mailtap::default_captures_dir(), fs::path("/home/u/.local/state/mailtap/captures"));
  ::setenv("MAILTAP_CAPTURES", "", 1);   // empty counts as unset
  EXPECT_EQ(mailtap::default_captures_dir(), fs::path("/home/u/.local/state/mailtap/captures"));
}

// With $HOME unset (a service manager's or cron's environment) both defaults take the home
// from the password database (relay/config.cpp user_home); the state dir used to fall back to
// ./mailtap-state while the captures went home (newcomer trial of the README).
TEST(DefaultStateDir, FollowsTheCapturesDirsOrderWithHomeUnset) {
  env_guard g1("MAILTAP_CAPTURES"), g2("XDG_STATE_HOME"), g3("HOME");
  ::unsetenv("MAILTAP_CAPTURES");
  ::setenv("XDG_STATE_HOME", "/state", 1);
  ::setenv("HOME", "/home/u", 1);
  EXPECT_EQ(mailtap::default_state_dir(), fs::path("/state/mailtap"));
  ::setenv("XDG_STATE_HOME", "relative", 1);   // invalid per the XDG spec: ignored
  EXPECT_EQ(mailtap::default_state_dir(), fs::path("/home/u/.local/state/mailtap"));
  ::unsetenv("XDG_STATE_HOME");
  EXPECT_EQ(mailtap::default_state_dir(), fs::path("/home/u/.local/state/mailtap"));

  // A user the password database gives no home falls back to the working directory, both alike.
  const passwd* pw = ::getpwuid(::getuid());
  const bool has_home = pw != nullptr && pw->pw_dir != nullptr && *pw->pw_dir != '\0';
  const fs::path state = has_home ? fs::path(pw->pw_dir) / ".local" / "state" / "mailtap" : fs::path(".") / "mailtap-state";
  const fs::path caps = has_home ? state / "captures" : fs::path(".") / "mailtap-captures";
  for (const char* unset_home : {"unset", ""}) {
    if (*unset_home) ::unsetenv("HOME");
    else ::setenv("HOME", "", 1);   // empty counts as unset
    EXPECT_EQ(mailtap::default_state_dir(), state) << unset_home;
    EXPECT_EQ(mailtap::default_captures_dir(), caps) << unset_home;
  }
}

}  // namespace

// ---- faults ------------------------------------------------------------------------------

TEST(ConfigFaults, InlineFaultTablesAreRules) {
  std::string error;
  auto c = load_config_text("seed = 3\n[[fault]]\nname = \"full\"\ntype = \"reply\"\nphase = \"rcpt\"\n"
                            "code = 552\nenhanced = \"5.2.2\"\n",
                            "mailtap.toml", config{}, error);
  ASSERT_TRUE(c) << error;
  ASSERT_EQ(c->faults.size(), 1u);
  EXPECT_EQ(c->faults[0].name, "full");
  EXPECT_EQ(c->faults[0].type(), "reply");
}

TEST(ConfigFaults, AnErrorInAScenarioFileNamesThatFileAndLine) {
  temp_dir dir;
  const fs::path bad = dir.write("bad.toml", "# bad\n[[fault]]\nname = \"x\"\ntype = \"reply\"\nphase = \"rcpt\"\n"
                                             "code = 552\ncolour = \"red\"\n");
  const fs::path file = dir.write("mailtap.toml", "scenarios = ['bad.toml']\n");
  std::string error;
  EXPECT_FALSE(load_config_file(file, config{}, error));
  EXPECT_NE(error.find("bad.toml:7: key 'colour'"), std::string::npos) << error;
}

TEST(ConfigFaults, ARuleNamedTwiceAcrossTheFileAndAScenarioNamesBothPlaces) {
  temp_dir dir;
  dir.write("s.toml", scenario_text("same"));
  const fs::path file = dir.write("mailtap.toml", "scenarios = ['s.toml']\n\n[[fault]]\nname = \"same\"\n"
                                                  "type = \"reset\"\nphase = \"mail\"\n");
  std::string error;
  EXPECT_FALSE(load_config_file(file, config{}, error));
  EXPECT_EQ(error, (dir.path() / "s.toml").string() + ":3: key 'name': duplicate rule name 'same' (first at " +
                       file.string() + ":4)");
}

// The file's own keys and its [[fault]] tables share one report: the first problem by line.
TEST(ConfigFaults, TheFirstProblemByLineWinsAcrossKeysAndFaultTables) {
  EXPECT_EQ(error_of("[[fault]]\nname = 'a'\ntype = 'reset'\nphase = 'mail'\ncolour = 1\n"),
            "mailtap.toml:5: key 'colour': unknown key");
  EXPECT_EQ(error_of("threads = -1\n[[fault]]\nname = 'a'\ntype = 'reset'\nphase = 'mail'\ncolour = 1\n"),
            "mailtap.toml:1: key 'threads': expected an integer from 0 (one per core) to 256, got -1");
  EXPECT_EQ(error_of("[[fault]]\nname = 'a'\ntype = 'reset'\ncolour = 1\n[sink]\nauth_user = 5\n"),
            "mailtap.toml:4: key 'colour': unknown key");
}

TEST(ConfigFaults, AScenarioFileWithoutFaultsIsAnError) {
  temp_dir dir;
  dir.write("empty.toml", "# nothing\n");
  const fs::path file = dir.write("mailtap.toml", "scenarios = ['empty.toml']\n");
  std::string error;
  EXPECT_FALSE(load_config_file(file, config{}, error));
  EXPECT_NE(error.find("empty.toml: no [[fault]] tables"), std::string::npos) << error;
}

TEST(ConfigTimeouts, SlowSenderLimits) {
  std::string error;
  auto defaults = load_config_text("# nothing\n", "m.toml", config{}, error);
  ASSERT_TRUE(defaults) << error;
  EXPECT_EQ(defaults->timeouts.client_command, 300s);
  EXPECT_EQ(defaults->timeouts.min_data_rate, 500u);
  auto c = load_config_text("[timeouts]\nclient_command = 2\nmin_data_rate = 0\n", "m.toml", config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->timeouts.client_command, 2s);
  EXPECT_EQ(c->timeouts.min_data_rate, 0u);
  EXPECT_EQ(error_of("[timeouts]\nmin_data_rate = -1\n"),
            "mailtap.toml:2: key 'timeouts.min_data_rate': expected an integer number of bytes per second from 0 to "
            "1000000000, got -1");
  EXPECT_EQ(error_of("[timeouts]\nmin_data_rate = 1.5\n"),
            "mailtap.toml:2: key 'timeouts.min_data_rate': expected an integer number of bytes per second from 0 to "
            "1000000000, got float");
}

// ---- [tls] verify_upstream and upstream_fingerprint (issue 13) -----------------------------

TEST(ConfigTlsVerification, DefaultRecordsAndRequiredRequires) {
  std::string error;
  auto d = load_config_text("# nothing\n", "m.toml", config{}, error);
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(mailtap::effective_upstream_verify(d->tls), mailtap::upstream_verify::record);
  EXPECT_FALSE(mailtap::upstream_verification_required(d->tls));
  auto r = load_config_text("[tls]\nupstream = \"required\"\n", "m.toml", config{}, error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(mailtap::effective_upstream_verify(r->tls), mailtap::upstream_verify::require);
  auto rr = load_config_text("[tls]\nupstream = \"required\"\nverify_upstream = \"record\"\n", "m.toml", config{}, error);
  ASSERT_TRUE(rr) << error;
  EXPECT_EQ(mailtap::effective_upstream_verify(rr->tls), mailtap::upstream_verify::record);
}

TEST(ConfigTlsVerification, InsecureUpstreamIsTheOldSpellingOfNone) {
  std::string error;
  auto c = load_config_text("[tls]\ninsecure_upstream = true\n", "m.toml", config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(mailtap::effective_upstream_verify(c->tls), mailtap::upstream_verify::none);
  auto both = load_config_text("[tls]\ninsecure_upstream = true\nverify_upstream = \"none\"\n", "m.toml", config{}, error);
  ASSERT_TRUE(both) << error;
  EXPECT_EQ(error_of("[tls]\ninsecure_upstream = true\nverify_upstream = \"require\"\n"),
            "mailtap.toml:3: key 'tls.verify_upstream': contradicts insecure_upstream = true (insecure_upstream = "
            "true is the old spelling of verify_upstream = \"none\")");
  EXPECT_EQ(error_of("[tls]\nverify_upstream = \"may\"\n"),
            "mailtap.toml:2: key 'tls.verify_upstream': expected one of none|record|require, got 'may'");
}

TEST(ConfigTlsVerification, FingerprintsAreNormalizedAndChecked) {
  const std::string hex = "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef";
  std::string colons;
  for (std::size_t i = 0; i < hex.size(); i += 2) colons += (i ? ":" : "") + hex.substr(i, 2);
  std::string expected;
  for (char ch : colons) expected += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  std::string error;
  for (const std::string& text : {"sha256:" + hex, "SHA256:" + colons, hex}) {
    auto fp = mailtap::parse_sha256_fingerprint(text, error);
    ASSERT_TRUE(fp) << text << ": " << error;
    EXPECT_EQ(*fp, expected) << text;
  }
  EXPECT_FALSE(mailtap::parse_sha256_fingerprint("sha256:" + hex.substr(2), error));
  EXPECT_FALSE(mailtap::parse_sha256_fingerprint("sha256:" + hex + "00", error));
  EXPECT_FALSE(mailtap::parse_sha256_fingerprint("sha1:" + hex, error));
  // The count names what it counts: "got 4" read as four of something unsaid.
  EXPECT_EQ(error_of("[tls]\nupstream_fingerprint = \"sha256:AB:cd\"\n"),
            "mailtap.toml:2: key 'tls.upstream_fingerprint': expected a SHA-256 fingerprint (64 hex digits), "
            "got 4 hex digits");
  auto c = load_config_text("[tls]\nupstream_fingerprint = \"sha256:" + hex + "\"\n", "m.toml", config{}, error);
  ASSERT_TRUE(c) << error;
  EXPECT_EQ(c->tls.upstream_fingerprint, expected);
  EXPECT_TRUE(mailtap::upstream_verification_required(c->tls));
  EXPECT_EQ(error_of("[tls]\nverify_upstream = \"none\"\nupstream_fingerprint = \"sha256:" + hex + "\"\n"),
            "mailtap.toml:2: key 'tls.upstream_fingerprint': a pinned fingerprint is a verification: it cannot go "
            "with verify_upstream = \"none\"");
}

// ---- client identity (issue 13) ---------------------------------------------------------------

TEST(ConfigClientIdentity, UpstreamIdentityAndListenProxyProtocol) {
  std::string error;
  auto d = load_config_text("# nothing\n", "m.toml", config{}, error);
  ASSERT_TRUE(d) << error;
  EXPECT_EQ(d->identity, mailtap::upstream_identity::none);
  EXPECT_FALSE(d->listen_proxy_protocol);
  for (auto [text, mode] : {std::pair{"proxy_v1", mailtap::upstream_identity::proxy_v1},
                            std::pair{"proxy_v2", mailtap::upstream_identity::proxy_v2},
                            std::pair{"xclient", mailtap::upstream_identity::xclient},
                            std::pair{"none", mailtap::upstream_identity::none}}) {
    auto c = load_config_text("upstream_identity = \"" + std::string(text) + "\"\nlisten_proxy_protocol = true\n",
                              "m.toml", config{}, error);
    ASSERT_TRUE(c) << error;
    EXPECT_EQ(c->identity, mode) << text;
    EXPECT_TRUE(c->listen_proxy_protocol);
  }
  EXPECT_FALSE(load_config_text("\nupstream_identity = \"haproxy\"\n", "m.toml", config{}, error));
  EXPECT_EQ(error, "m.toml:2: key 'upstream_identity': expected one of none|proxy_v1|proxy_v2|xclient, got 'haproxy'");
  EXPECT_FALSE(load_config_text("listen_proxy_protocol = \"yes\"\n", "m.toml", config{}, error));
  EXPECT_NE(error.find("m.toml:1: key 'listen_proxy_protocol': expected"), std::string::npos) << error;
}

namespace {

TEST(ConfigLoad, TransparentInterceptionIsOffUnlessAsked) {
  std::string error;
  auto off = load_config_text("", "mailtap.toml", config{}, error);
  ASSERT_TRUE(off.has_value()) << error;
  EXPECT_FALSE(off->transparent);
  auto on = load_config_text("transparent = true\n", "mailtap.toml", config{}, error);
  ASSERT_TRUE(on.has_value()) << error;
  EXPECT_TRUE(on->transparent);
  EXPECT_NE(error_of("transparent = \"yes\"\n").find("mailtap.toml:1"), std::string::npos);
}

}  // namespace
