// Shared by the relay machine fuzzers (fuzz_relay_fsm.cpp, fuzz_relay_client.cpp): drives one
// protocol::relay_fsm the way relay/session.cpp does (a leg is not read once closed or while
// its TLS handshake runs, a timer fires only when armed, the clock only moves forward) and
// checks the relay's invariants after every step (issue 11), aborting on a violation:
//   I-2xx   no 2xx end-of-data reply (to the dot or BDAT LAST) reaches the client unless it is
//           a 2xx the upstream sent (each used once) or a blackhole fault answered the message;
//           a transaction recorded delivered has a final reply the upstream sent (a 2xx the
//           relay made is recorded blackholed);
//   I-eod   in strict and normalize modes nothing sent upstream outside BDAT payloads holds a
//           bare CR, a bare LF or a NUL, so no upstream can find an end of data ("\n.\n",
//           "\r.\r", "\r\n.\n", ...) that the relay did not;
//   I-end   exactly one on_end, nothing recorded and no action after it;
//   I-mem   the bytes a step hands to the shell stay within a constant multiple of the bytes
//           that step fed in, plus the replies the machine may legitimately hold (its caps).
// Test-only; header-only.
#pragma once
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_check.hpp"
#include "protocol/action.hpp"
#include "protocol/limits.hpp"
#include "protocol/observer.hpp"
#include "protocol/relay_fsm.hpp"

namespace mailtap::fuzz {

using namespace mailtap::protocol;

// I-eod: scans the upstream-bound stream (as recorded: AUTH material masked, its CR/LF kept)
// incrementally. Outside a message a line "BDAT <n>" is followed by n binary octets, skipped;
// a message (after the client was told 354) runs to its lone-dot line.
class upstream_stream_check {
 public:
  explicit upstream_stream_check(bool strict_eol) : strict_eol_(strict_eol) {}

  void begin_message() { in_message_ = true; }

  void feed(std::string_view bytes) {
    for (char c : bytes) {
      if (skip_ > 0) {   // a BDAT chunk is binary (RFC 3030): any octet is legal
        --skip_;
        continue;
      }
      if (strict_eol_) {
        FUZZ_CHECK(c != '\0', "I-eod: NUL sent upstream");
        FUZZ_CHECK(!(prev_ == '\r' && c != '\n'), "I-eod: bare CR sent upstream");
        FUZZ_CHECK(!(c == '\n' && prev_ != '\r'), "I-eod: bare LF sent upstream");
      }
      prev_ = c;
      if (c == '\n') {
        if (in_message_) in_message_ = line_ != ".\r";
        else skip_ = bdat_size(line_);
        line_.clear();
        prev_ = '\n';
      } else if (line_.size() < 64) {
        line_.push_back(c);
      }
    }
  }

 private:
  // "BDAT <size>[ LAST]\r": the chunk size, else 0.
  static std::uint64_t bdat_size(std::string_view line) {
    if (line.size() < 6) return 0;
    std::string verb(line.substr(0, 5));
    for (char& c : verb) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (verb != "BDAT ") return 0;
    std::uint64_t n = 0;
    for (std::size_t i = 5; i < line.size() && line[i] >= '0' && line[i] <= '9' && n < (1ull << 40); ++i)
      n = n * 10 + static_cast<std::uint64_t>(line[i] - '0');
    return n;
  }

  bool strict_eol_;
  char prev_ = '\n';
  std::string line_;
  std::uint64_t skip_ = 0;
  bool in_message_ = false;
};

// Records what the capture would see and checks I-2xx and the "nothing after on_end" half of I-end.
class checking_observer : public session_observer {
 public:
  explicit checking_observer(bool strict_eol) : upstream_(strict_eol) {}

