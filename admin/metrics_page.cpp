// Which metrics /metrics shows, named and labelled (admin/README.md lists them).
#include "admin/metrics_page.hpp"

#include <array>

#include "admin/prometheus.hpp"
#include "protocol/action.hpp"

namespace mailtap::admin {

namespace {

using prometheus::metric_type;
using prometheus::writer;

std::uint64_t get(const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); }

void one_counter(writer& w, const char* name, const char* help, std::uint64_t value) {
  w.family(name, metric_type::counter, help);
  w.sample(name, {}, value);
}

std::string_view leg_name(std::size_t i) { return protocol::to_string(static_cast<protocol::leg>(i)); }

std::string class_name(std::size_t c) { return c == 0 ? "other" : std::to_string(c) + "xx"; }

std::array<double, stage_bucket_bounds_us.size()> bounds_in_seconds() {
  std::array<double, stage_bucket_bounds_us.size()> out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(stage_bucket_bounds_us[i]) / 1e6;
  return out;
}

void sessions(writer& w, const relay_metrics& m) {
  w.family("mailtap_sessions_active", metric_type::gauge, "SMTP sessions open now.");
  w.sample("mailtap_sessions_active", {}, get(m.sessions_active));
  w.family("mailtap_proxy_headers_pending", metric_type::gauge,
           "Connections accepted with listen_proxy_protocol that have not sent their PROXY header yet (they count "
           "toward max_sessions).");
  w.sample("mailtap_proxy_headers_pending", {}, get(m.proxy_headers_pending));
  one_counter(w, "mailtap_sessions_total", "SMTP connections accepted (including those refused at once).",
              get(m.sessions_accepted));
  w.family("mailtap_sessions_refused_total", metric_type::counter,
           "Connections answered 421 and closed: max_sessions open, no valid PROXY protocol header, or mailtap's "
           "own upstream connection sent back to it (a mail loop).");
  w.sample("mailtap_sessions_refused_total", {{"reason", "max_sessions"}}, get(m.sessions_refused_max));
  w.sample("mailtap_sessions_refused_total", {{"reason", "proxy_header"}}, get(m.proxy_header_refused));
  w.sample("mailtap_sessions_refused_total", {{"reason", "loop"}}, get(m.sessions_refused_loop));
  one_counter(w, "mailtap_session_errors_total", "Sessions ended by an unexpected error.", get(m.session_errors));
  one_counter(w, "mailtap_transactions_total", "Mail transactions (MAIL FROM) relayed.", get(m.transactions));
  one_counter(w, "mailtap_messages_delivered_total", "Messages the destination accepted.", get(m.messages_delivered));
  one_counter(w, "mailtap_commands_refused_total", "Client commands the relay refused and never forwarded.",
              get(m.refused_commands));
  one_counter(w, "mailtap_client_timeouts_total", "Clients timed out: idle, a slow command line, data below min_data_rate.",
              get(m.client_timeouts));
}

void stages(writer& w, const relay_metrics& m) {
  static const auto bounds = bounds_in_seconds();
  struct part_family { stage_part part; const char* name; const char* help; };
  const part_family families[] = {
      {stage_part::total, "mailtap_stage_duration_seconds",
       "Stage latency: from the stage's first byte in to its reply out (tls: the handshake)."},
      {stage_part::upstream, "mailtap_stage_upstream_seconds", "The part of each stage spent waiting on the upstream."},
      {stage_part::relay, "mailtap_stage_relay_seconds",
       "The part of each stage the relay added (the duration less the upstream wait and the sender busy)."},
  };
  for (const auto& f : families) {
    w.family(f.name, metric_type::histogram, f.help);
    for (std::size_t ph = 0; ph < phase_count; ++ph) {
      const auto& h = m.stage_latency[ph][static_cast<std::size_t>(f.part)];
      if (get(h.count) == 0) continue;
      std::array<std::uint64_t, stage_bucket_bounds_us.size() + 1> counts{};
      for (std::size_t i = 0; i < counts.size(); ++i) counts[i] = get(h.buckets[i]);
      w.histogram(f.name, {{"stage", std::string(protocol::to_string(static_cast<protocol::phase>(ph)))}}, bounds,
                  counts, static_cast<double>(get(h.sum_us)) / 1e6);
    }
  }
}

void replies(writer& w, const relay_metrics& m) {
  w.family("mailtap_replies_total", metric_type::counter,
           "Replies the client received, by the stage they answered (other: outside a stage) and code class.");
  for (std::size_t ph = 0; ph < phase_count; ++ph)
    for (std::size_t c = 0; c < reply_class_count; ++c)
      if (auto n = get(m.replies[ph][c]); n > 0)
        w.sample("mailtap_replies_total",
                 {{"stage", std::string(protocol::to_string(static_cast<protocol::phase>(ph)))}, {"class", class_name(c)}},
                 n);
}

void faults(writer& w, const metrics_sources& s) {
  w.family("mailtap_faults_injected_total", metric_type::counter,
           "Faults injected since start, by rule name and fault type (a rule reset, removed or reloaded keeps its count).");
  for (const auto& c : s.faults) w.sample("mailtap_faults_injected_total", {{"rule", c.rule}, {"type", c.type}}, c.count);
  one_counter(w, "mailtap_fault_decide_errors_total", "Fault decisions that failed inside the engine and fell back to proceed.",
              s.fault_decide_errors);
}

void upstream_and_tls(writer& w, const relay_metrics& m) {
  one_counter(w, "mailtap_upstream_connect_failures_total", "Upstream connections that could not be opened.",
              get(m.upstream_unreachable));
  w.family("mailtap_tls_handshakes_total", metric_type::counter, "TLS handshakes completed, by leg.");
  for (std::size_t l = 0; l < 2; ++l) w.sample("mailtap_tls_handshakes_total", {{"leg", std::string(leg_name(l))}}, get(m.tls_handshakes[l]));
  w.family("mailtap_tls_failures_total", metric_type::counter,
           "TLS handshakes that failed or timed out, or whose upstream certificate was not accepted, by leg.");
  w.sample("mailtap_tls_failures_total", {{"leg", "client"}}, get(m.client_tls_failed));
  w.sample("mailtap_tls_failures_total", {{"leg", "upstream"}}, get(m.upstream_tls_failed) + get(m.upstream_cert_refused));
}

void capture_store(writer& w, const captures::store_counters& c) {
  one_counter(w, "mailtap_capture_bytes_written_total", "Capture bytes written to files.", get(c.bytes_written));
  one_counter(w, "mailtap_capture_write_failures_total", "Capture files that could not be created, written or synced.",
              get(c.write_failures));
  one_counter(w, "mailtap_capture_records_dropped_total", "Capture records dropped because the writer queue was full.",
              get(c.dropped_records));
  w.family("mailtap_captures_total", metric_type::counter, "Captures closed, complete or incomplete.");
  w.sample("mailtap_captures_total", {{"result", "complete"}}, get(c.complete));
  w.sample("mailtap_captures_total", {{"result", "incomplete"}}, get(c.incomplete));
}

void reloads(writer& w, const relay_metrics& m) {
  w.family("mailtap_reloads_total", metric_type::counter, "SIGHUP reloads, by result.");
  w.sample("mailtap_reloads_total", {{"result", "ok"}}, get(m.reloads_ok));
  w.sample("mailtap_reloads_total", {{"result", "failed"}}, get(m.reloads_failed));
  one_counter(w, "mailtap_reload_removed_api_rules_total",
              "Fault rules armed over the admin API that a SIGHUP reload removed (a reload arms the files' rules only).",
              get(m.reload_removed_api_rules));
}

}  // namespace

std::string render_metrics(const metrics_sources& s) {
  writer w;
  if (s.relay) {
    sessions(w, *s.relay);
    stages(w, *s.relay);
    replies(w, *s.relay);
  }
  faults(w, s);
  if (s.relay) upstream_and_tls(w, *s.relay);
  if (s.captures) capture_store(w, *s.captures);
  if (s.relay) reloads(w, *s.relay);
  return w.text();
}

}  // namespace mailtap::admin
