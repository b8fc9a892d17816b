// The replay machines (replay/server_fsm.hpp, replay/client_fsm.hpp) fed arbitrary live
// input: the server a live client's bytes, the client a live server's. The script is a fixed
// recording (EHLO, STARTTLS, AUTH LOGIN, pipelined MAIL/RCPT, DATA, a BDAT chunk, QUIT). Input:
// one byte of options (bit 0: which machine; bits 1-2: the timing), then events, each a kind
// byte (bytes, timer, TLS ready, TLS failed, close) and for bytes a length byte and that many
// bytes. Checked after every event: what a machine writes is bounded by what the recording has
// to say, and once a machine closes it says nothing more.
#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "replay/client_fsm.hpp"
#include "replay/script.hpp"
#include "replay/server_fsm.hpp"

using namespace mailtap;
using protocol::direction;
using protocol::leg;

namespace {

void client_says(captures::capture& c, std::uint64_t t, std::string bytes) {
  c.events.push_back(captures::bytes_event{t, leg::client, direction::in, std::move(bytes)});
}
void server_says(captures::capture& c, std::uint64_t t, std::string bytes) {
  c.events.push_back(captures::bytes_event{t, leg::client, direction::out, std::move(bytes)});
}

const replay::script& recording() {
  static const replay::script s = [] {
    captures::capture c;
    c.path = "fuzz.jsonl";
    std::uint64_t t = 100;
    server_says(c, t += 100, "220 mx ESMTP\r\n");
    client_says(c, t += 100, "EHLO c\r\n");
    server_says(c, t += 100, "250-mx\r\n250-STARTTLS\r\n250-AUTH LOGIN\r\n250 CHUNKING\r\n");
    client_says(c, t += 100, "STARTTLS\r\n");
    server_says(c, t += 100, "220 2.0.0 go\r\n");
    client_says(c, t += 100, "EHLO c\r\n");
    server_says(c, t += 100, "250-mx\r\n250 AUTH LOGIN\r\n");
    client_says(c, t += 100, "AUTH LOGIN\r\n");
    server_says(c, t += 100, "334 VXNlcm5hbWU6\r\n");
    client_says(c, t += 100, "****\r\n");
    server_says(c, t += 100, "334 UGFzc3dvcmQ6\r\n");
    client_says(c, t += 100, "****\r\n");
    server_says(c, t += 100, "235 2.7.0 ok\r\n");
    client_says(c, t += 100, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n");
    server_says(c, t += 100, "250 ok\r\n250 ok\r\n354 go\r\n");
    client_says(c, t += 100, "hi\r\n..\r\n.\r\n");
    server_says(c, t += 5000, "250 queued\r\n");
    client_says(c, t += 100, "MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 3 LAST\r\nabc");
    server_says(c, t += 100, "250 ok\r\n250 ok\r\n250 queued\r\n");
    client_says(c, t += 100, "QUIT\r\n");
    server_says(c, t += 100, "221 bye\r\n");
    std::string error;
    auto built = replay::build_script(c, error);
    FUZZ_CHECK(built.has_value(), "the fixed recording builds");
    return *built;
  }();
  return s;
}

std::size_t written(const std::vector<protocol::action>& actions, bool& closed) {
  std::size_t n = 0;
  for (const auto& a : actions) {
    if (const auto* b = std::get_if<protocol::send_bytes>(&a)) {
      FUZZ_CHECK(!closed, "nothing is written after a close");
      n += b->bytes.size();
    }
    if (std::holds_alternative<protocol::close_leg>(a)) closed = true;
  }
  return n;
}

template <typename Machine, typename Bytes, typename Closed>
void run(Machine& m, const std::uint8_t* data, std::size_t size, std::size_t bound, Bytes bytes, Closed closed_by_peer) {
  bool closed = false;
  std::uint64_t now = 0;
  std::size_t at = 0;
  while (at < size) {
    const std::uint8_t kind = data[at++];
    now += static_cast<std::uint64_t>(kind) * 997;
    switch (kind % 5) {
      case 0: {
        std::size_t n = 0;
        if (at < size) {
          const std::size_t want = data[at++];
          n = std::min(want, size - at);
        }
        bytes(std::string_view(reinterpret_cast<const char*>(data + at), n), now);
        at += n;
        break;
      }
      case 1: m.on_timer(now); break;
      case 2: m.on_tls_ready(now); break;
      case 3: m.on_tls_failed(now); break;
      default: closed_by_peer(now); break;
    }
    FUZZ_CHECK(written(m.take_actions(), closed) <= bound, "a machine writes more than the recording has");
  }
  closed_by_peer(now + 1);
  written(m.take_actions(), closed);
  FUZZ_CHECK(m.finished(), "a machine finishes once its peer is gone");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const auto& s = recording();
  const replay::timing pace{((data[0] >> 1) & 3) * 0.5};
  std::size_t replies = s.banner->reply.raw.size() + 200;   // plus one reply of its own
  std::size_t sent = 0;
  for (const auto& st : s.steps) {
    replies += st.reply ? st.reply->reply.raw.size() : 0;
    sent += st.bytes.size() + 100;   // AUTH material is made from credentials
  }
  if (data[0] & 1) {
    replay::server_fsm m(s, pace);
    m.on_start(0);
    run(m, data + 1, size - 1, replies,
        [&](std::string_view b, std::uint64_t now) { m.on_client_bytes(b, now); },
        [&](std::uint64_t now) { m.on_client_closed(now); });
  } else {
    replay::client_options o;
    o.pace = pace;
    o.auth_user = "u";
    o.auth_password = "p";
    replay::client_fsm m(s, o);
    m.on_connected(0);
    run(m, data + 1, size - 1, sent,
        [&](std::string_view b, std::uint64_t now) { m.on_server_bytes(b, now); },
        [&](std::uint64_t now) { m.on_server_closed(now); });
  }
  return 0;
}
