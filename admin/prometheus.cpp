// Writing the text exposition format (admin/prometheus.hpp).
#include "admin/prometheus.hpp"

#include <charconv>
#include <cmath>

namespace mailtap::admin::prometheus {

namespace {

std::string_view type_name(metric_type t) {
  switch (t) {
    case metric_type::counter: return "counter";
    case metric_type::gauge: return "gauge";
    case metric_type::histogram: return "histogram";
  }
  return "untyped";
}

// HELP text escapes only backslash and newline (the format's rule for docstrings).
std::string escape_help(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

}  // namespace

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_double(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (std::isnan(value)) return "NaN";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::general);
  return ec == std::errc() ? std::string(buf, end) : "NaN";
}

void writer::family(std::string_view name, metric_type type, std::string_view help) {
  out_.append("# HELP ").append(name).append(" ").append(escape_help(help)).append("\n");
  out_.append("# TYPE ").append(name).append(" ").append(type_name(type)).append("\n");
}

void writer::labels(const label_set& set, std::string_view extra_name, std::string_view extra_value) {
  if (set.empty() && extra_name.empty()) return;
  out_ += '{';
  bool first = true;
  auto one = [&](std::string_view n, std::string_view v) {
    if (!first) out_ += ',';
    first = false;
    out_.append(n).append("=\"").append(escape_label_value(v)).append("\"");
  };
  for (const auto& [n, v] : set) one(n, v);
  if (!extra_name.empty()) one(extra_name, extra_value);
  out_ += '}';
}

void writer::sample(std::string_view name, const label_set& set, std::uint64_t value) {
  out_.append(name);
  labels(set);
  out_.append(" ").append(std::to_string(value)).append("\n");
}

void writer::sample(std::string_view name, const label_set& set, double value) {
  out_.append(name);
  labels(set);
  out_.append(" ").append(format_double(value)).append("\n");
}

void writer::histogram(std::string_view name, const label_set& set, std::span<const double> upper_bounds,
                       std::span<const std::uint64_t> counts, double sum) {
  const std::string bucket = std::string(name) + "_bucket";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    out_.append(bucket);
    labels(set, "le", i < upper_bounds.size() ? format_double(upper_bounds[i]) : "+Inf");
    out_.append(" ").append(std::to_string(cumulative)).append("\n");
  }
  sample(std::string(name) + "_sum", set, sum);
  sample(std::string(name) + "_count", set, cumulative);
}

}  // namespace mailtap::admin::prometheus
