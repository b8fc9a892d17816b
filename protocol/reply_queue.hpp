// Reply pairing for the relay machine: the queue of replies the client is owed, in the order
// of its commands (RFC 2920: a pipelined group is answered in order). Each slot does three
// separate jobs, kept in three parts: what it answers (the command, its phase and transaction,
// and whether the relay itself consumes the reply), the answer once known (the upstream's,
// or the relay's own), and a fault riding on it (a delay before release, what follows it).
// Upstream replies settle the oldest slot still awaited from the upstream; the relay's own
// replies take their place in the same line. Owns the queue only: relay_fsm sends what is
// ready and records it.
#pragma once
#include <cstdint>
#include <list>
#include <optional>
#include <string>

#include "protocol/fault.hpp"
#include "protocol/phase.hpp"
#include "protocol/reply.hpp"

namespace mailtap::protocol {

// Whose reply a slot awaits: a relayed client command's, or a command whose reply the relay
// consumes itself (the client's STARTTLS, the relay's own commands upstream).
enum class command_kind {
  relayed, client_starttls, internal_ehlo, internal_starttls, internal_rset,
  internal_greeting,  // the banner of a new upstream connection (plaintext fall-back)
  internal_xclient,   // the client's EHLO waits: the relay's XCLIENT went upstream (xclient_exchange)
  xclient_hello       // the client's EHLO said again after XCLIENT: its reply is the client's
};

// What a fault does once the replies before it are out.
enum class then_do { nothing, close, reset, stall };

// What a slot answers.
struct reply_request {
  phase ph = phase::other;
  std::uint64_t t_received = 0;
  // When it went on upstream, when later than t_received (a delay fault held it): the stage's
  // upstream time starts here, and the hold is the relay's. 0: at t_received.
  std::uint64_t t_forwarded = 0;
  // A write the relay paced (a throttle or slice fault) carried it, and t_forwarded is when that
  // write ended (reply_queue::paced_write_ended): the pacing is the relay's time, not the upstream's.
  bool paced_write_ended = false;
  // Before it could go on, how long it waited while the relay secured the upstream leg (its
  // EHLO, STARTTLS, the handshake) or sent XCLIENT: the upstream's part of its stage too.
  std::uint64_t upstream_wait_us = 0;
  command_kind kind = command_kind::relayed;
  std::uint64_t txn = 0;          // the transaction this reply settles (0: none)
  bool last_chunk = false;        // BDAT ... LAST
  std::string address;            // RCPT/MAIL address, for reply-stage fault rules
  std::string hello;              // EHLO/HELO: the client's line, replayed on a new connection once accepted
  std::size_t recipients_before = 0;   // RCPT: its transaction's recipients before it, for the same rules
  // The reply to the dot, or to BDAT LAST: the proof that a message was handed off.
  bool answers_end_of_data() const { return ph == phase::data_end || (ph == phase::bdat && last_chunk); }
};

// The answer, once known.
struct reply_answer {
  bool ready = false;
  bool local = false;             // made by the relay, not the upstream
  std::optional<reply> parsed;    // none: a fault marker (nothing is sent, its follow-up acts)
  std::string bytes;              // what the client is sent (an edited EHLO reply differs)
  std::uint64_t t_upstream = 0;   // when the upstream answered
  // The upstream's 334 to AUTH (RFC 4954 4), not yet sent: it goes to the client in the slot's
  // turn, after every reply owed before it (RFC 2920), while the slot still awaits the
  // exchange's final reply. Empty: none waits.
  std::string challenge;
};

// A fault riding on the slot: when it may be released (a delay), and what follows it.
struct reply_fault {
  std::uint64_t release_us = 0;
  std::optional<fault_decision> decision;
  then_do then = then_do::nothing;
  phase ph = phase::other;        // the phase the fault is recorded at
  bool absorb_go = false;         // the relay's own 354 for a message a fault answers
  bool absorbed_chunk = false;    // the relay's own reply to a chunk of such a message (BDAT)
};

struct reply_slot {
  reply_request asked;
  reply_answer answer;
  reply_fault fault;
};

class reply_queue {
 public:
  // A command went upstream: its reply is awaited.
  reply_slot& expect(std::uint64_t now, phase ph, command_kind kind = command_kind::relayed, std::uint64_t txn = 0);
  // The relay answers in the command's place.
  reply_slot& answer_locally(std::uint64_t now, phase ph, reply r);
  // A fault's follow-up with no reply of its own (close, reset, stall once the replies before it are out).
  reply_slot& fault_marker(std::uint64_t now, phase recorded_at, fault_decision d, then_do then);
  reply_slot& push(reply_slot s);

