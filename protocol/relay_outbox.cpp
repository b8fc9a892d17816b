// The relay machine's outbox (relay_outbox.hpp).
#include "protocol/relay_outbox.hpp"

#include "protocol/auth_redaction.hpp"

namespace mailtap::protocol {

void relay_outbox::send(leg to, std::string_view bytes, std::uint64_t now, bool sensitive) {
  if (bytes.empty() || closed(to)) return;
  client_input_recorded(to, now);
  if (observer_) {
    if (sensitive) observer_->on_bytes(now, to, direction::out, masked_auth_line(bytes));
    else observer_->on_bytes(now, to, direction::out, bytes);
  }
  if (auto* prev = joinable_send(to, sensitive)) {
    prev->bytes.append(bytes);
    return;
  }
  actions_.push_back(send_bytes{to, std::string(bytes), sensitive});
}

void relay_outbox::send_owned(leg to, std::string&& bytes, std::uint64_t now) {
  if (bytes.empty() || closed(to)) return;
  client_input_recorded(to, now);
  if (observer_) observer_->on_bytes(now, to, direction::out, bytes);
  if (auto* prev = joinable_send(to, false)) {
    prev->bytes.append(bytes);
    return;
  }
  actions_.push_back(send_bytes{to, std::move(bytes), false});
}

// Coalesce with the previous send to the same leg, looking past timer actions: every
// forwarded command re-arms a timer, and without this a pipelined group the client sent in
// one write went upstream as one write per command (changing TCP segmentation, RFC 2920).
send_bytes* relay_outbox::joinable_send(leg to, bool sensitive) {
  auto last = actions_.rbegin();
  while (last != actions_.rend() && std::holds_alternative<arm_timer>(*last)) ++last;
  if (last == actions_.rend()) return nullptr;
  auto* prev = std::get_if<send_bytes>(&*last);
  return prev && prev->to == to && prev->sensitive == sensitive ? prev : nullptr;
}

void relay_outbox::say(std::uint64_t now, const reply& r) {
  send(leg::client, r.raw, now);
  if (observer_) observer_->on_reply(now, leg::client, direction::out, r);
}

void relay_outbox::note(std::uint64_t now, std::string_view text) {
  if (observer_) observer_->on_note(now, text);
}

void relay_outbox::mark_closed(leg which) { (which == leg::upstream ? upstream_closed_ : client_closed_) = true; }

void relay_outbox::close(leg which) {
  mark_closed(which);
  actions_.push_back(close_leg{which});
}

void relay_outbox::close_with_reset(leg which) {
  mark_closed(which);
  actions_.push_back(close_leg{which, true});
}

void relay_outbox::arm(leg which, std::chrono::milliseconds after) {
  // A re-arm of the same leg right after another supersedes it; keep one action, not one per command.
  if (!actions_.empty())
    if (auto* prev = std::get_if<arm_timer>(&actions_.back()); prev && prev->which == which) {
      prev->after = after;
      return;
    }
  actions_.push_back(arm_timer{which, after});
}

void relay_outbox::barrier_first() {
  if (!actions_.empty() && std::holds_alternative<capture_barrier>(actions_.front())) return;
  actions_.insert(actions_.begin(), capture_barrier{});
}

void relay_outbox::withdraw_start_tls() {
  std::erase_if(actions_, [](const action& a) { return std::holds_alternative<start_tls>(a); });
}

std::vector<action> relay_outbox::take() {
  std::vector<action> out;
  out.swap(actions_);
  return out;
}

void relay_outbox::give_back(std::vector<action>&& used) {
  if (actions_.capacity() != 0) return;   // its own room already (how much to keep is the lender's)
  used.clear();
  actions_.swap(used);
}

}  // namespace mailtap::protocol
