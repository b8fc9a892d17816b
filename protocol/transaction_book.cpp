// The transaction book (transaction_book.hpp): opening, finding and settling transactions.
#include "protocol/transaction_book.hpp"

#include <algorithm>
#include <utility>

#include "protocol/limits.hpp"

namespace mailtap::protocol {

std::uint64_t transaction_book::begin(std::uint64_t now, std::string mail_from) {
  transaction t;
  t.id = next_id_++;
  t.rec.mail_from = std::move(mail_from);
  t.rec.start_us = now;
  txns_.push_back(std::move(t));
  return txns_.back().id;
}

transaction* transaction_book::open() { return txns_.empty() || txns_.back().sealed ? nullptr : &txns_.back(); }

transaction* transaction_book::newest() { return txns_.empty() ? nullptr : &txns_.back(); }

transaction* transaction_book::find(std::uint64_t id) {
  for (auto& t : txns_)
    if (t.id == id) return &t;
  return nullptr;
}

recipient_recording transaction_book::record_recipient(transaction& t, std::string address) {
  if (t.rec.rcpt_to.size() < limits::recipients_recorded_cap) {
    t.rec.rcpt_to.push_back(std::move(address));
    return recipient_recording::recorded;
  }
  if (t.recipients_overflowed) return recipient_recording::not_recorded;
  t.recipients_overflowed = true;
  return recipient_recording::cap_reached;
}

std::optional<transaction_record> transaction_book::settle(std::uint64_t now, std::uint64_t id, outcome o,
                                                           const std::optional<reply>& final_reply,
                                                           bool synthesized) {
  auto it = std::find_if(txns_.begin(), txns_.end(), [&](const transaction& t) { return t.id == id; });
  if (it == txns_.end()) return std::nullopt;
  transaction_record rec = std::move(it->rec);
  rec.result = recorded_outcome(rec, o, synthesized, !it->recipients_overflowed);
  rec.final_reply = final_reply;
  rec.synthesized = synthesized;
  rec.end_us = now;
  txns_.erase(it);
  return rec;
}

outcome recorded_outcome(const transaction_record& rec, outcome o, bool synthesized, bool every_recipient_recorded) {
  if (o == outcome::delivered) return synthesized ? outcome::blackholed : o;
  if (!every_recipient_recorded || rec.rcpt_codes.size() != rec.rcpt_to.size()) return o;
  return outcome_of_refused_recipients(rec.rcpt_codes).value_or(o);
}

}  // namespace mailtap::protocol
