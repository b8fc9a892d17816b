// captures/pcap_frames, pcap_export, eml_export: a capture model built here becomes TCP
// connections with a handshake, continuous sequence and acknowledgement numbers, segments
// within max_segment_bytes, valid checksums and a FIN exchange; STARTTLS moves the leg to a
// second connection; IPv6 clients give IPv6 frames; libpcap reads the file back with the
// recorded times. The client leg's messages come back dot-unstuffed, BDAT chunks joined,
// and a DATA that was refused or a message that was cut gives none; the client's bytes are cut
// as the relay read them (captures/client_steps.hpp): lines end at CRLF, a DATA or BDAT line is
// the relay's parse of it, AUTH responses are no commands, and the capture's framing ends DATA.
#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "captures/eml_export.hpp"
#include "captures/index_summary.hpp"
#include "captures/pcap_export.hpp"
#include "protocol/starttls_sequencer.hpp"
#include "scratch_dir.hpp"

using namespace mailtap;
using namespace mailtap::captures;

namespace {

constexpr const char* started_at = "2026-01-01T00:00:00.000000Z";
constexpr std::int64_t start_us = 1'767'225'600'000'000;

struct builder {
  capture c;
  std::uint64_t t = 0;
  builder(std::string client = "192.0.2.10:40000", std::string listen = "127.0.0.1:2525",
          std::string upstream = "203.0.113.5:25") {
    c.header.session = "sess";
    c.header.client = std::move(client);
    c.header.listen = std::move(listen);
    c.header.upstream = std::move(upstream);
    c.header.started_at = started_at;
  }
  builder& bytes(protocol::leg l, protocol::direction d, std::string data) {
    c.events.push_back(bytes_event{t += 1000, l, d, std::move(data)});
    return *this;
  }
  builder& from_client(std::string s) { return bytes(protocol::leg::client, protocol::direction::in, std::move(s)); }
  builder& to_client(std::string s) { return bytes(protocol::leg::client, protocol::direction::out, std::move(s)); }
  builder& to_upstream(std::string s) { return bytes(protocol::leg::upstream, protocol::direction::out, std::move(s)); }
  builder& from_upstream(std::string s) { return bytes(protocol::leg::upstream, protocol::direction::in, std::move(s)); }
  builder& tls(protocol::leg l) {
    c.events.push_back(tls_event{t += 1000, l, {}});
    return *this;
  }
  builder& end() {
    c.end = end_record{t += 1000, "client_quit", "", "", true, 0};
    return *this;
  }
  // The greeting, then MAIL and RCPT pipelined, both accepted.
  builder& envelope() {
    return to_client("220 mx\r\n").from_client("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n").to_client("250 ok\r\n250 ok\r\n");
  }
};

// The content of each message sent_messages finds, in order.
std::vector<std::string> contents(const capture& c) {
  std::vector<std::string> out;
  for (auto& m : sent_messages(c)) out.push_back(std::move(m.content));
  return out;
}

struct tcp_view {
  bool v6 = false;
  std::uint16_t src_port = 0, dst_port = 0;
  std::uint32_t seq = 0, ack = 0;
  std::uint8_t flags = 0;
  std::string payload;
  bool checksums_ok = false;
};

std::uint32_t be(const std::string& b, std::size_t at, int n) {
  std::uint32_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<std::uint8_t>(b[at + i]);
  return v;
}

std::uint16_t checksum(const std::string& data) {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < data.size(); i += 2) sum += be(data, i, 2);
  if (data.size() % 2) sum += static_cast<std::uint8_t>(data.back()) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}

