// Relay markers of the capture index (relay_marker.hpp).
#include "captures/relay_marker.hpp"

#include <unistd.h>

#include <charconv>
#include <fstream>
#include <sstream>

namespace mailtap::captures {

std::optional<std::uint64_t> process_start_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // "PID (COMM) STATE ..." where COMM may hold spaces and parentheses: fields count from the last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  for (int n = 3; n <= 22 && fields >> field; ++n)
    if (n == 22) {
      std::uint64_t ticks = 0;
      if (std::from_chars(field.data(), field.data() + field.size(), ticks).ec == std::errc{}) return ticks;
    }
  return std::nullopt;
}

std::string own_relay_marker() {
  const pid_t pid = ::getpid();
  return std::string(relay_marker_prefix) + std::to_string(pid) + ":" + std::to_string(process_start_ticks(pid).value_or(0));
}

bool relay_marker_alive(std::string_view key) {
  if (!key.starts_with(relay_marker_prefix)) return false;
  key.remove_prefix(relay_marker_prefix.size());
  const auto colon = key.find(':');
  if (colon == std::string_view::npos) return false;
  long long pid = 0;
  std::uint64_t start = 0;
  if (std::from_chars(key.data(), key.data() + colon, pid).ec != std::errc{} || pid <= 0) return false;
  if (std::from_chars(key.data() + colon + 1, key.data() + key.size(), start).ec != std::errc{}) return false;
  const auto now = process_start_ticks(static_cast<pid_t>(pid));
  return now && *now == start;
}

}  // namespace mailtap::captures
