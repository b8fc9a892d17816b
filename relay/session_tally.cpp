// Forward to the capture, buffer the session's stage timings and reply classes, flush them.
#include "relay/session_tally.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>

#include "captures/show.hpp"
#include "protocol/relay_fsm.hpp"

namespace mailtap {

namespace {

// An event: its type, the session, the wall clock in Unix milliseconds, then its own fields.
boost::json::object event_of(const char* type, const std::string& session) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch()).count();
  return {{"type", type}, {"session", session}, {"unix_ms", ms}};
}

constexpr unsigned char no_reply = reply_class_count;
const auto other_phase = static_cast<unsigned char>(protocol::phase::other);

// 1..5 for a reply that starts with its code's first digit (RFC 5321 4.2: every reply does).
unsigned char class_of(std::string_view reply_bytes) {
  if (reply_bytes.empty() || reply_bytes[0] < '1' || reply_bytes[0] > '5') return 0;
  return static_cast<unsigned char>(reply_bytes[0] - '0');
}

}  // namespace

void session_tally::on_bytes(std::uint64_t t_us, protocol::leg l, protocol::direction d, std::string_view bytes) {
  // Everything the relay writes to the client is a reply, one per call (relay_fsm::send):
  // remember its class for the stage record that follows it at the same instant.
  if (l == protocol::leg::client && d == protocol::direction::out) {
    settle_unpaired_reply();
    last_reply_ = {t_us, class_of(bytes), true};
  }
  if (inner_) inner_->on_bytes(t_us, l, d, bytes);
}

void session_tally::on_command(std::uint64_t t_us, std::string_view text) {
  if (inner_) inner_->on_command(t_us, text);
}

void session_tally::on_relay_command(std::uint64_t t_us, std::string_view text) {
  if (inner_) inner_->on_relay_command(t_us, text);
}

void session_tally::on_reply(std::uint64_t t_us, protocol::leg l, protocol::direction d, const protocol::reply& r) {
  if (inner_) inner_->on_reply(t_us, l, d, r);
}

void session_tally::on_note(std::uint64_t t_us, std::string_view text) {
  if (inner_) inner_->on_note(t_us, text);
}

void session_tally::announce_start(std::string_view client, std::string_view upstream) {
  if (!events_ || !events_->has_subscribers()) return;
  auto e = event_of("session_started", session_id_);
  e["client"] = captures::utf8_safe(client);
  e["upstream"] = upstream;
  events_->publish(boost::json::serialize(e));
}

void session_tally::on_tls(std::uint64_t t_us, protocol::leg l, const protocol::tls_summary& tls) {
  metrics_.tls_handshakes[static_cast<std::size_t>(l)].fetch_add(1, std::memory_order_relaxed);
  if (inner_) inner_->on_tls(t_us, l, tls);
}

void session_tally::on_stage(const protocol::stage_record& s) {
  // A stage that ends with a reply ends at the instant that reply was sent (flush_replies,
  // release_banner); any other reply still unpaired was sent outside a stage.
  unsigned char reply_class = no_reply;
  if (last_reply_.waiting && last_reply_.t_us == s.start_us + s.duration_us) {
    reply_class = last_reply_.reply_class;
    last_reply_.waiting = false;
  }
  settle_unpaired_reply();
  const std::uint64_t busy = s.upstream_us + s.client_us;
  const std::uint64_t relay = s.duration_us > busy ? s.duration_us - busy : 0;
  record({static_cast<unsigned char>(s.ph), reply_class, true, s.duration_us, s.upstream_us, relay});
  if (events_ && events_->has_subscribers()) {
    auto e = event_of("stage", session_id_);
    e["stage"] = protocol::to_string(s.ph);
    e["start_us"] = s.start_us;
    e["duration_us"] = s.duration_us;
    e["upstream_us"] = s.upstream_us;
    e["relay_us"] = relay;
    e["reply_class"] = reply_class == no_reply ? boost::json::value(nullptr) : boost::json::value(reply_class);
    events_->publish(boost::json::serialize(e));
  }
  if (inner_) inner_->on_stage(s);
}

