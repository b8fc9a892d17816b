// Queue ids in end-of-data replies, one small parser per phrasing, tried in order.
#include "diagnose/handoff.hpp"

#include <cctype>
#include <vector>

namespace mailtap::diagnose {

namespace {

// A queue id is a run of letters, digits and the separators MTAs use ('-', '_', '.').
constexpr std::size_t queue_id_cap = 128;

bool id_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The id right after `marker` (case-insensitive), or "".
std::string id_after(std::string_view text, std::string_view marker) {
  auto at = lower(text).find(marker);
  if (at == std::string::npos) return "";
  std::size_t i = at + marker.size(), j = i;
  while (j < text.size() && j - i < queue_id_cap && id_char(text[j])) ++j;
  std::string id(text.substr(i, j - i));
  while (!id.empty() && id.back() == '.') id.pop_back();   // "queued as ABC." ends a sentence
  return id;
}

std::vector<std::string> words(std::string_view text) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && text[i] == ' ') ++i;
    std::size_t j = i;
    while (j < text.size() && text[j] != ' ') ++j;
    if (j > i) out.emplace_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

bool plausible_id(const std::string& w) {
  if (w.size() < 6 || w.size() > queue_id_cap) return false;
  bool digit = false;
  for (char c : w) {
    if (!id_char(c)) return false;
    digit = digit || std::isdigit(static_cast<unsigned char>(c));
  }
  return digit;
}

}  // namespace

std::optional<queue_id> parse_queue_id(std::string_view text) {
  if (auto id = id_after(text, "queued as "); !id.empty()) return queue_id{id, "postfix"};
  if (auto id = id_after(text, "internalid="); !id.empty()) return queue_id{id, "microsoft"};
  if (auto id = id_after(text, "id="); !id.empty()) return queue_id{id, "exim"};
  const std::string t = lower(text);
  auto w = words(text);
  if (t.find("gsmtp") != std::string::npos) {
    // "OK  1700000000 a1-20020a05600c...- gsmtp": the id is the word before "gsmtp" (its
    // trailing '-' dropped), the number before it a timestamp.
    for (std::size_t i = 1; i < w.size(); ++i)
      if (lower(w[i]) == "gsmtp" || lower(w[i]) == "-") {
        std::string id = w[i - 1];
        while (!id.empty() && id.back() == '-') id.pop_back();
        if (plausible_id(id)) return queue_id{id, "gmail"};
      }
  }
  if (t.find("message accepted for delivery") != std::string::npos)
    for (const auto& word : w)
      if (plausible_id(word)) return queue_id{word, "sendmail"};
  return std::nullopt;
}

}  // namespace mailtap::diagnose