// Parses one synthesized frame back, verifying both checksums (a valid one sums to 0xffff).
tcp_view parse(const frame& f) {
  tcp_view v;
  const std::string& b = f.bytes;
  v.v6 = be(b, 12, 2) == 0x86dd;
  std::string pseudo, tcp;
  bool ip_ok = true;
  if (v.v6) {
    tcp = b.substr(14 + 40);
    pseudo = b.substr(14 + 8, 32) + std::string(2, '\0');
    pseudo += static_cast<char>(tcp.size() >> 8), pseudo += static_cast<char>(tcp.size() & 0xff);
    pseudo += std::string(3, '\0') + '\x06';
  } else {
    const std::string ip = b.substr(14, 20);
    ip_ok = checksum(ip) == 0xffff && be(ip, 2, 2) == b.size() - 14;
    tcp = b.substr(14 + 20);
    pseudo = ip.substr(12, 8) + '\0' + '\x06';
    pseudo += static_cast<char>(tcp.size() >> 8), pseudo += static_cast<char>(tcp.size() & 0xff);
  }
  v.checksums_ok = ip_ok && checksum(pseudo + tcp) == 0xffff;
  v.src_port = static_cast<std::uint16_t>(be(tcp, 0, 2));
  v.dst_port = static_cast<std::uint16_t>(be(tcp, 2, 2));
  v.seq = be(tcp, 4, 4);
  v.ack = be(tcp, 8, 4);
  v.flags = static_cast<std::uint8_t>(tcp[13]);
  v.payload = tcp.substr(20);
  return v;
}

constexpr std::uint8_t fin = 0x01, syn = 0x02, ack = 0x10;

builder conversation() {
  builder b;
  b.from_upstream("220 mx ESMTP\r\n").to_client("220 mx ESMTP\r\n");
  b.from_client("EHLO c\r\n").to_upstream("EHLO c\r\n").from_upstream("250 mx\r\n").to_client("250 mx\r\n");
  b.from_client("QUIT\r\n").to_upstream("QUIT\r\n").from_upstream("221 bye\r\n").to_client("221 bye\r\n");
  return b;
}

TEST(PcapFrames, EachLegIsOneTcpConnectionWithContinuousSequenceNumbers) {
  const auto frames = synthesize_frames(conversation().end().c);
  std::map<std::pair<std::uint16_t, std::uint16_t>, std::vector<tcp_view>> by_direction;
  for (const auto& f : frames) {
    const auto v = parse(f);
    EXPECT_TRUE(v.checksums_ok);
    EXPECT_FALSE(v.v6);
    by_direction[{v.src_port, v.dst_port}].push_back(v);
  }
  // client leg: 40000 -> 25 (2525 written as 25); upstream leg: 49152 -> 25
  ASSERT_EQ(by_direction.size(), 4u);
  for (auto [client, server] : {std::pair<std::uint16_t, std::uint16_t>{40000, 25}, {49152, 25}}) {
    const auto& up = by_direction[{client, server}];
    const auto& down = by_direction[{server, client}];
    ASSERT_GE(up.size(), 4u);
    ASSERT_GE(down.size(), 3u);
    EXPECT_EQ(up.front().flags, syn);
    EXPECT_EQ(down.front().flags, syn | ack);
    EXPECT_EQ(down.front().ack, up.front().seq + 1);
    EXPECT_EQ(up.back().flags, ack);              // the last ACK of the FIN exchange
    EXPECT_TRUE(down.back().flags & fin);
    std::string sent, received;
    for (const auto* side : {&up, &down}) {
      std::uint32_t next = side->front().seq + 1;   // past the SYN
      for (std::size_t i = 1; i < side->size(); ++i) {
        EXPECT_EQ((*side)[i].seq, next) << i;
        next += static_cast<std::uint32_t>((*side)[i].payload.size()) + (((*side)[i].flags & fin) ? 1 : 0);
        (side == &up ? sent : received) += (*side)[i].payload;
      }
    }
    EXPECT_EQ(sent, "EHLO c\r\nQUIT\r\n");
    EXPECT_EQ(received, "220 mx ESMTP\r\n250 mx\r\n221 bye\r\n");
  }
}