  void on_bytes(std::uint64_t, leg l, direction d, std::string_view b) override {
    touch();
    if (l == leg::upstream && d == direction::out) upstream_.feed(b);
    if (l == leg::client && d == direction::out) {
      last_client_out_.assign(b);
      client_out_fresh_ = true;
    }
    bdat_2xx_pending_ = false;
  }
  void on_command(std::uint64_t, std::string_view) override { touch(); bdat_2xx_pending_ = false; }
  void on_relay_command(std::uint64_t, std::string_view) override { touch(); bdat_2xx_pending_ = false; }
  void on_reply(std::uint64_t, leg l, direction d, const reply& r) override {
    touch();
    if (l == leg::upstream && d == direction::in && r.klass() == 2) {
      upstream_2xx_.push_back(r.raw);
      upstream_2xx_all_.insert(r.raw);
    }
  }
  void on_note(std::uint64_t, std::string_view) override { touch(); }
  void on_tls(std::uint64_t, leg, const tls_summary&) override { touch(); bdat_2xx_pending_ = false; }
  void on_stage(const stage_record& s) override {
    touch();
    bool fresh_2xx = client_out_fresh_ && !last_client_out_.empty() && last_client_out_[0] == '2';
    bool client_out_fresh_354 = client_out_fresh_ && last_client_out_.rfind("354", 0) == 0;
    client_out_fresh_ = false;
    bdat_2xx_pending_ = false;
    if (s.ph == phase::data_end && fresh_2xx) client_2xx_end_of_data();
    // The client was told 354: what the relay sends upstream next is the message.
    if (s.ph == phase::data && client_out_fresh_354) upstream_.begin_message();
    // A 2xx to BDAT settles its transaction (on_transaction right after) only for BDAT LAST.
    if (s.ph == phase::bdat && fresh_2xx) bdat_2xx_pending_ = true;
  }
  void on_transaction(const transaction_record& t) override {
    touch();
    if (bdat_2xx_pending_) client_2xx_end_of_data();
    bdat_2xx_pending_ = false;
    if (t.result == outcome::delivered) {
      // A 2xx the relay made itself is recorded `blackholed`, never `delivered`.
      FUZZ_CHECK(!t.synthesized, "I-2xx: delivered on a reply the relay made");
      FUZZ_CHECK(t.final_reply.has_value(), "I-2xx: delivered without a final reply");
      FUZZ_CHECK(upstream_2xx_all_.count(t.final_reply->raw) == 1,
                 "I-2xx: delivered on a reply the upstream never sent");
    }
  }
  void on_fault(std::uint64_t, const fault_event&) override { touch(); }
  void on_end(std::uint64_t, std::string_view, std::string_view) override {
    touch();
    ++ends;
  }

  // 2xx end-of-data replies the client got that match no upstream reply (at most the
  // blackholed messages).
  std::uint64_t unmatched_2xx_end_of_data = 0;
  int ends = 0;

 private:
  void touch() { FUZZ_CHECK(ends == 0, "I-end: recorded after on_end"); }
  // A 2xx end-of-data reply went to the client: it must be the upstream's own reply (the relay
  // passes the upstream's final reply through byte for byte), each upstream reply used once.
  void client_2xx_end_of_data() {
    auto it = std::find(upstream_2xx_.begin(), upstream_2xx_.end(), last_client_out_);
    if (it == upstream_2xx_.end()) ++unmatched_2xx_end_of_data;
    else upstream_2xx_.erase(it);
  }

  std::string last_client_out_;
  bool client_out_fresh_ = false;
  bool bdat_2xx_pending_ = false;
  upstream_stream_check upstream_;
  std::vector<std::string> upstream_2xx_;       // raw 2xx upstream replies not yet matched
  std::set<std::string> upstream_2xx_all_;      // every one, for delivered records
};

// What the relay may legitimately hand out in one step beyond a multiple of that step's input:
// replies it held (pipelined_commands_cap of them, each up to the reply caps) are bounded by
// the upstream input of earlier steps, so the constant covers one full multi-line reply plus
// the relay's own short replies to a full pipeline.
inline constexpr std::uint64_t step_output_slack =
    limits::reply_line_cap * limits::reply_lines_cap + limits::pipelined_commands_cap * 256;
inline constexpr std::uint64_t step_output_factor = 64;

class relay_harness {
 public:
  explicit relay_harness(const relay_options& o)
      : obs_(o.eol != bare_eol_mode::raw), fsm_(o, &obs_) {}

  relay_fsm& fsm() { return fsm_; }
  const checking_observer& observer() const { return obs_; }
  std::uint64_t now() const { return now_; }
  void advance(std::uint64_t us) { now_ += us; }

  bool client_readable() const { return !client_closed_ && !tls_pending_[0] && !fsm_.finished() && !client_paused_; }
  bool upstream_readable() const { return connected_ && !upstream_closed_ && !tls_pending_[1] && !fsm_.finished(); }

  // Each step: one event, then the actions taken and every invariant checked.
  template <typename Event>
  void step(std::uint64_t input_bytes, Event&& ev) {
    ev();
    collect(input_bytes);
  }

  void start(bool upstream_reachable, bool implicit_client_tls) {
    if (implicit_client_tls) step(0, [&] { fsm_.on_tls_ready(now_, leg::client, summary()); });
    step(0, [&] { fsm_.on_start(now_); });
    if (!connect_asked_) return;
    if (upstream_reachable) {
      connected_ = true;
      step(0, [&] { fsm_.on_upstream_connected(now_); });
    } else {
      step(0, [&] { fsm_.on_upstream_unreachable(now_, "connection refused"); });
    }
  }

