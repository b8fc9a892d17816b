// Normalised parts of state keys: addresses compare case-insensitively (postgrey lowercases
// its triples), and an envelope's recipients are sorted so their order does not matter.
#include <algorithm>

#include "policies/types/types.hpp"

namespace mailtap::policies::types {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

}  // namespace

std::string state_sender(const protocol::fault_query& q) {
  return lower(q.ph == protocol::phase::mail ? q.address : q.mail_from);
}

std::string state_recipients(const protocol::fault_query& q, char separator) {
  std::vector<std::string> all;
  for (const auto& r : q.recipients) all.push_back(lower(r));
  if (q.ph == protocol::phase::rcpt) all.push_back(lower(q.address));
  std::sort(all.begin(), all.end());
  std::string out;
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (i) out += separator;
    out += all[i];
  }
  return out;
}

}  // namespace mailtap::policies::types