TEST(PcapFrames, TimesAreTheRecordedOnesAndNeverGoBack) {
  const auto frames = synthesize_frames(conversation().end().c);
  EXPECT_EQ(frames.front().unix_us, start_us + 1000);   // the first record
  for (std::size_t i = 1; i < frames.size(); ++i) EXPECT_GE(frames[i].unix_us, frames[i - 1].unix_us);
  bool found_ehlo = false;
  for (const auto& f : frames) {
    const auto v = parse(f);
    if (v.payload != "EHLO c\r\n" || v.src_port != 40000) continue;
    found_ehlo = true;
    EXPECT_EQ(f.unix_us, start_us + 3000);
  }
  EXPECT_TRUE(found_ehlo);
}

TEST(PcapFrames, LargeBytesAreSplitIntoSegmentsWithinTheLimit) {
  builder b;
  const std::string big(3 * max_segment_bytes + 17, 'x');
  b.from_client(big).end();
  std::string joined;
  for (const auto& f : synthesize_frames(b.c)) {
    const auto v = parse(f);
    EXPECT_LE(v.payload.size(), max_segment_bytes);
    EXPECT_LE(f.bytes.size(), 65535u);
    EXPECT_TRUE(v.checksums_ok);
    joined += v.payload;
  }
  EXPECT_EQ(joined, big);
}

TEST(PcapFrames, StarttlsMovesTheRestOfTheLegToASecondConnection) {
  builder b;
  b.to_client("220 mx\r\n").from_client("STARTTLS\r\n").to_client("220 go ahead\r\n").tls(protocol::leg::client);
  b.from_client("EHLO after\r\n").end();
  std::map<std::uint16_t, std::string> by_client_port;
  for (const auto& f : synthesize_frames(b.c)) {
    const auto v = parse(f);
    if (v.dst_port == 25) by_client_port[v.src_port] += v.payload;
  }
  EXPECT_EQ(by_client_port[40000], "STARTTLS\r\n");
  EXPECT_EQ(by_client_port[40001], "EHLO after\r\n");
}

// A failed upstream handshake, then the relay's plaintext fall-back on a new connection: the
// second connection is a TCP stream of its own, not more of the first.
TEST(PcapFrames, APlaintextFallBackIsASecondUpstreamConnection) {
  builder b;
  b.from_upstream("220 mx\r\n").to_upstream("STARTTLS\r\n").from_upstream("220 go ahead\r\n");
  b.c.events.push_back(note_event{b.t += 1000, std::string(protocol::note_upstream_tls_fallback)});
  b.c.events.push_back(note_event{b.t += 1000, std::string(protocol::note_new_plaintext_upstream)});
  b.from_upstream("220 mx again\r\n").to_upstream("EHLO relay\r\n").end();
  std::map<std::uint16_t, std::string> by_relay_port;
  std::map<std::uint16_t, int> syns;
  for (const auto& f : synthesize_frames(b.c)) {
    const auto v = parse(f);
    if (v.dst_port != 25) continue;
    by_relay_port[v.src_port] += v.payload;
    if (v.flags == syn) ++syns[v.src_port];
  }
  EXPECT_EQ(by_relay_port[49152], "STARTTLS\r\n");
  EXPECT_EQ(by_relay_port[49153], "EHLO relay\r\n");
  EXPECT_EQ(syns, (std::map<std::uint16_t, int>{{49152, 1}, {49153, 1}}));
}

TEST(PcapFrames, ImplicitTlsStaysOneConnection) {
  builder b;
  b.tls(protocol::leg::client).to_client("220 mx\r\n").from_client("EHLO c\r\n").end();
  std::set<std::uint16_t> ports;
  for (const auto& f : synthesize_frames(b.c)) ports.insert(parse(f).src_port);
  EXPECT_EQ(ports, (std::set<std::uint16_t>{40000, 25}));
}

TEST(PcapFrames, AnIpv6ClientGivesIpv6FramesAndKeepPortsKeepsThem) {
  builder b("[2001:db8::7]:40000", "[::]:2525", "builtin");
  b.to_client("220 mx\r\n").from_client("QUIT\r\n").to_upstream("QUIT\r\n").end();
  bool client_leg_seen = false;
  for (const auto& f : synthesize_frames(b.c, {.keep_ports = true})) {
    const auto v = parse(f);
    EXPECT_TRUE(v.checksums_ok);
    if (v.src_port == 40000) {
      client_leg_seen = true;
      EXPECT_TRUE(v.v6);
      EXPECT_EQ(v.dst_port, 2525);
    }
  }
  EXPECT_TRUE(client_leg_seen);
}