  void client_bytes(std::string_view b) {
    if (!client_readable()) return;
    trace_in("client", b);
    step(b.size(), [&] { fsm_.on_client_bytes(now_, b); });
  }
  void upstream_bytes(std::string_view b) {
    if (!upstream_readable()) return;
    trace_in("upstream", b);
    step(b.size(), [&] { fsm_.on_upstream_bytes(now_, b); });
  }
  void client_eof() {
    if (client_closed_ || client_eof_ || fsm_.finished()) return;
    client_eof_ = true;
    step(0, [&] { fsm_.on_client_eof(now_); });
  }
  void client_gone() {
    if (client_closed_ || fsm_.finished()) return;
    client_closed_ = true;
    step(0, [&] { fsm_.on_client_gone(now_, "connection reset by peer"); });
  }
  void upstream_eof() {
    if (!upstream_readable()) return;
    upstream_closed_ = true;
    step(0, [&] { fsm_.on_upstream_eof(now_); });
  }
  // A leg's timer fires at its deadline (the clock jumps there if it is not there yet).
  void timeout(leg which) {
    auto& due = timer_due_[which == leg::client ? 0 : 1];
    if (due == 0 || fsm_.finished()) return;
    now_ = std::max(now_, due);
    due = 0;
    step(0, [&] { fsm_.on_timeout(now_, which); });
  }
  void fault_timer() {
    if (fault_due_ == 0 || fsm_.finished()) return;
    now_ = std::max(now_, fault_due_);
    fault_due_ = 0;
    step(0, [&] { fsm_.on_fault_timer(now_); });
  }
  // Answers a start_tls the machine asked for, if one is outstanding on that leg.
  void tls_result(leg which, bool ok) {
    auto& pending = tls_pending_[which == leg::client ? 0 : 1];
    if (!pending || fsm_.finished()) return;
    pending = false;
    if (ok) step(0, [&] { fsm_.on_tls_ready(now_, which, summary()); });
    else step(0, [&] { fsm_.on_tls_failed(now_, which, "handshake failure"); });
  }
  // Answers an await_capture, if one is outstanding: the recorder wrote everything, or failed.
  void capture_settled(bool failed) {
    if (!capture_pending_ || fsm_.finished()) return;
    capture_pending_ = false;
    step(0, [&] { fsm_.on_capture_settled(now_, failed); });
  }
  void drain() {
    if (draining_ || fsm_.finished()) return;
    draining_ = true;
    step(0, [&] { fsm_.on_drain(now_); });
  }
  void drain_deadline() {
    if (!draining_ || fsm_.finished()) return;
    step(0, [&] { fsm_.on_drain_deadline(now_); });
  }

  // Ends the session as the shell would (the client leaves; then the relay gives up if replies
  // are still owed) and checks I-end: one on_end, and nothing at all after it.
  void finish() {
    if (!fsm_.finished()) client_eof();
    if (!fsm_.finished()) step(0, [&] { fsm_.on_abort(now_, "fuzz input over"); });
    FUZZ_CHECK(fsm_.finished(), "I-end: not finished after on_abort");
    FUZZ_CHECK(obs_.ends == 1, "I-end: not exactly one on_end");
    fsm_.on_client_bytes(now_, "NOOP\r\n");
    fsm_.on_upstream_bytes(now_, "250 2.0.0 Ok\r\n");
    fsm_.on_client_eof(now_);
    fsm_.on_client_gone(now_, "gone");
    fsm_.on_upstream_eof(now_);
    fsm_.on_timeout(now_, leg::client);
    fsm_.on_timeout(now_, leg::upstream);
    fsm_.on_fault_timer(now_);
    fsm_.on_drain(now_);
    fsm_.on_drain_deadline(now_);
    FUZZ_CHECK(fsm_.take_actions().empty(), "I-end: actions after the end");
    FUZZ_CHECK(obs_.ends == 1, "I-end: a second on_end");
  }

  // Upstream-bound bytes of the last step (fuzz_relay_client answers them like a server).
  std::string take_upstream_sent() { return std::exchange(upstream_sent_, {}); }

 private:
  void trace_in(const char* from, std::string_view b) const {
    if (std::getenv("MAILTAP_FUZZ_TRACE"))
      std::fprintf(stderr, "%llu us: from %s: %s\n", static_cast<unsigned long long>(now_), from, escape_bytes(b, 1 << 20).c_str());
  }

