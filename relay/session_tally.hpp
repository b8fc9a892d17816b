// The session's share of the process-wide metrics (relay/metrics.hpp): an observer that
// sits between the relay machine and the capture, forwards every call to the capture
// unchanged, and keeps the stage timings and the replies the client received in a small
// buffer of its own. The buffer goes into the shared histograms when it fills and when the
// session ends, so the per-command path writes no shared cache line (relaxed atomics only at
// the flush). With an event hub that has subscribers, it also publishes the session's live
// events (relay/event_hub.hpp): started, each stage, each fault, the end.
// Threading: the session's strand only, like the observer it wraps.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "protocol/observer.hpp"
#include "relay/event_hub.hpp"
#include "relay/metrics.hpp"

namespace mailtap {

class session_tally final : public protocol::session_observer {
 public:
  // `inner` (the capture) and `events` may be null; `metrics` and `events` must outlive the tally.
  session_tally(protocol::session_observer* inner, relay_metrics& metrics, event_hub* events = nullptr,
                std::string session_id = {})
      : inner_(inner), metrics_(metrics), events_(events), session_id_(std::move(session_id)) {}
  ~session_tally() override { flush(); }
  session_tally(const session_tally&) = delete;
  session_tally& operator=(const session_tally&) = delete;

  void on_bytes(std::uint64_t t_us, protocol::leg l, protocol::direction d, std::string_view bytes) override;
  void on_command(std::uint64_t t_us, std::string_view text) override;
  void on_relay_command(std::uint64_t t_us, std::string_view text) override;
  void on_reply(std::uint64_t t_us, protocol::leg l, protocol::direction d, const protocol::reply& r) override;
  void on_note(std::uint64_t t_us, std::string_view text) override;
  void on_tls(std::uint64_t t_us, protocol::leg l, const protocol::tls_summary& tls) override;
  void on_stage(const protocol::stage_record& s) override;
  void on_transaction(const protocol::transaction_record& t) override;
  void on_fault(std::uint64_t t_us, const protocol::fault_event& f) override;
  void on_end(std::uint64_t t_us, std::string_view reason, std::string_view detail) override;

  // Adds what is buffered to the shared metrics and empties the buffer.
  void flush();
  // The session_started event.
  void announce_start(std::string_view client, std::string_view upstream);
  // The session counted and logged its upstream TLS failure itself (a failed handshake, a
  // refused certificate): an upstream_tls_failed end is not counted again.
  void upstream_tls_failure_counted() { upstream_tls_counted_ = true; }

 private:
  struct stage_sample {
    unsigned char phase;
    unsigned char reply_class;   // reply_class_count: no reply ended this stage
    bool timed;                  // false: a reply sent outside any stage, nothing to time
    std::uint64_t total_us, upstream_us, relay_us;
  };
  // A reply the client was sent, not yet paired with the stage it ended.
  struct sent_reply {
    std::uint64_t t_us = 0;
    unsigned char reply_class = 0;
    bool waiting = false;
  };
  // About two messages' stages between flushes. A flush costs the same atomic adds per
  // sample whatever the batch, so a small buffer costs no CPU and saves memory in every
  // session (README "Performance", W6: 24 fewer samples are 768 bytes per session).
  static constexpr std::size_t buffered_samples = 8;
  void record(const stage_sample& sample);
  void settle_unpaired_reply();

  protocol::session_observer* inner_;
  relay_metrics& metrics_;
  event_hub* events_;
  std::string session_id_;
  std::array<stage_sample, buffered_samples> samples_{};
  std::size_t used_ = 0;
  sent_reply last_reply_;
  bool upstream_tls_counted_ = false;
};

}  // namespace mailtap