TEST(PcapExport, LibpcapReadsTheFileBackWithTheRecordedTimes) {
  scratch_dir dir;
  const auto c = conversation().end().c;
  const auto path = dir.path() / "x.pcap";
  std::size_t written = 0;
  std::string error;
  ASSERT_TRUE(write_pcap(c, path, {}, written, error)) << error;
  const auto frames = synthesize_frames(c);
  EXPECT_EQ(written, frames.size());
  char errbuf[PCAP_ERRBUF_SIZE];
  pcap_t* in = pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_MICRO, errbuf);
  ASSERT_NE(in, nullptr) << errbuf;
  EXPECT_EQ(pcap_datalink(in), DLT_EN10MB);
  pcap_pkthdr* h;
  const u_char* data;
  std::size_t n = 0;
  while (pcap_next_ex(in, &h, &data) == 1) {
    ASSERT_LT(n, frames.size());
    EXPECT_EQ(h->ts.tv_sec * 1'000'000LL + h->ts.tv_usec, frames[n].unix_us);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(data), h->caplen), frames[n].bytes);
    ++n;
  }
  pcap_close(in);
  EXPECT_EQ(n, frames.size());
}

TEST(PcapExport, AnUnwritablePathIsOneLine) {
  std::size_t written = 0;
  std::string error;
  EXPECT_FALSE(write_pcap(conversation().c, "/nonexistent-dir/x.pcap", {}, written, error));
  EXPECT_NE(error.find("/nonexistent-dir/x.pcap"), std::string::npos);
  EXPECT_EQ(error.find('\n'), std::string::npos);
}

TEST(EmlExport, DataIsDotUnstuffedAndEndsBeforeItsTerminator) {
  builder b;
  b.to_client("220 mx\r\n").from_client("EHLO c\r\n").to_client("250-mx\r\n250 PIPELINING\r\n");
  b.from_client("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n").to_client("250 ok\r\n250 ok\r\n354 go\r\n");
  b.from_client("Subject: one\r\n\r\n..leading dot\r\n").from_client("last line\r\n.\r\n").to_client("250 queued\r\n");
  b.from_client("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n").to_client("250 ok\r\n250 ok\r\n354 go\r\n");
  b.from_client(".\r\n").to_client("250 queued\r\n").from_client("QUIT\r\n").to_client("221 bye\r\n");
  const auto messages = sent_messages(b.c);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].content, "Subject: one\r\n\r\n.leading dot\r\nlast line\r\n");
  EXPECT_FALSE(messages[0].bdat);
  EXPECT_EQ(messages[1].content, "");
}

// A review of 1166fed: under normalize "a\n.b" goes upstream as "a .b" and the destination keeps
// the dot; the export took the dot after the bare LF for stuffing and dropped it.
TEST(EmlExport, ADotAfterABareLfIsContentNotStuffing) {
  builder b;
  b.to_client("220 mx\r\n").from_client("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n");
  b.to_client("250 ok\r\n250 ok\r\n354 go\r\n");
  b.from_client("a\n.b\r\n..c\r\n.\r\n").to_client("250 queued\r\n");
  const auto messages = sent_messages(b.c);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].content, "a\n.b\r\n.c\r\n");
}

TEST(EmlExport, ARefusedDataGivesNoMessageAndWhatFollowsIsCommands) {
  builder b;
  b.to_client("220 mx\r\n").from_client("MAIL FROM:<a@x>\r\n").to_client("250 ok\r\n");
  b.from_client("DATA\r\n").to_client("554 5.5.1 no valid recipients\r\n");
  b.from_client("RCPT TO:<b@y>\r\n").to_client("250 ok\r\n").from_client("DATA\r\n").to_client("354 go\r\n");
  b.from_client("Subject: two\r\n\r\nbody\r\n.\r\n").to_client("250 ok\r\n");
  const auto messages = sent_messages(b.c);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].content, "Subject: two\r\n\r\nbody\r\n");
}