  static tls_summary summary() {
    tls_summary t;
    t.version = "TLSv1.3";
    t.cipher = "TLS_AES_256_GCM_SHA384";
    return t;
  }

  void collect(std::uint64_t input_bytes) {
    std::uint64_t out = 0;
    static const bool trace = std::getenv("MAILTAP_FUZZ_TRACE") != nullptr;   // replaying a finding
    for (auto& a : fsm_.take_actions()) {
      if (trace) {
        auto* sent = std::get_if<send_bytes>(&a);
        std::string shown = sent ? "send to " + std::string(to_string(sent->to)) + ": " + escape_bytes(sent->bytes, 1 << 20)
                                 : to_string(a);
        std::fprintf(stderr, "%llu us: %s\n", static_cast<unsigned long long>(now_), shown.c_str());
      }
      std::visit(overloaded{
                     [&](const send_bytes& s) {
                       out += s.bytes.size();
                       if (s.to == leg::upstream) {
                         FUZZ_CHECK(connected_ && !upstream_closed_, "send on a closed or unconnected upstream leg");
                         upstream_sent_ += s.bytes;
                       }
                     },
                     [&](const close_leg& c) { (c.which == leg::client ? client_closed_ : upstream_closed_) = true; },
                     [&](const arm_timer& t) {
                       timer_due_[t.which == leg::client ? 0 : 1] =
                           t.after.count() == 0 ? 0 : now_ + static_cast<std::uint64_t>(t.after.count()) * 1000;
                     },
                     [&](const arm_fault_timer& f) {
                       fault_due_ = f.after.count() == 0 ? 0 : now_ + static_cast<std::uint64_t>(f.after.count());
                     },
                     [&](const start_tls& t) { tls_pending_[t.which == leg::client ? 0 : 1] = true; },
                     [&](const connect_upstream&) { connect_asked_ = true; },
                     [&](const pause_reading& p) {
                       if (p.which == leg::client) client_paused_ = p.paused;
                     },
                     // The harness has no recorder to wait for and writes without pacing; the
                     // plaintext fall-back's new connection never comes (the machine waits, as
                     // for a dial that hangs).
                     [&](const await_capture&) { capture_pending_ = true; },
                     [](const capture_barrier&) {}, [](const shape_leg&) {}, [](const segment_break&) {},
                     [](const reconnect_upstream&) {},
                 },
                 a);
    }
    FUZZ_CHECK(out <= step_output_factor * input_bytes + step_output_slack, "I-mem: a step handed out too much");
    FUZZ_CHECK(obs_.ends <= 1, "I-end: more than one on_end");
    FUZZ_CHECK(obs_.unmatched_2xx_end_of_data <= fsm_.stats().blackholed,
               "I-2xx: 2xx to the client for a message the upstream did not accept");
  }

  checking_observer obs_;
  relay_fsm fsm_;
  std::string upstream_sent_;
  std::uint64_t now_ = 1'000'000;
  std::uint64_t timer_due_[2] = {0, 0};
  std::uint64_t fault_due_ = 0;
  bool tls_pending_[2] = {false, false};
  bool connected_ = false;
  bool connect_asked_ = false;
  bool client_paused_ = false;
  bool capture_pending_ = false;
  bool client_closed_ = false, client_eof_ = false, upstream_closed_ = false, draining_ = false;
};

// Session options from one byte: bare_eol mode, TLS offers and modes, the data-rate check,
// AUTH username recording, the client's identity told upstream (a PROXY header and XCLIENT).
inline relay_options options_from(std::uint8_t b) {
  relay_options o;
  const bare_eol_mode modes[] = {bare_eol_mode::strict, bare_eol_mode::normalize, bare_eol_mode::raw};
  o.eol = modes[(b & 3) % 3];
  o.tls.offer_starttls = (b & 4) != 0;
  const upstream_tls_mode up[] = {upstream_tls_mode::mirror, upstream_tls_mode::required,
                                  upstream_tls_mode::opportunistic, upstream_tls_mode::never};
  o.tls.upstream = up[(b >> 3) & 3];
  o.timeouts.min_data_rate = (b & 32) ? 0 : 500;
  o.record_auth_username = (b & 64) != 0;
  if (b & 128) {
    o.upstream_preamble = "PROXY TCP4 192.0.2.10 198.51.100.1 56324 25\r\n";
    o.xclient = xclient_identity{ipv4_bytes{192, 0, 2, 10}, 56324, {}};
  }
  return o;
}

}  // namespace mailtap::fuzz
