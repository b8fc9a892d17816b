// A message's end in the conversation view: which exchange answers it (the reply after DATA's
// 354, or the reply to BDAT ... LAST, RFC 3030 2: the last chunk ends the message as the dot
// does), and which transaction each such reply closed. Pure; thread-safe.
#pragma once
#include <vector>

#include "diagnose/conversation.hpp"

namespace mailtap::diagnose {

// The client's BDAT ... LAST that `x` answers, or null.
const captures::command_event* last_chunk_of(const exchange& x);

// `x` answers the end of a message: DATA's dot, or a BDAT ... LAST chunk.
bool answers_end_of_data(const exchange& x);

// The exchange that closed each transaction of the capture, by index into
// c.cap->transactions (null when none did: a refused MAIL, an aborted message). Each exchange
// closes one transaction at most, taken in transaction order, and carries the transaction's
// final reply when it has one: pipelined transactions share their times, so a time window
// alone gives one transaction another's end (captures/FORMAT.md, "transaction").
std::vector<const exchange*> end_of_data_replies(const conversation& c);

}  // namespace mailtap::diagnose