TEST(EmlExport, BdatChunksAreJoinedAsSent) {
  builder b;
  b.to_client("220 mx\r\n").from_client("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n").to_client("250 ok\r\n250 ok\r\n");
  b.from_client("BDAT 12\r\nSubject: x\r\n").to_client("250 ok\r\n");
  b.from_client("BDAT 7 LAST\r\n\r\n.body").to_client("250 queued\r\n");
  const auto messages = sent_messages(b.c);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].content, "Subject: x\r\n\r\n.body");   // BDAT is never dot-stuffed
  EXPECT_TRUE(messages[0].bdat);
}

TEST(EmlExport, AMessageCutBeforeItsEndIsLeftOutAndFilesAreNamedBySession) {
  builder b;
  b.to_client("220 mx\r\n").from_client("DATA\r\n").to_client("354 go\r\n").from_client("Subject: a\r\n\r\nx\r\n.\r\n");
  b.to_client("250 ok\r\n").from_client("DATA\r\n").to_client("354 go\r\n").from_client("Subject: cut\r\n");
  scratch_dir dir;
  std::string error;
  auto written = write_eml_files(b.c, dir.path() / "out", error);
  ASSERT_TRUE(written) << error;
  ASSERT_EQ(written->size(), 1u);
  EXPECT_EQ(written->front(), dir.path() / "out" / "sess-1.eml");
  std::ifstream in(written->front(), std::ios::binary);
  std::stringstream content;
  content << in.rdbuf();
  EXPECT_EQ(content.str(), "Subject: a\r\n\r\nx\r\n");
}

// A session id that is a path wrote outside -o DIR (a hostile trial: "../victim/x" and an
// absolute path). The reader refuses such a header; the exporter checks again.
TEST(EmlExport, ASessionIdThatIsAPathWritesNothing) {
  for (std::string id : {"../victim/traversal", "/tmp/absolute", "a/b", ".hidden", ""}) {
    SCOPED_TRACE(id);
    builder b;
    b.c.header.session = id;
    b.to_client("220 mx\r\n").from_client("DATA\r\n").to_client("354 go\r\n").from_client("Subject: a\r\n\r\nx\r\n.\r\n");
    scratch_dir dir;
    std::string error;
    EXPECT_FALSE(write_eml_files(b.c, dir.path() / "out", error));
    EXPECT_NE(error.find("not a plain name"), std::string::npos) << error;
    EXPECT_FALSE(std::filesystem::exists(dir.path() / "out"));
  }
}

// The exporter cut the client's bytes a way of its own (before captures/client_steps.hpp): it
// parsed BDAT's size by hand, so "BDAT 5abc", which the relay refuses (501, then it closes, reading
// nothing more), still took the next 5 bytes as a chunk, and "hello" became a message.
TEST(EmlExport, ABdatSizeThatIsNotANumberCarriesNoChunk) {
  builder b;
  b.envelope().from_client("BDAT 5abc\r\nhelloBDAT 0 LAST\r\n").to_client("501 5.5.4 Syntax error in BDAT parameters\r\n");
  EXPECT_EQ(contents(b.c), std::vector<std::string>{});
}

// It took LAST anywhere after the size ("NOTLAST", "5LAST") for the end of the message: RFC 3030
// has it as the line's one word after the size, and the relay refuses any other line as a bad BDAT.
TEST(EmlExport, LastIsOnlyBdatsOwnEndMarker) {
  for (std::string line : {"BDAT 5 NOTLAST", "BDAT 5LAST", "BDAT 5 LASTING", "BDAT 5 LAST LAST"}) {
    SCOPED_TRACE(line);
    builder b;
    b.envelope().from_client(line + "\r\nhello").to_client("501 5.5.4 Syntax error in BDAT parameters\r\n");
    EXPECT_EQ(contents(b.c), std::vector<std::string>{});
  }
  builder b;   // the keyword itself, in any case
  b.envelope().from_client("bdat 5 last\r\nhello").to_client("250 queued\r\n");
  EXPECT_EQ(contents(b.c), std::vector<std::string>{"hello"});
}

