// The Prometheus text exposition format, version 0.0.4 (prometheus.io/docs/instrumenting/
// exposition_formats), written by hand: HELP and TYPE lines once per family, label values
// escaped (backslash, double quote, newline), histograms as cumulative `_bucket{le=...}`
// series with `+Inf`, then `_sum` and `_count`. Knows nothing about mailtap's metrics
// (admin/metrics_page.hpp picks them). Pure; a writer belongs to one thread.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mailtap::admin::prometheus {

using label_set = std::vector<std::pair<std::string_view, std::string>>;

enum class metric_type { counter, gauge, histogram };

class writer {
 public:
  // Starts a family: its `# HELP` and `# TYPE` lines. Samples that follow belong to it.
  void family(std::string_view name, metric_type type, std::string_view help);
  void sample(std::string_view name, const label_set& labels, std::uint64_t value);
  void sample(std::string_view name, const label_set& labels, double value);
  // One histogram series: `upper_bounds` in the family's unit, `counts` one per bound plus
  // the +Inf bucket, each not cumulative (the writer sums them), `sum` in the same unit.
  void histogram(std::string_view name, const label_set& labels, std::span<const double> upper_bounds,
                 std::span<const std::uint64_t> counts, double sum);
  const std::string& text() const { return out_; }

 private:
  void labels(const label_set& labels, std::string_view extra_name = {}, std::string_view extra_value = {});
  std::string out_;
};

// A label value as the format wants it: \ -> \\, " -> \", newline -> \n.
std::string escape_label_value(std::string_view value);
// A number in its shortest round-trip form, fixed notation where %g would use it (0.0005), +Inf.
std::string format_double(double value);

}  // namespace mailtap::admin::prometheus
