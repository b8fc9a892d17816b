// Session ids: the name of each session's capture, and of the session in logs and the API.
#include "relay/session_id.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <random>

namespace mailtap {

bool is_relay_session_id(std::string_view id) {
  auto digits = [&](std::size_t from, std::size_t n) {
    return id.size() >= from + n && std::all_of(id.begin() + static_cast<std::ptrdiff_t>(from),
                                                id.begin() + static_cast<std::ptrdiff_t>(from + n),
                                                [](char c) { return c >= '0' && c <= '9'; });
  };
  auto hex = [&](std::size_t from, std::size_t n) {
    return id.size() >= from + n && std::all_of(id.begin() + static_cast<std::ptrdiff_t>(from),
                                                id.begin() + static_cast<std::ptrdiff_t>(from + n),
                                                [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
  };
  // "20261205-184736-4035eaa4-000004": 8 + 1 + 6 + 1 + 8 + 1, then the number (6 digits or more).
  constexpr std::size_t number_at = 25;
  if (id.size() < number_at + 6) return false;
  return digits(0, 8) && id[8] == '-' && digits(9, 6) && id[15] == '-' && hex(16, 8) && id[24] == '-' &&
         id.size() >= number_at + 6 && digits(number_at, id.size() - number_at);
}

std::string make_session_id(std::uint64_t number) {
  static const std::uint32_t nonce = std::random_device{}();
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  char id[80];
  std::snprintf(id, sizeof id, "%s-%08x-%06llu", stamp, nonce, static_cast<unsigned long long>(number));
  return id;
}

}  // namespace mailtap