// A line after a 334 to AUTH is an AUTH response (RFC 4954 4), as the relay reads it, whatever it
// looks like; the exporter parsed it as a command. "DATA" is base64 too (a relay masks responses
// in its captures, and refuses a 354 to one: relay_fsm not_a_reply_to; these are models): answered
// 354 it opened a message that swallowed the session up to the real message's end, and a literal
// "BDAT 4 LAST" took the next response's first bytes for a message.
TEST(EmlExport, AnAuthResponseIsNeverACommand) {
  {
    builder b;
    b.to_client("220 mx\r\n").from_client("AUTH LOGIN\r\n").to_client("334 VXNlcm5hbWU6\r\n");
    b.from_client("DATA\r\n").to_client("354 go\r\n").from_client("cGFzcw==\r\n").to_client("235 2.7.0 ok\r\n");
    b.from_client("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n").to_client("250 ok\r\n250 ok\r\n354 go\r\n");
    b.from_client("Subject: real\r\n\r\nbody\r\n.\r\n").to_client("250 queued\r\n");
    EXPECT_EQ(contents(b.c), std::vector<std::string>{"Subject: real\r\n\r\nbody\r\n"});
  }
  {
    builder b;
    b.to_client("220 mx\r\n").from_client("AUTH LOGIN\r\n").to_client("334 VXNlcm5hbWU6\r\n");
    b.from_client("BDAT 4 LAST\r\n").to_client("334 UGFzc3dvcmQ6\r\n");
    b.from_client("dGVzdA==\r\n").to_client("235 2.7.0 ok\r\n").from_client("QUIT\r\n").to_client("221 bye\r\n");
    EXPECT_EQ(contents(b.c), std::vector<std::string>{});
  }
}

// The relay reads DATA's verb in any case; so did the exporter (pinned here beside the cutter's rule).
TEST(EmlExport, LowerCaseDataOpensAMessage) {
  builder b;
  b.to_client("220 mx\r\n").from_client("mail from:<a@x>\r\nrcpt to:<b@y>\r\ndata\r\n").to_client("250 ok\r\n250 ok\r\n354 go\r\n");
  b.from_client("Subject: lower\r\n\r\nbody\r\n.\r\n").to_client("250 queued\r\n");
  EXPECT_EQ(contents(b.c), std::vector<std::string>{"Subject: lower\r\n\r\nbody\r\n"});
}

// The relay splits a command's words at a space or a tab (protocol/command.cpp), so "DATA " and
// "DATA<TAB>" are DATA: forwarded, and the destination's 354 opens the message. The exporter took
// only a bare "DATA", read the message as commands and wrote none.
TEST(EmlExport, DataWithTrailingWhiteSpaceOpensAMessage) {
  for (std::string line : {"DATA ", "DATA\t"}) {
    SCOPED_TRACE(line);
    builder b;
    b.envelope().from_client(line + "\r\n").to_client("354 go\r\n");
    b.from_client("Subject: spaced\r\n\r\n..dot\r\n.\r\n").to_client("250 queued\r\n");
    EXPECT_EQ(contents(b.c), std::vector<std::string>{"Subject: spaced\r\n\r\n.dot\r\n"});
  }
}

// Only CRLF ends a command line (RFC 5321 2.3.8): "RSET\nDATA" is one line, which the relay
// refuses (500, bare LF). The exporter ended a line at the LF and took the DATA in it for the
// next 354's, so the message began with the client's real "DATA" line.
TEST(EmlExport, ABareLfDoesNotEndACommandLine) {
  builder b;
  b.envelope().from_client("RSET\nDATA\r\n").to_client("500 5.5.2 Syntax error: bare LF in command\r\n");
  b.from_client("DATA\r\n").to_client("354 go\r\n").from_client("Subject: x\r\n\r\nbody\r\n.\r\n").to_client("250 queued\r\n");
  EXPECT_EQ(contents(b.c), std::vector<std::string>{"Subject: x\r\n\r\nbody\r\n"});
}

