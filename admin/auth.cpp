// Bearer tokens of the admin API (admin/auth.hpp).
#include "admin/auth.hpp"

#include <algorithm>
#include <cctype>

namespace mailtap::admin {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequal_prefix(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), text.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
         });
}

// Calls `each` on every entry of a comma-separated header list, trimmed.
template <typename Each>
void for_each_listed(std::string_view list, Each&& each) {
  while (!list.empty()) {
    const auto comma = list.find(',');
    each(trim(list.substr(0, comma)));
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
  }
}

}  // namespace

bool token_equal(std::string_view presented, std::string_view expected) {
  // Every byte of `expected` is compared, whatever `presented` is: an early exit would tell
  // a remote guesser how many leading bytes were right.
  volatile unsigned char diff = presented.size() == expected.size() ? 0 : 1;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const unsigned char got = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    diff = static_cast<unsigned char>(diff | (got ^ static_cast<unsigned char>(expected[i])));
  }
  return diff == 0 && !expected.empty();
}

std::string bearer_token_of(std::string_view authorization) {
  authorization = trim(authorization);
  constexpr std::string_view scheme = "bearer ";
  if (!iequal_prefix(authorization, scheme)) return "";
  return std::string(trim(authorization.substr(scheme.size())));
}

std::string subprotocol_token_of(std::string_view offered) {
  std::string token;
  for_each_listed(offered, [&](std::string_view entry) {
    if (token.empty() && entry.size() > token_subprotocol_prefix.size() &&
        entry.substr(0, token_subprotocol_prefix.size()) == token_subprotocol_prefix)
      token = std::string(entry.substr(token_subprotocol_prefix.size()));
  });
  return token;
}

bool subprotocol_offered(std::string_view offered, std::string_view name) {
  bool found = false;
  for_each_listed(offered, [&](std::string_view entry) { found = found || entry == name; });
  return found;
}

response unauthorized(bool presented) {
  auto r = error_response(401, presented ? "wrong admin token"
                                         : "this admin API needs its token: send Authorization: Bearer TOKEN");
  r.headers.emplace_back("WWW-Authenticate", presented ? "Bearer realm=\"mailtap\", error=\"invalid_token\""
                                                       : "Bearer realm=\"mailtap\"");
  return r;
}

}  // namespace mailtap::admin
