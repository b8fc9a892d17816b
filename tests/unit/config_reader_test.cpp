// config_reader/: durations and byte sizes, the typed getters and their messages, unknown
// keys, section prefixes, the first problem in file order across tables, documents and files.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "config_reader/document.hpp"
#include "config_reader/duration.hpp"
#include "config_reader/table_reader.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using mailtap::config_reader::format_duration;
using mailtap::config_reader::parse_byte_size;
using mailtap::config_reader::parse_duration;
using mailtap::config_reader::problem_log;
using mailtap::config_reader::read_file;
using mailtap::config_reader::table_reader;

constexpr std::uint64_t second_us = 1'000'000;

TEST(Duration, Units) {
  std::string problem;
  EXPECT_EQ(parse_duration("250ms", problem), 250'000u);
  EXPECT_EQ(parse_duration("5s", problem), 5 * second_us);
  EXPECT_EQ(parse_duration("2m", problem), 120 * second_us);
  EXPECT_EQ(parse_duration("1h", problem), 3600 * second_us);
  EXPECT_EQ(parse_duration("0s", problem), 0u);
  // Days, for retention (a newcomer's trial: `captures prune --max-age 7d` was refused).
  EXPECT_EQ(parse_duration("7d", problem), 7 * 24 * 3600 * second_us);
  EXPECT_EQ(parse_duration("365d", problem), 365 * 24 * 3600 * second_us);
  for (const char* bad : {"", "5", "s", "1.5s", "-1s", "5 s", "5sec", "1w", "1D", "366d", "9000h", "99999999999999999999ms"}) {
    EXPECT_FALSE(parse_duration(bad, problem)) << bad;
    EXPECT_FALSE(problem.empty());
  }
  // Found by fuzz_scenario (tests/fuzz/): the bad string was echoed raw, so an error was several lines.
  EXPECT_FALSE(parse_duration("many\n\r\nlines", problem));
  EXPECT_EQ(problem.find_first_of("\r\n"), std::string::npos) << problem;
  EXPECT_EQ(format_duration(250'000), "250ms");
  EXPECT_EQ(format_duration(300 * second_us), "5m");
}

TEST(ByteSize, Units) {
  std::string problem;
  EXPECT_EQ(parse_byte_size("0", problem), 0u);
  EXPECT_EQ(parse_byte_size("512", problem), 512u);
  EXPECT_EQ(parse_byte_size("512B", problem), 512u);
  EXPECT_EQ(parse_byte_size("64KiB", problem), 64u * 1024);
  EXPECT_EQ(parse_byte_size("10MB", problem), 10'000'000u);
  EXPECT_EQ(parse_byte_size("2GiB", problem), 2ull << 30);
  EXPECT_EQ(parse_byte_size("3TB", problem), 3'000'000'000'000u);
  for (const char* bad : {"", "MB", "1.5GB", "-1", "10 MB", "10mb", "1PB", "99999999999999999999", "9000000TiB"}) {
    EXPECT_FALSE(parse_byte_size(bad, problem)) << bad;
    EXPECT_FALSE(problem.empty()) << bad;
    EXPECT_EQ(problem.find('\n'), std::string::npos);
  }
}

// Reads `text` with one reader per document; `visit` sees the focused key.
template <typename Visit>
std::string first_problem(const std::string& text, Visit visit) {
  const toml::table doc = ::toml::parse(text, std::string_view("c.toml"));
  problem_log log("c.toml");
  table_reader r(log, doc);
  r.each([&](std::string_view key) { return visit(r, key); });
  return log.first();
}

// A hostile trial: what config_reader echoes (a value, a key, a file name) and every problem
// its log keeps are safe on a terminal: C0 and C1 controls, bidirectional controls (U+202E
// reversed the rest of the line), U+2028 and bytes that are not UTF-8 escaped as \xNN
// (protocol/terminal_text.hpp); before, only C0 controls were.
TEST(TableReader, EchoedTextAndProblemsAreSafeOnATerminal) {
  using mailtap::config_reader::echo;
  using mailtap::config_reader::echo_path;
  EXPECT_EQ(echo("5\xe2\x80\xaes\x1b\xc2\x9b\xe2\x80\xa8\xff"), "5\\xe2\\x80\\xaes\\x1b\\xc2\\x9b\\xe2\\x80\\xa8\\xff");
  EXPECT_EQ(echo_path("/tmp/a\xe2\x81\xa6" "b.toml"), "/tmp/a\\xe2\\x81\\xa6b.toml");
  EXPECT_EQ(echo("caf\xc3\xa9 \xe2\x80\x93"), "caf\xc3\xa9 \xe2\x80\x93");   // no control: as it is
  problem_log log("f.toml");
  log.at_line(3, "f.toml:3: key 'x': a fault type's own text quoting '\xe2\x80\xae'");
  EXPECT_EQ(log.first(), "f.toml:3: key 'x': a fault type's own text quoting '\\xe2\\x80\\xae'");
}

TEST(TableReader, UnknownKeysAreReportedAtTheirLine) {
  EXPECT_EQ(first_problem("a = 1\n\nb = 2\n", [](table_reader&, std::string_view k) { return k == "a"; }),
            "c.toml:3: key 'b': unknown key");
}

TEST(TableReader, TheFirstProblemInFileOrderWinsWhateverTheKeyOrder) {
  // toml::table visits "a" before "z"; the report follows the file.
  EXPECT_EQ(first_problem("z = 'x'\na = 'y'\n", [](table_reader& r, std::string_view) { return !r.integer(0, 9); }),
            "c.toml:1: key 'z': expected an integer from 0 to 9, got string");
}

TEST(TableReader, SectionsPrefixTheirKeys) {
  EXPECT_EQ(first_problem("[t]\nok = true\nbad = 3\n",
                          [](table_reader& r, std::string_view) {
                            auto sub = r.section();
                            if (sub) sub->each([&](std::string_view k) { return k == "ok"; });
                            return true;
                          }),
            "c.toml:3: key 't.bad': unknown key");
  EXPECT_EQ(first_problem("t = 5\n", [](table_reader& r, std::string_view) { return r.section().has_value() || true; }),
            "c.toml:1: key 't': expected a table, got integer");
}

TEST(TableReader, AFileThatMustExistIsARegularOne) {
  // A TLS certificate given as a named pipe read "file not found" (a hostile trial).
  const auto dir = fs::temp_directory_path() / ("mailtap-table-file-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  ASSERT_EQ(::mkfifo((dir / "cert.pem").c_str(), 0600), 0);
  const auto problem_with = [&](const std::string& name) {
    return first_problem("k = '" + name + "'", [&](table_reader& r, std::string_view) {
      r.file(dir, true);
      return true;
    });
  };
  EXPECT_EQ(problem_with("cert.pem"), "c.toml:1: key 'k': not a regular file: " + (dir / "cert.pem").string());
  EXPECT_EQ(problem_with("absent.pem"), "c.toml:1: key 'k': file not found: " + (dir / "absent.pem").string());
  EXPECT_EQ(problem_with("."), "c.toml:1: key 'k': not a regular file: " + dir.string() + "/");   // a directory
  fs::remove_all(dir);
}

TEST(TableReader, TypedGettersAndTheirMessages) {
  const auto one = [](const std::string& text, auto read) {
    return first_problem(text, [&](table_reader& r, std::string_view) {
      read(r);
      return true;
    });
  };
  EXPECT_EQ(one("k = 1.5", [](table_reader& r) { r.integer(1, 5, "a count"); }),
            "c.toml:1: key 'k': expected a count, got float");
  EXPECT_EQ(one("k = 7", [](table_reader& r) { r.integer(1, 5); }),
            "c.toml:1: key 'k': expected an integer from 1 to 5, got 7");
  EXPECT_EQ(one("k = 'yes'", [](table_reader& r) { r.boolean(); }), "c.toml:1: key 'k': expected true or false, got string");
  EXPECT_EQ(one("k = 'b'", [](table_reader& r) { r.choice({"a", "c"}); }),
            "c.toml:1: key 'k': expected one of a|c, got 'b'");
  EXPECT_EQ(one("k = 5", [](table_reader& r) { r.duration(); }),
            "c.toml:1: key 'k': expected a duration string like \"250ms\", \"5s\", \"2m\", \"1h\" or \"7d\", got integer");
  EXPECT_EQ(one("k = '0s'", [](table_reader& r) { r.timeout(); }), "c.toml:1: key 'k': expected at least 1ms, got '0s'");
  EXPECT_EQ(one("k = -1", [](table_reader& r) { r.byte_size(0, 100); }),
            "c.toml:1: key 'k': expected a size in bytes from 0 to 100 (an integer, or a string like \"512KiB\", "
            "\"10MB\", \"2GiB\"), got -1");
  EXPECT_EQ(one("k = '1KiB'", [](table_reader& r) { r.byte_size(0, 100); }).rfind("c.toml:1: key 'k': expected a size", 0),
            0u);
  EXPECT_EQ(one("k = '1 KiB'", [](table_reader& r) { r.byte_size(0, 100); }),
            "c.toml:1: key 'k': expected a size like \"1048576\", \"512KiB\", \"10MB\" or \"2GiB\", got '1 KiB'");
  EXPECT_EQ(one("k = ['EHLO',\n 'ehlo']", [](table_reader& r) { r.words(8, 8); }),
            "c.toml:2: key 'k': 'ehlo' is listed twice");
  EXPECT_EQ(one("k = \"a\\nb\"", [](table_reader& r) { r.text(10); }),
            "c.toml:1: key 'k': only printable ASCII on one line is allowed, got 'a\\nb'");
}

TEST(TableReader, ValuesComeBackTyped) {
  const toml::table doc = ::toml::parse("i = 3\nb = true\nd = '2m'\nt = 1.5\ns = '10MB'\nn = 4096\nw = ['ehlo']\n", std::string_view("c.toml"));
  problem_log log("c.toml");
  table_reader r(log, doc);
  r.focus("i", *doc.get("i"));
  EXPECT_EQ(r.integer(0, 5), 3);
  r.focus("b", *doc.get("b"));
  EXPECT_EQ(r.boolean(), true);
  r.focus("d", *doc.get("d"));
  EXPECT_EQ(r.duration(), 120 * second_us);
  r.focus("t", *doc.get("t"));
  EXPECT_EQ(r.timeout(), 1500ms);
  r.focus("s", *doc.get("s"));
  EXPECT_EQ(r.byte_size(0, 1ull << 40), 10'000'000u);
  r.focus("n", *doc.get("n"));
  EXPECT_EQ(r.byte_size(0, 1ull << 40), 4096u);
  r.focus("w", *doc.get("w"));
  EXPECT_EQ(r.words(8, 8), std::vector<std::string>{"EHLO"});
  EXPECT_FALSE(log.failed()) << log.first();
}

TEST(ProblemLog, AMessageFromAnotherFileIsRankedAtItsReference) {
  problem_log log("c.toml");
  log.at_line(7, "other.toml:2: key 'x': bad");
  log.at_line(9, "c.toml:9: later");
  log.at_line(3, "c.toml:3: earlier");
  EXPECT_EQ(log.first(), "c.toml:3: earlier");
}

TEST(Document, ParseErrorsAreOneLineWithFileAndLine) {
  std::string error;
  EXPECT_TRUE(mailtap::config_reader::parse("a = 1\n", "c.toml", error));
  EXPECT_FALSE(mailtap::config_reader::parse("a = 1\n[b\n", "c.toml", error));
  EXPECT_EQ(error.rfind("c.toml:2: ", 0), 0u) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos);
}

// toml++ descends once per part of a dotted key or table header; 40,000 parts overflowed the
// stack (a segfault through the admin API's POST /api/v1/faults, a scenario file, a reload).
std::string dotted(std::size_t parts) {
  std::string key = "a";
  for (std::size_t i = 1; i < parts; ++i) key += ".a";
  return key;
}

TEST(Document, AKeyNestedTooDeepIsAOneLineErrorNotACrash) {
  std::string error;
  EXPECT_FALSE(mailtap::config_reader::parse("x = 1\n" + dotted(40000) + " = 1\n", "c.toml", error));
  EXPECT_EQ(error, "c.toml:2: more than 1000 dots outside strings in one line: a key or table nested that deep is refused");
  error.clear();
  EXPECT_FALSE(mailtap::config_reader::parse("[" + dotted(40000) + "]\n", "c.toml", error));
  EXPECT_EQ(error.rfind("c.toml:1: more than 1000 dots", 0), 0u) << error;
  error.clear();
  EXPECT_FALSE(mailtap::config_reader::parse("x = { " + dotted(40000) + " = 1 }\n", "c.toml", error));
  EXPECT_EQ(error.rfind("c.toml:1: more than 1000 dots", 0), 0u) << error;
}

TEST(Document, DotsInStringsAndCommentsAndUpToTheLimitAreParsed) {
  std::string error;
  const std::string many(5000, '.');
  // In a basic, literal and multi-line string (with an escaped quote and a line-ending
  // backslash), and in a comment: not key parts.
  const std::string text = "s = \"\\\"" + many + "\"\nl = '" + many + "'\nm = \"\"\"\n" + many + " \\\n" + many +
                           "\"\"\"\nml = '''\n" + many + "'''\n# " + many + "\n" + dotted(1001) + " = 1\n";
  const auto doc = mailtap::config_reader::parse(text, "c.toml", error);
  ASSERT_TRUE(doc) << error;
  EXPECT_EQ((*doc)["s"].value<std::string>()->size(), 5001u);
  EXPECT_EQ((*doc)["m"].value<std::string>()->size(), 10001u);
  const toml::node* deepest = &*doc;
  for (int i = 0; i < 1001 && deepest; ++i) deepest = deepest->as_table()->get("a");
  ASSERT_NE(deepest, nullptr);
  EXPECT_EQ(deepest->value<std::int64_t>(), 1);
  EXPECT_FALSE(mailtap::config_reader::parse(dotted(1002) + " = 1\n", "c.toml", error));
}

TEST(Document, FilesAreReadUpToTheirCap) {
  std::random_device rd;
  const fs::path dir = fs::temp_directory_path() / ("mailtap_reader_test_" + std::to_string(rd()));
  fs::create_directories(dir);
  std::ofstream(dir / "small.toml") << "a = 1\n";
  std::ofstream(dir / "big.toml") << std::string(100, '#');
  auto small = read_file(dir / "small.toml", 64);
  EXPECT_TRUE(small.ok()) << small.problem;
  EXPECT_EQ(small.text, "a = 1\n");
  auto big = read_file(dir / "big.toml", 64);
  EXPECT_FALSE(big.ok());
  EXPECT_TRUE(big.opened);
  EXPECT_EQ(big.problem, "file larger than 64 bytes");
  auto missing = read_file(dir / "absent.toml", 64);
  EXPECT_FALSE(missing.opened);
  EXPECT_EQ(missing.problem, "No such file or directory");
  EXPECT_FALSE(read_file(dir, 64).ok());   // a directory
  // A named pipe without a writer blocked open(2), and a SIGHUP reload with it (a hostile
  // trial); a device never ends. Regular files only, refused at once.
  ASSERT_EQ(::mkfifo((dir / "fifo.toml").c_str(), 0600), 0);
  auto fifo = read_file(dir / "fifo.toml", 64);
  EXPECT_FALSE(fifo.ok());
  EXPECT_EQ(fifo.problem, "not a regular file");
  EXPECT_EQ(read_file("/dev/zero", 64).problem, "not a regular file");
  fs::remove_all(dir);
}

}  // namespace
