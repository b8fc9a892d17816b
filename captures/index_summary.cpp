// The index summary of a session (index_summary.hpp): one builder for the writer thread and
// for captures read back, and the few text forms the index stores and searches.
#include "captures/index_summary.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>

#include "captures/reader.hpp"
#include "captures/utf8_text.hpp"

namespace mailtap::captures {

void summary_builder::header(std::string_view session, std::string_view file, std::int64_t started_at_us,
                             std::string_view client, std::string_view upstream) {
  s_.session = session;
  s_.file = file;
  s_.started_at_us = started_at_us;
  s_.client = client;
  s_.client_ip = address_of_endpoint(client);
  s_.upstream = upstream;
}

void summary_builder::reply(int code, std::string_view enhanced) { s_.replies.emplace_back(code, std::string(enhanced)); }

void summary_builder::transaction(indexed_transaction t) {
  // As the capture's transaction record has them (utf8_text.hpp), so that a live index and
  // one rebuilt from the files agree, and list --json is JSON.
  t.mail_from = utf8_or_escaped(t.mail_from);
  for (auto& r : t.rcpt_to) r = utf8_or_escaped(r);
  t.message_id = bare_message_id(utf8_or_escaped(t.message_id));
  s_.transactions.push_back(std::move(t));
}

void summary_builder::fault(std::string_view rule) {
  if (!rule.empty()) s_.rules.emplace_back(rule);
}

void summary_builder::end(std::string_view reason, std::int64_t ended_at_us, bool complete) {
  s_.end_reason = reason;
  s_.ended_at_us = ended_at_us;
  s_.complete = complete;
}

session_summary summary_builder::finish() && {
  auto distinct = [](auto& v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  };
  distinct(s_.replies);
  distinct(s_.rules);
  // FORMAT.md "Session outcome", as reader.cpp session_outcome.
  s_.outcome = s_.transactions.empty() ? "none" : "delivered";
  for (const auto& t : s_.transactions)
    if (t.outcome != "delivered") {
      s_.outcome = t.outcome;
      break;
    }
  return std::move(s_);
}

session_summary summarize(const capture& c) {
  summary_builder b;
  b.header(c.header.session, c.path.filename().string(), parse_rfc3339_us(c.header.started_at).value_or(0),
           c.header.client, c.header.upstream);
  for (const auto& e : c.events) {
    if (const auto* r = std::get_if<reply_event>(&e)) b.reply(r->reply.code, r->reply.enhanced);
    else if (const auto* f = std::get_if<fault_event>(&e)) b.fault(f->fault.rule);
  }
  for (const auto& t : c.transactions) {
    indexed_transaction it{t.mail_from, t.rcpt_to, t.rcpt_codes, t.message_id.value_or(""),
                           std::string(protocol::to_string(t.result)), 0, "", t.without_mail};
    if (t.final_reply) {
      it.final_code = t.final_reply->code;
      it.final_enhanced = t.final_reply->enhanced;
    }
    b.transaction(std::move(it));
  }
  if (c.end) b.end(c.end->reason, parse_rfc3339_us(c.end->ended_at).value_or(0), c.complete);
  return std::move(b).finish();
}

namespace {

bool digits(std::string_view s, std::size_t at, std::size_t n, int& out) {
  if (at + n > s.size()) return false;
  out = 0;
  for (std::size_t i = at; i < at + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

}  // namespace

std::optional<std::int64_t> parse_rfc3339_us(std::string_view s) {
  int year, month, day, hour = 0, minute = 0, second = 0;
  if (!digits(s, 0, 4, year) || s.size() < 10 || s[4] != '-' || !digits(s, 5, 2, month) || s[7] != '-' ||
      !digits(s, 8, 2, day))
    return std::nullopt;
  // The day must be in its month (timegm would make 2026-02-31 the 3rd of March).
  constexpr int days_in[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12 || day < 1) return std::nullopt;
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (day > days_in[month - 1] + (month == 2 && leap ? 1 : 0)) return std::nullopt;
  std::size_t at = 10;
  std::int64_t fraction_us = 0, offset_s = 0;
  if (at < s.size()) {
    if ((s[at] != 'T' && s[at] != 't' && s[at] != ' ') || !digits(s, at + 1, 2, hour) || s.size() < at + 9 ||
        s[at + 3] != ':' || !digits(s, at + 4, 2, minute) || s[at + 6] != ':' || !digits(s, at + 7, 2, second))
      return std::nullopt;
    if (hour > 23 || minute > 59 || second > 60) return std::nullopt;
    at += 9;
    if (at < s.size() && s[at] == '.') {
      std::int64_t scale = 100'000;
      std::size_t n = 0;
      for (++at; at < s.size() && std::isdigit(static_cast<unsigned char>(s[at])); ++at, ++n) {
        fraction_us += (s[at] - '0') * scale;
        scale /= 10;
      }
      if (n == 0) return std::nullopt;
    }
    if (at < s.size() && (s[at] == 'Z' || s[at] == 'z')) {
      ++at;
    } else if (at < s.size() && (s[at] == '+' || s[at] == '-')) {
      int oh, om;
      if (!digits(s, at + 1, 2, oh) || s.size() < at + 6 || s[at + 3] != ':' || !digits(s, at + 4, 2, om))
        return std::nullopt;
      offset_s = (s[at] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
      at += 6;
    } else {
      return std::nullopt;   // a time without its zone is ambiguous
    }
  }
  if (at != s.size()) return std::nullopt;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  const std::time_t secs = ::timegm(&tm);
  return (static_cast<std::int64_t>(secs) - offset_s) * 1'000'000 + fraction_us;
}

std::string format_rfc3339_us(std::int64_t us) {
  std::time_t secs = static_cast<std::time_t>(us >= 0 ? us / 1'000'000 : (us - 999'999) / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(us - static_cast<std::int64_t>(secs) * 1'000'000));
  return buf;
}

std::string bare_message_id(std::string_view id) {
  while (!id.empty() && (id.front() == ' ' || id.front() == '\t')) id.remove_prefix(1);
  while (!id.empty() && (id.back() == ' ' || id.back() == '\t')) id.remove_suffix(1);
  if (id.size() >= 2 && id.front() == '<' && id.back() == '>') id = id.substr(1, id.size() - 2);
  return std::string(id);
}

std::string address_of_endpoint(std::string_view endpoint) {
  if (!endpoint.empty() && endpoint.front() == '[') {
    const auto close = endpoint.find(']');
    return std::string(endpoint.substr(1, close == std::string_view::npos ? std::string_view::npos : close - 1));
  }
  const auto colon = endpoint.rfind(':');
  // One colon: "ip:port". More: a bare IPv6 address without a port.
  if (colon != std::string_view::npos && endpoint.find(':') == colon) return std::string(endpoint.substr(0, colon));
  return std::string(endpoint);
}

}  // namespace mailtap::captures