// A normalize capture without normalize_to is from before it was written, when the relay read a bare
// LF as a line ending and "\n.\n" ended the message (captures/FORMAT.md; client_steps.hpp
// message_framing). The exporter framed it as today's normalize: only CRLF.CRLF ended it, so the
// message ran on over the next transaction into the next message's end, and two were one.
// Its lines are as the client sent them; a dot after a bare LF began a line then, and was stuffing.
TEST(EmlExport, AnOlderNormalizeCaptureEndsAMessageAtABareLfDot) {
  builder b;
  b.c.header.bare_eol = "normalize";
  b.envelope().from_client("DATA\r\n").to_client("354 go\r\n");
  b.from_client("Subject: one\n\n..dot\nbody\n.\n").to_client("250 queued\r\n");
  b.from_client("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n").to_client("250 ok\r\n250 ok\r\n354 go\r\n");
  b.from_client("Subject: two\r\n\r\nbody\r\n.\r\n").to_client("250 queued\r\n");
  EXPECT_EQ(contents(b.c), (std::vector<std::string>{"Subject: one\n\n.dot\nbody\n", "Subject: two\r\n\r\nbody\r\n"}));
  // Today's normalize (normalize_to "space"): "\n.\n" is text, only CRLF.CRLF ends the message.
  b.c.header.normalize_to = "space";
  const auto today = sent_messages(b.c);
  ASSERT_EQ(today.size(), 1u);
  EXPECT_EQ(today[0].content.rfind("Subject: one\n\n..dot\nbody\n.\nMAIL FROM:", 0), 0u) << today[0].content;
}

// A BDAT message is the chunks of its transaction: a RSET ends it (RFC 3030 2), and the exporter
// joined the chunks before it to the next message's. A MAIL refused inside the transaction (503)
// leaves it open.
TEST(EmlExport, ChunksBeforeARsetAreNoPartOfTheNextMessage) {
  builder b;
  b.envelope().from_client("BDAT 6\r\nfirst ").to_client("250 ok\r\n").from_client("RSET\r\n").to_client("250 ok\r\n");
  b.from_client("MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n").to_client("250 ok\r\n250 ok\r\n");
  b.from_client("BDAT 7\r\nsecond ").to_client("250 ok\r\n");
  b.from_client("MAIL FROM:<a@x>\r\n").to_client("503 5.5.1 nested MAIL\r\n");
  b.from_client("BDAT 4 LAST\r\npart").to_client("250 queued\r\n");
  const auto messages = sent_messages(b.c);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].content, "second part");
  EXPECT_TRUE(messages[0].bdat);
}

// Bytes after a QUIT are no message, however they are framed (BDAT chunks ending in LAST):
// the relay reads nothing after a QUIT as commands, whatever answered it (relay_fsm quit_taken_).
TEST(EmlExport, NothingAfterAQuitIsAMessage) {
  builder b;
  b.envelope().from_client("QUIT\r\n").to_client("221 bye\r\n");
  b.from_client("BDAT 5 LAST\r\nafter");
  EXPECT_TRUE(sent_messages(b.c).empty());

  builder unanswered;
  unanswered.envelope().from_client("QUIT\r\nBDAT 5 LAST\r\nafter");
  EXPECT_TRUE(sent_messages(unanswered.c).empty());

  builder refused;
  refused.envelope().from_client("BDAT 4 LAST\r\nsent").to_client("250 queued\r\n");
  refused.from_client("QUIT\r\n").to_client("500 5.5.1 not now\r\n");
  refused.from_client("BDAT 5 LAST\r\nafter").to_client("250 queued\r\n");
  const auto messages = sent_messages(refused.c);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].content, "sent");
}

}  // namespace
