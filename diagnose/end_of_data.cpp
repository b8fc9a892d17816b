// Ends of messages in the conversation view, and the transaction each one closed.
#include "diagnose/end_of_data.hpp"

#include <string_view>

#include "protocol/command.hpp"

namespace mailtap::diagnose {

namespace {

std::string_view first_line(std::string_view text) { return text.substr(0, text.find('\n')); }

// The reply is the transaction's final reply as recorded: code, enhanced code and first line
// (captures written before every line was kept hold the first only: captures/FORMAT.md).
bool carries(const exchange& x, const captures::reply_summary& fr) {
  const auto& r = x.reply->reply;
  return r.code == fr.code && r.enhanced == fr.enhanced && first_line(r.text()) == first_line(fr.text);
}

bool same_code(const exchange& x, const captures::reply_summary& fr) {
  return x.reply->reply.code == fr.code && x.reply->reply.enhanced == fr.enhanced;
}

}  // namespace

const captures::command_event* last_chunk_of(const exchange& x) {
  if (!x.command || x.command->leg != protocol::leg::client) return nullptr;
  const auto parsed = protocol::parse_command(x.command->text).cmd;
  return parsed.ph == protocol::phase::bdat && parsed.bdat_last ? x.command : nullptr;
}

bool answers_end_of_data(const exchange& x) { return x.ph == protocol::phase::data_end || last_chunk_of(x); }

std::vector<const exchange*> end_of_data_replies(const conversation& c) {
  const auto& xs = c.exchanges;
  std::vector<bool> taken(xs.size(), false);
  std::vector<const exchange*> out;
  out.reserve(c.cap->transactions.size());
  for (const auto& t : c.cap->transactions) {
    const exchange* found = nullptr;
    if (t.final_reply) {
      // The exchange that carries the final reply; else, the text edited on its way (a rule
      // rewriting it), one with its code.
      for (bool (*fits)(const exchange&, const captures::reply_summary&) : {&carries, &same_code}) {
        for (std::size_t i = 0; i < xs.size() && !found; ++i) {
          const exchange& x = xs[i];
          if (taken[i] || !answers_end_of_data(x) || x.reply->t_us < t.start_us || x.reply->t_us > t.end_us ||
              !fits(x, *t.final_reply))
            continue;
          found = &x;
          taken[i] = true;
          // The relay's edited copy of it answers the same end of data.
          for (std::size_t j = i + 1; j < xs.size() && xs[j].edit; ++j) taken[j] = true;
        }
        if (found) break;
      }
    }
    out.push_back(found);
  }
  return out;
}

}  // namespace mailtap::diagnose
