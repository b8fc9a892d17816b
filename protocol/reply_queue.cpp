// Reply pairing (reply_queue.hpp): the queue of replies owed to the client, oldest first.
#include "protocol/reply_queue.hpp"

#include <algorithm>
#include <iterator>
#include <utility>

namespace mailtap::protocol {

namespace {
bool awaited(const reply_slot& s) { return !s.answer.local && !s.answer.ready; }
}  // namespace

reply_slot& reply_queue::push(reply_slot s) {
  slots_.push_back(std::move(s));
  return slots_.back();
}

reply_slot& reply_queue::expect(std::uint64_t now, phase ph, command_kind kind, std::uint64_t txn) {
  reply_slot s;
  s.asked.ph = ph;
  s.asked.t_received = now;
  s.asked.kind = kind;
  s.asked.txn = txn;
  return push(std::move(s));
}

reply_slot& reply_queue::answer_locally(std::uint64_t now, phase ph, reply r) {
  reply_slot s;
  s.asked.ph = ph;
  s.asked.t_received = now;
  s.answer.local = true;
  s.answer.ready = true;
  s.answer.bytes = r.raw;
  s.answer.parsed = std::move(r);
  return push(std::move(s));
}

reply_slot& reply_queue::fault_marker(std::uint64_t now, phase recorded_at, fault_decision d, then_do then) {
  reply_slot s;
  s.asked.t_received = now;
  s.answer.local = true;
  s.answer.ready = true;
  s.fault.decision = std::move(d);
  s.fault.then = then;
  s.fault.ph = recorded_at;
  return push(std::move(s));
}

reply_slot* reply_queue::first_awaited() {
  auto it = std::find_if(slots_.begin(), slots_.end(), awaited);
  return it == slots_.end() ? nullptr : &*it;
}

reply_slot* reply_queue::absorbed_go() {
  auto it = std::find_if(slots_.begin(), slots_.end(), [](const reply_slot& s) { return s.fault.absorb_go; });
  return it == slots_.end() ? nullptr : &*it;
}

bool reply_queue::awaiting_end_of_data() const {
  return std::any_of(slots_.begin(), slots_.end(),
                     [](const reply_slot& s) { return awaited(s) && s.asked.answers_end_of_data(); });
}

bool reply_queue::owes_end_of_data() const {
  return std::any_of(slots_.begin(), slots_.end(), [](const reply_slot& s) { return s.asked.answers_end_of_data(); });
}

bool reply_queue::owes_end_of_data_other_than(std::uint64_t txn, bool awaited_only) const {
  return std::any_of(slots_.begin(), slots_.end(), [&](const reply_slot& s) {
    return s.asked.answers_end_of_data() && s.asked.txn != txn && (!awaited_only || awaited(s));
  });
}

bool reply_queue::owes(phase ph) const {
  return std::any_of(slots_.begin(), slots_.end(), [ph](const reply_slot& s) { return s.asked.ph == ph; });
}

bool reply_queue::owes(phase ph, std::uint64_t txn) const {
  return std::any_of(slots_.begin(), slots_.end(), [&](const reply_slot& s) { return s.asked.ph == ph && s.asked.txn == txn; });
}

void reply_queue::paced_write_ended(std::uint64_t began, std::uint64_t ended) {
  for (auto& s : slots_) {
    if (!awaited(s) || s.asked.paced_write_ended || std::max(s.asked.t_received, s.asked.t_forwarded) > began) continue;
    s.asked.t_forwarded = std::max(s.asked.t_forwarded, ended);
    s.asked.paced_write_ended = true;
  }
}

bool reply_queue::withdraw_bdat_last() {
  const reply_slot* last = awaited_bdat_last();
  if (!last) return false;
  erase(*last);
  return true;
}

reply_slot* reply_queue::awaited_bdat_last() {
  auto it = std::find_if(slots_.rbegin(), slots_.rend(), [](const reply_slot& s) {
    return s.asked.ph == phase::bdat && s.asked.last_chunk && awaited(s);
  });
  return it == slots_.rend() ? nullptr : &*it;
}

bool reply_queue::delayed_past(std::uint64_t now) const {
  return std::any_of(slots_.begin(), slots_.end(), [&](const reply_slot& s) { return s.fault.release_us > now; });
}

reply_slot reply_queue::pop_head() {
  reply_slot s = std::move(slots_.front());
  slots_.pop_front();
  return s;
}

std::list<reply_slot>::iterator reply_queue::position(const reply_slot& s) {
  return std::find_if(slots_.begin(), slots_.end(), [&](const reply_slot& q) { return &q == &s; });
}

void reply_queue::erase(const reply_slot& s) {
  if (auto it = position(s); it != slots_.end()) slots_.erase(it);
}

void reply_queue::drop_after(const reply_slot& s) {
  if (auto it = position(s); it != slots_.end()) slots_.erase(std::next(it), slots_.end());
}

}  // namespace mailtap::protocol
