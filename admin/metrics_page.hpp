// GET /metrics: mailtap's metrics in the Prometheus text format (admin/prometheus.hpp), read
// from the relay's counters (relay/metrics.hpp), the capture store's and the fault engine's.
// The families, their labels and meaning are listed in admin/README.md; the output is pinned
// by tests/golden/metrics.prom. Reads atomics with relaxed order: each value is current, the
// set is not one instant. Thread-safe.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "captures/writer.hpp"
#include "policies/engine.hpp"
#include "relay/metrics.hpp"

namespace mailtap::admin {

struct metrics_sources {
  const relay_metrics* relay = nullptr;
  const captures::store_counters* captures = nullptr;   // null: no capture families
  std::vector<policies::fault_counter> faults;          // engine::injected_since_start()
  std::uint64_t fault_decide_errors = 0;
};

std::string render_metrics(const metrics_sources& sources);

// The exposition's Content-Type.
inline constexpr const char* metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace mailtap::admin
