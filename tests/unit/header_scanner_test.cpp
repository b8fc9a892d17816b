// Header scanner: finds the Message-ID of a message body (case-insensitive name, folded value),
// stops at the blank line, never reads the body. Every input is also fed split at every byte
// boundary and one byte at a time.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/action.hpp"
#include "protocol/header_scanner.hpp"
#include "protocol/limits.hpp"

namespace mailtap::protocol {
namespace {

std::optional<std::string> run(const std::vector<std::string_view>& pieces) {
  header_scanner s;
  for (auto p : pieces) s.feed(p);
  return s.message_id();
}

std::optional<std::string> scan(std::string_view input) {
  auto whole = run({input});
  for (std::size_t k = 0; k <= input.size(); ++k)
    EXPECT_EQ(run({input.substr(0, k), input.substr(k)}), whole) << "split at " << k << " of " << escape_bytes(input);
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < input.size(); ++i) bytes.push_back(input.substr(i, 1));
  EXPECT_EQ(run(bytes), whole) << "one byte at a time: " << escape_bytes(input);
  return whole;
}

TEST(HeaderScanner, FindsMessageId) {
  EXPECT_EQ(scan("From: a@example.org\r\nMessage-ID: <123@example.org>\r\nSubject: hi\r\n\r\nbody\r\n"),
            "<123@example.org>");
}

TEST(HeaderScanner, LastHeaderBeforeBlankLine) {
  EXPECT_EQ(scan("Subject: hi\r\nMessage-ID: <last@example.org>\r\n\r\nbody\r\n"), "<last@example.org>");
}

TEST(HeaderScanner, NameIsCaseInsensitive) {
  for (std::string_view name : {"Message-ID", "message-id", "MESSAGE-ID", "Message-Id", "mEsSaGe-iD"}) {
    std::string msg = "Subject: x\r\n" + std::string(name) + ": <case@example.org>\r\n\r\n";
    EXPECT_EQ(scan(msg), "<case@example.org>") << name;
  }
}

TEST(HeaderScanner, WhitespaceAroundNameAndValue) {
  EXPECT_EQ(scan("Message-ID :\t <ws@example.org> \t\r\n\r\n"), "<ws@example.org>");
  EXPECT_EQ(scan("Message-ID:<tight@example.org>\r\n\r\n"), "<tight@example.org>");
}

TEST(HeaderScanner, FoldedHeader) {
  EXPECT_EQ(scan("Subject: x\r\nMessage-ID:\r\n <folded@example.org>\r\nTo: b@example.org\r\n\r\n"),
            "<folded@example.org>");
  EXPECT_EQ(scan("Message-ID:\r\n\t<tab@example.org>\r\n\r\nbody"), "<tab@example.org>");
  // A folded header before it does not swallow it.
  EXPECT_EQ(scan("Subject: a\r\n long subject\r\nMessage-ID: <after-fold@example.org>\r\n\r\n"),
            "<after-fold@example.org>");
}

TEST(HeaderScanner, BareLfLineEndings) {
  EXPECT_EQ(scan("Subject: x\nMessage-ID: <lf@example.org>\n\nbody\n"), "<lf@example.org>");
}

TEST(HeaderScanner, FirstMessageIdWins) {
  EXPECT_EQ(scan("Message-ID: <one@example.org>\r\nMessage-ID: <two@example.org>\r\n\r\n"), "<one@example.org>");
}

TEST(HeaderScanner, StopsAtBlankLineNotFoundInBody) {
  EXPECT_EQ(scan("Subject: x\r\n\r\nMessage-ID: <body@example.org>\r\n\r\n"), std::nullopt);
  EXPECT_EQ(scan("\r\nMessage-ID: <body@example.org>\r\n\r\n"), std::nullopt);   // empty header section
  // Forwarded-message text quoted in the body is not a header either.
  EXPECT_EQ(scan("Subject: fwd\r\nMessage-ID: <outer@example.org>\r\n\r\n"
                 "Message-ID: <inner@example.org>\r\n"),
            "<outer@example.org>");
}

TEST(HeaderScanner, SimilarNamesIgnored) {
  EXPECT_EQ(scan("X-Message-ID: <x@example.org>\r\nMessage-IDs: <y@example.org>\r\n"
                 "In-Reply-To: <z@example.org>\r\nReferences: <r@example.org>\r\n\r\n"),
            std::nullopt);
}

TEST(HeaderScanner, NoHeaders) {
  EXPECT_EQ(scan(""), std::nullopt);
  EXPECT_EQ(scan("just text without a colon\r\n\r\n"), std::nullopt);
}

TEST(HeaderScanner, StopsAfterScanCap) {
  std::string big = "Subject: " + std::string(limits::header_scan_cap, 'a') + "\r\n";
  header_scanner s;
  s.feed(big + "Message-ID: <late@example.org>\r\n\r\n");
  EXPECT_EQ(s.message_id(), std::nullopt);

  header_scanner t;
  for (char c : big + "Message-ID: <late@example.org>\r\n\r\n") t.feed(std::string_view(&c, 1));
  EXPECT_EQ(t.message_id(), std::nullopt);
}

}  // namespace
}  // namespace mailtap::protocol
