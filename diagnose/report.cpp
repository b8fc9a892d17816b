// Text and JSON renderings of a diagnosis. Times print from integer microseconds, as in
// `mailtap show`, so the output is the same on every platform.
#include "diagnose/report.hpp"

#include <boost/json.hpp>
#include <cstdio>

#include "captures/show.hpp"

namespace mailtap::diagnose {

namespace {

namespace json = boost::json;

// Text layout: labels in a column of this width, prose wrapped at text_width columns.
constexpr std::size_t label_width = 11;
constexpr std::size_t text_width = 100;
// Evidence rows shown per finding in text (the JSON has them all, up to json_evidence_cap).
constexpr std::size_t text_evidence_rows = 6;
constexpr std::size_t json_evidence_cap = 200;

std::string ms(std::uint64_t us) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%llu.%03llu", static_cast<unsigned long long>(us / 1000),
                static_cast<unsigned long long>(us % 1000));
  return buf;
}

std::string pad_left(std::string s, std::size_t width) {
  if (s.size() < width) s.insert(0, width - s.size(), ' ');
  return s;
}

std::string pad_right(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

// `label` then `text` wrapped at text_width, continuation lines indented under the text.
std::string labelled(std::string_view label, const std::string& text) {
  std::string out = "  " + pad_right(std::string(label), label_width - 2);
  std::size_t col = label_width;
  std::size_t i = 0;
  bool first_word = true;
  while (i < text.size()) {
    std::size_t j = text.find(' ', i);
    if (j == std::string::npos) j = text.size();
    std::string word = text.substr(i, j - i);
    i = j + 1;
    if (word.empty()) continue;
    if (!first_word && col + 1 + word.size() > text_width) {
      out += "\n" + std::string(label_width, ' ');
      col = label_width;
      first_word = true;
    }
    if (!first_word) {
      out += ' ';
      ++col;
    }
    out += word;
    col += word.size();
    first_word = false;
  }
  return out + "\n";
}

std::string reply_words(const reply_ref& r) {
  std::string s = std::to_string(r.code);
  if (!r.enhanced.empty()) s += " " + r.enhanced;
  if (!r.text.empty()) s += " " + r.text;
  return s;
}

std::string origin_words(const finding& f) {
  switch (f.source) {
    case origin::injected: return "injected by rule '" + f.rule + "'";
    case origin::server: return "from the destination";
    case origin::relay: return "made by mailtap";
    case origin::client: return "from the client";
    case origin::none: break;
  }
  return "";
}

std::string count_words(std::size_t n, const char* one) {
  return std::to_string(n) + " " + one + (n == 1 ? "" : "s");
}

void render_finding(const finding& f, std::string& out) {
  out += "\n" + pad_right(upper(to_string(f.level)), 8) + f.id + " at " + f.stage;
  if (auto who = origin_words(f); !who.empty()) out += ", " + who;
  out += "\n";
  out += labelled("", captures::terminal_safe(f.title));
  if (f.reply) out += labelled("reply", captures::terminal_safe(reply_words(*f.reply)));
  if (f.reply && !f.basic_meaning.empty()) {
    std::string meaning = std::to_string(f.reply->code) + ": " + f.basic_meaning;
    if (!f.enhanced_meaning.empty()) meaning += "; " + f.reply->enhanced + ": " + f.enhanced_meaning;
    out += labelled("meaning", meaning);
  }
  if (!f.vendor.empty()) out += labelled("server", f.vendor);
  out += labelled("why", captures::terminal_safe(f.explanation));
  out += labelled("do", captures::terminal_safe(f.action));
  out += "  evidence\n";
  std::size_t shown = 0;
  for (const auto& e : f.evidence) {
    if (shown == text_evidence_rows) {
      out += "    ... " + std::to_string(f.evidence.size() - shown) + " more (--json lists them all)\n";
      break;
    }
    ++shown;
    std::string stamp = "    +" + pad_left(ms(e.t_us), 11) + " ms  ";
    std::size_t start = 0;
    bool first = true;
    // A multi-line reply: its continuation lines line up under the first.
    while (start <= e.text.size()) {
      std::size_t nl = e.text.find('\n', start);
      std::string line = e.text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      out += (first ? stamp : std::string(stamp.size(), ' ')) + captures::terminal_safe(line) + "\n";
      first = false;
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
  }
}

json::value reply_json(const std::optional<reply_ref>& r) {
  if (!r) return nullptr;
  return json::object{{"code", r->code}, {"enhanced", captures::utf8_safe(r->enhanced)},
                      {"text", captures::utf8_safe(r->text)}};
}

json::value or_null(const std::string& s) { return s.empty() ? json::value(nullptr) : json::value(captures::utf8_safe(s)); }

json::object finding_json(const finding& f) {
  json::object o;
  o["id"] = f.id;
  o["severity"] = to_string(f.level);
  o["stage"] = f.stage;
  o["source"] = to_string(f.source);
  o["rule"] = or_null(f.rule);
  o["title"] = captures::utf8_safe(f.title);
  o["reply"] = reply_json(f.reply);
  if (f.reply)
    o["meaning"] = json::object{{"basic", f.basic_meaning}, {"enhanced", or_null(f.enhanced_meaning)}};
  else
    o["meaning"] = nullptr;
  o["vendor"] = or_null(f.vendor);
  o["queue_id"] = or_null(f.queue_id);
  o["explanation"] = captures::utf8_safe(f.explanation);
  o["action"] = captures::utf8_safe(f.action);
  json::array ev;
  for (const auto& e : f.evidence) {
    if (ev.size() == json_evidence_cap) break;
    ev.push_back(json::object{{"t_us", e.t_us}, {"record", e.record}, {"text", captures::utf8_safe(e.text)}});
  }
  o["evidence_omitted"] = f.evidence.size() - ev.size();
  o["evidence"] = std::move(ev);
  return o;
}

std::string headline(const diagnosis& d) {
  for (const auto& f : d.findings) {
    if (f.level == severity::info && d.has_error()) continue;
    std::string s = f.id + " at " + f.stage;
    if (f.reply) s += " (" + std::to_string(f.reply->code) + (f.reply->enhanced.empty() ? "" : " " + f.reply->enhanced) + ")";
    if (!f.queue_id.empty()) s += " queue id " + f.queue_id;
    return s;
  }
  return "no findings";
}

}  // namespace

std::string render_summary_line(const diagnosis& d) {
  const auto& c = *d.cap;
  // The outcome padded to the longest ("blackholed", "tempfailed"): the counts line up.
  return captures::terminal_safe(c.path.filename().string()) + "  " + pad_right(captures::session_outcome(c), 10) + "  " +
         count_words(d.count(severity::error), "error") + ", " + count_words(d.count(severity::warning), "warning") +
         ": " + captures::terminal_safe(headline(d)) + "\n";
}

std::string render_text(const diagnosis& d) {
  const auto& c = *d.cap;
  std::string out;
  auto row = [&](std::string_view label, const std::string& value) {
    out += pad_right(std::string(label), 10) + captures::terminal_safe(value) + "\n";
  };
  row("capture", c.path.string());
  row("session", c.header.session + ", " + c.header.client + " -> " + c.header.upstream + ", started " +
                     c.header.started_at);
  row("outcome", captures::session_outcome(c) + (c.end ? "; end " + c.end->reason : std::string("; no end record")));
  row("findings", count_words(d.count(severity::error), "error") + ", " +
                      count_words(d.count(severity::warning), "warning") + ", " +
                      std::to_string(d.count(severity::info)) + " info");
  for (const auto& f : d.findings) render_finding(f, out);
  return out;
}

std::string render_json(const diagnosis& d) {
  const auto& c = *d.cap;
  json::object o;
  o["capture"] = captures::utf8_safe(c.path.string());
  o["session"] = captures::utf8_safe(c.header.session);
  o["client"] = captures::utf8_safe(c.header.client);
  o["upstream"] = captures::utf8_safe(c.header.upstream);
  o["started_at"] = captures::utf8_safe(c.header.started_at);
  o["outcome"] = captures::session_outcome(c);
  o["end_reason"] = c.end ? json::value(captures::utf8_safe(c.end->reason)) : json::value(nullptr);
  o["complete"] = c.complete;
  o["summary"] = json::object{{"errors", d.count(severity::error)},
                              {"warnings", d.count(severity::warning)},
                              {"infos", d.count(severity::info)}};
  json::array fs;
  for (const auto& f : d.findings) fs.push_back(finding_json(f));
  o["findings"] = std::move(fs);
  return json::serialize(o);
}

}  // namespace mailtap::diagnose
