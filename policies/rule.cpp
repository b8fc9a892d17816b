// Matcher evaluation. Which command part each matcher reads is the README's table; where
// the query leaves a choice (MAIL's own address, the EHLO being sent) the command wins.
#include "policies/rule.hpp"

#include <algorithm>

#include "policies/glob.hpp"
#include "protocol/command.hpp"

namespace mailtap::policies {
namespace {

using protocol::phase;

// MAIL's own address is the sender at `mail`; later commands see the open transaction's.
std::string_view sender_of(const protocol::fault_query& q) { return q.ph == phase::mail ? q.address : q.mail_from; }

// At EHLO/HELO the name being sent; elsewhere the last one.
std::string_view ehlo_of(const protocol::fault_query& q) {
  if ((q.ph == phase::ehlo || q.ph == phase::helo) && !q.argument.empty()) return q.argument;
  return q.ehlo_name;
}

// At `rcpt` this command's address; elsewhere any recipient of the transaction.
template <typename Test>
bool any_recipient(const protocol::fault_query& q, Test test) {
  if (q.ph == phase::rcpt) return test(q.address);
  return std::any_of(q.recipients.begin(), q.recipients.end(), [&](const std::string& r) { return test(r); });
}

// The transaction's recipients; at `rcpt` this command's recipient is included. The relay
// records every RCPT it is given (protocol/relay_fsm.cpp record_recipient) and shows a RCPT the
// ones before it, at its command and at its reply (protocol/fault.hpp), so at `rcpt` this is
// also the position of this RCPT in the transaction: 2 for the second, whatever the first got,
// however many were pipelined behind it.
std::uint64_t recipient_count(const protocol::fault_query& q) {
  std::uint64_t n = q.recipients.size();
  if (q.ph == phase::rcpt) ++n;
  return n;
}

bool client_matches(const std::vector<cidr>& blocks, const session_facts& s) {
  if (blocks.empty()) return true;
  if (!s.client_ip) return false;
  return std::any_of(blocks.begin(), blocks.end(), [&](const cidr& c) { return c.contains(*s.client_ip); });
}

}  // namespace

std::vector<std::string_view> matcher::query_keys() const {
  std::vector<std::string_view> keys;
  const auto add = [&](bool set, std::string_view key) {
    if (set) keys.push_back(key);
  };
  add(verb.has_value(), "verb");
  add(argument.has_value(), "argument");
  add(sender.has_value(), "sender");
  add(sender_domain.has_value(), "sender_domain");
  add(recipient.has_value(), "recipient");
  add(recipient_domain.has_value(), "recipient_domain");
  add(ehlo.has_value(), "ehlo");
  add(nth_transaction.has_value(), "nth_transaction");
  add(nth_recipient.has_value(), "nth_recipient");
  add(line_longer_than.has_value(), "line_longer_than");
  add(address_longer_than.has_value(), "address_longer_than");
  add(recipients_more_than.has_value(), "recipients_more_than");
  return keys;
}

bool matcher::matches_session(const session_facts& s) const {
  if (!client_matches(client, s)) return false;
  if (tls && *tls != s.client_tls) return false;
  if (nth_session && *nth_session != s.number) return false;
  return true;
}

bool matcher::matches(const protocol::fault_query& q, const session_facts& s) const {
  if (!client_matches(client, s)) return false;
  if (tls && *tls != q.client_tls) return false;
  if (nth_session && *nth_session != s.number) return false;
  if (nth_transaction && *nth_transaction != q.transaction_number) return false;
  if (verb && !glob_match(*verb, q.verb)) return false;
  if (argument && !glob_match(*argument, q.argument)) return false;
  if (sender && !glob_match(*sender, sender_of(q))) return false;
  if (sender_domain && !protocol::iequals(address_domain(sender_of(q)), *sender_domain)) return false;
  if (recipient && !any_recipient(q, [&](std::string_view r) { return glob_match(*recipient, r); })) return false;
  if (recipient_domain &&
      !any_recipient(q, [&](std::string_view r) { return protocol::iequals(address_domain(r), *recipient_domain); }))
    return false;
  if (ehlo && !glob_match(*ehlo, ehlo_of(q))) return false;
  if (line_longer_than && !(q.line_length > *line_longer_than)) return false;
  if (address_longer_than && !(q.address.size() > *address_longer_than)) return false;
  if (recipients_more_than && !(recipient_count(q) > *recipients_more_than)) return false;
  if (nth_recipient && !(q.ph == phase::rcpt && recipient_count(q) == *nth_recipient)) return false;
  return true;
}

bool matcher::active(std::uint64_t loaded_us, std::uint64_t now_us, std::int64_t wall_now_s) const {
  const std::uint64_t elapsed = now_us > loaded_us ? now_us - loaded_us : 0;
  if (elapsed < after_us) return false;
  if (for_us && elapsed - after_us >= *for_us) return false;
  if (until_s && wall_now_s >= *until_s) return false;
  return true;
}

bool rule::has_phase(protocol::phase p) const { return std::find(phases.begin(), phases.end(), p) != phases.end(); }

}  // namespace mailtap::policies
