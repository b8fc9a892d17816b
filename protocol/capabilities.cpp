// EHLO capability list parsing and editing.
#include "protocol/capabilities.hpp"

#include <algorithm>

#include "protocol/command.hpp"

namespace mailtap::protocol {

capabilities capabilities::from_reply(const reply& r) {
  capabilities caps;
  if (r.lines.empty()) return caps;
  caps.greeting_ = r.lines.front();
  for (std::size_t i = 1; i < r.lines.size(); ++i) {
    std::string_view line = r.lines[i];
    auto sp = line.find(' ');
    capability c;
    c.keyword = std::string(line.substr(0, sp));
    if (sp != std::string_view::npos) c.params = std::string(line.substr(sp + 1));
    caps.list_.push_back(std::move(c));
  }
  return caps;
}

bool capabilities::has(std::string_view keyword) const {
  return std::any_of(list_.begin(), list_.end(),
                     [&](const capability& c) { return iequals(c.keyword, keyword); });
}

std::optional<std::string> capabilities::params(std::string_view keyword) const {
  for (const auto& c : list_)
    if (iequals(c.keyword, keyword)) return c.params;
  return std::nullopt;
}

bool capabilities::remove(std::string_view keyword) {
  auto before = list_.size();
  std::erase_if(list_, [&](const capability& c) { return iequals(c.keyword, keyword); });
  return list_.size() != before;
}

bool capabilities::rename(std::string_view keyword, std::string_view shown) {
  bool found = false;
  for (auto& c : list_)
    if (iequals(c.keyword, keyword)) {
      c.keyword = std::string(shown);
      found = true;
    }
  return found;
}

void capabilities::set(std::string_view keyword, std::string_view p) {
  for (auto& c : list_)
    if (iequals(c.keyword, keyword)) {
      c.params = std::string(p);
      return;
    }
  list_.push_back({std::string(keyword), std::string(p)});
}

std::string capabilities::to_reply_bytes() const {
  std::string out = "250";
  out += list_.empty() ? ' ' : '-';
  out += greeting_;
  out += "\r\n";
  for (std::size_t i = 0; i < list_.size(); ++i) {
    out += "250";
    out += i + 1 == list_.size() ? ' ' : '-';
    out += list_[i].keyword;
    if (!list_[i].params.empty()) {
      out += ' ';
      out += list_[i].params;
    }
    out += "\r\n";
  }
  return out;
}

}  // namespace mailtap::protocol
