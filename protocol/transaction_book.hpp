// The transaction book: the mail transactions of one relay session in flight, oldest first,
// from MAIL (or a BDAT without one) until their outcome is settled. Owns their records (sender,
// recipients with their reply codes, size, Message-ID), the recipient recording cap, and the
// rule that turns a final reply into the recorded outcome (README "Outcomes"). With pipelining
// a new MAIL can arrive while the previous message's end-of-data reply is still awaited
// (RFC 2920 4), so there may be several; only the newest can still be open (take commands).
// Reports nothing itself: relay_fsm hands a settled record to the observer.
#pragma once
#include <cstdint>
#include <list>
#include <optional>
#include <string>

#include "protocol/header_scanner.hpp"
#include "protocol/observer.hpp"
#include "protocol/reply.hpp"

namespace mailtap::protocol {

struct transaction {
  std::uint64_t id = 0;
  transaction_record rec;
  header_scanner headers;
  std::size_t rcpts_forwarded = 0;
  std::size_t rcpts_refused_upstream = 0;   // of those, refused by the destination's reply, passed on
  bool sealed = false;       // its end (dot, BDAT LAST, RSET, EHLO) went upstream: no further commands
  bool end_sent = false;     // the message itself went upstream: delivery may have happened
  bool recipients_overflowed = false;   // past limits::recipients_recorded_cap
};

enum class recipient_recording {
  recorded,
  not_recorded,   // past the cap
  cap_reached,    // past the cap, the first time in this transaction (worth a note)
};

class transaction_book {
 public:
  // Opens a transaction at `now`; returns its id.
  std::uint64_t begin(std::uint64_t now, std::string mail_from);
  // The id the next begin() gives (a fault asked at MAIL names the transaction MAIL opens).
  std::uint64_t next_id() const { return next_id_; }
  // The newest transaction while it still takes commands, else null.
  transaction* open();
  // The newest transaction, sealed or not (a BDAT LAST's payload still belongs to it).
  transaction* newest();
  transaction* find(std::uint64_t id);
  const transaction* oldest() const { return txns_.empty() ? nullptr : &txns_.front(); }
  bool empty() const { return txns_.empty(); }

  // Records a recipient unless the transaction holds limits::recipients_recorded_cap already.
  recipient_recording record_recipient(transaction& t, std::string address);
  // The transaction's final reply went out (or the session ends): removes it and returns its
  // record with the outcome filled in; nullopt when `id` is not in flight.
  std::optional<transaction_record> settle(std::uint64_t now, std::uint64_t id, outcome o,
                                           const std::optional<reply>& final_reply, bool synthesized);

 private:
  std::list<transaction> txns_;   // a list, not a deque: empty, it allocates nothing (reply_queue.hpp)
  std::uint64_t next_id_ = 1;
};

// What the record says became of a transaction that ended with `o` (README "Outcomes"). A 2xx
// the relay made itself delivered nothing: blackholed. A transaction whose every recipient was
// refused failed at RCPT however it then ended (QUIT, RSET, the upstream's 554 to DATA), and
// reads as the same codes at MAIL do: tempfailed when any refusal was 4xx, else rejected.
// Unrecorded recipients (past the recording cap) may have been accepted, so the rule needs
// every one recorded, each with its reply.
outcome recorded_outcome(const transaction_record& rec, outcome o, bool synthesized, bool every_recipient_recorded);

}  // namespace mailtap::protocol