  // The oldest slot still awaiting the upstream's reply, or null: the one an upstream reply settles.
  reply_slot* first_awaited();
  bool awaiting_upstream() { return first_awaited() != nullptr; }
  // An end of data (the dot, BDAT LAST) went upstream and its reply has not come.
  bool awaiting_end_of_data() const;
  // A reply to an end of data, or to a command of phase `ph`, is still owed (awaited or not yet sent).
  bool owes_end_of_data() const;
  // The same for the end of a transaction other than `txn` (an earlier message's: BDAT pipelines
  // them behind each other); `awaited_only`: one whose reply has not come from the upstream yet.
  bool owes_end_of_data_other_than(std::uint64_t txn, bool awaited_only) const;
  bool owes(phase ph) const;
  // The reply to a command of phase `ph` in transaction `txn` has not gone out yet.
  bool owes(phase ph, std::uint64_t txn) const;
  // A write to the upstream that the relay paced ran from `began` to `ended`: each command still
  // waiting for its reply that was forwarded by `began` went in it (or an earlier one, which
  // already said so), and reached the upstream only at `ended`.
  void paced_write_ended(std::uint64_t began, std::uint64_t ended);
  // The message's end will not be sent: its BDAT LAST slot is withdrawn. False when there is none.
  bool withdraw_bdat_last();
  // The BDAT LAST slot still awaiting the upstream's reply, or null.
  reply_slot* awaited_bdat_last();
  // The relay's own 354 for a message a fault answers, while it is owed; null when none is.
  reply_slot* absorbed_go();
  // A delay fault holds a reply past `now`.
  bool delayed_past(std::uint64_t now) const;

  // The head, when its answer is ready to go to the client.
  reply_slot* ready_head() { return !slots_.empty() && slots_.front().answer.ready ? &slots_.front() : nullptr; }
  reply_slot pop_head();
  void erase(const reply_slot& s);
  // Nothing after `s` will be answered (the upstream is gone): those slots are dropped.
  void drop_after(const reply_slot& s);

  bool empty() const { return slots_.empty(); }
  bool is_newest(const reply_slot& s) const { return !slots_.empty() && &slots_.back() == &s; }
  std::size_t size() const { return slots_.size(); }
  reply_slot& front() { return slots_.front(); }
  const reply_slot& front() const { return slots_.front(); }
  reply_slot& back() { return slots_.back(); }
  // Every slot, oldest first (fault_holds::session_ending: the delays still holding a reply).
  std::list<reply_slot>::iterator begin() { return slots_.begin(); }
  std::list<reply_slot>::iterator end() { return slots_.end(); }
  std::list<reply_slot>::const_iterator begin() const { return slots_.begin(); }
  std::list<reply_slot>::const_iterator end() const { return slots_.end(); }

 private:
  std::list<reply_slot>::iterator position(const reply_slot& s);
  // A list, not a deque: libstdc++'s deque allocates a map and a node of its own when it is
  // made, empty or not (a slot is 632 bytes: one per node), in every session held idle (README
  // "Performance", W6); and erasing a slot leaves the others where they are.
  std::list<reply_slot> slots_;
};

}  // namespace mailtap::protocol