void session_tally::on_transaction(const protocol::transaction_record& t) {
  if (inner_) inner_->on_transaction(t);
}

void session_tally::on_fault(std::uint64_t t_us, const protocol::fault_event& f) {
  if (events_ && events_->has_subscribers()) {
    auto e = event_of("fault", session_id_);
    e["t_us"] = t_us;
    e["rule"] = captures::utf8_safe(f.rule);
    e["fault_type"] = f.type;
    e["decision"] = f.decision;
    e["stage"] = protocol::to_string(f.ph);
    e["detail"] = captures::utf8_safe(f.detail);
    events_->publish(boost::json::serialize(e));
  }
  if (inner_) inner_->on_fault(t_us, f);
}

// An upstream that broke the protocol, timed out, refused at its greeting or hung up without
// 421 is outside the client's control: logged at warn with the session id (README "Logging").
// An orderly 421 from the upstream is the destination's answer, not a failure of the path.
static bool upstream_failed(std::string_view reason, std::string_view detail) {
  // An injected failure (upstream_unreachable with mode no_greeting) is the test's, not the path's.
  if (detail.find(protocol::injected_by_rule) != std::string_view::npos) return false;
  if (reason == "upstream_protocol_error" || reason == "upstream_timeout" || reason == "upstream_refused") return true;
  // upstream_closed's details (captures/FORMAT.md "End reasons"): a hang-up or a loss is a
  // failure; a 421 (its detail the upstream's own text, or "upstream said 421 ...") is not.
  return reason == "upstream_closed" &&
         (detail.starts_with(protocol::upstream_closed_detail) || detail.starts_with(protocol::upstream_lost_detail));
}

void session_tally::on_end(std::uint64_t t_us, std::string_view reason, std::string_view detail) {
  settle_unpaired_reply();
  if (reason == "upstream_tls_failed" && !upstream_tls_counted_) {
    // Failed before any handshake (required TLS, and the upstream offers no STARTTLS or
    // refuses it): as much the operator's to know as a failed handshake (README "Logging").
    ++metrics_.upstream_tls_failed;
    warn_limited(metrics_.warnings, warn_kind::upstream_tls_failed,
                 "session " + session_id_ + ": upstream TLS failed: " + captures::utf8_safe(detail));
  }
  if (upstream_failed(reason, detail)) {
    ++metrics_.upstream_failed;
    warn_limited(metrics_.warnings, warn_kind::upstream_failed,
                 "session " + session_id_ + ": " + std::string(reason) + (detail.empty() ? "" : ": " + captures::utf8_safe(detail)));
  }
  if (events_ && events_->has_subscribers()) {
    auto e = event_of("session_ended", session_id_);
    e["t_us"] = t_us;
    e["reason"] = captures::utf8_safe(reason);
    e["detail"] = captures::utf8_safe(detail);
    events_->publish(boost::json::serialize(e));
  }
  if (inner_) inner_->on_end(t_us, reason, detail);
}

// A reply sent with no stage of its own (a 421 as the session closes, a refusal before the
// banner): counted under `other`, as a reply without a time.
void session_tally::settle_unpaired_reply() {
  if (!last_reply_.waiting) return;
  last_reply_.waiting = false;
  record({other_phase, last_reply_.reply_class, false, 0, 0, 0});
}

void session_tally::record(const stage_sample& sample) {
  if (used_ == samples_.size()) flush();
  samples_[used_++] = sample;
}

void session_tally::flush() {
  for (std::size_t i = 0; i < used_; ++i) {
    const auto& s = samples_[i];
    if (s.reply_class != no_reply) metrics_.replies[s.phase][s.reply_class].fetch_add(1, std::memory_order_relaxed);
    if (!s.timed) continue;
    auto& h = metrics_.stage_latency[s.phase];
    h[static_cast<std::size_t>(stage_part::total)].observe(s.total_us);
    h[static_cast<std::size_t>(stage_part::upstream)].observe(s.upstream_us);
    h[static_cast<std::size_t>(stage_part::relay)].observe(s.relay_us);
  }
  used_ = 0;
}

}  // namespace mailtap
