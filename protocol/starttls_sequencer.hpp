// The STARTTLS sequencer of the relay machine (RFC 3207 on both legs): the client's STARTTLS,
// the relay securing the upstream leg first (its own EHLO and STARTTLS, then the handshake),
// the plaintext fall-back on a new upstream connection (RFC 7435), and the STARTTLS
// injection checks (CVE-2011-0411). Owns the TLS state of both legs and the relay's own
// commands upstream (send_own_command: each awaits its reply in the reply queue, which the
// sequencer consumes instead of the client). starttls_sequencer.cpp says the order and why.
// Asks the machine that composes it (relay_fsm) for the rest through starttls_host.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "protocol/observer.hpp"
#include "protocol/relay_options.hpp"
#include "protocol/relay_outbox.hpp"
#include "protocol/reply_queue.hpp"

namespace mailtap::protocol {

// In the note a session's capture gets when the upstream's handshake failed and the relay went
// on in plaintext on a new connection (fall_back_to_plaintext): diagnose reads it.
inline constexpr std::string_view note_upstream_tls_fallback = "falling back to plaintext on a new upstream connection";
// The note at the moment that new connection is open: `export pcap` starts a new TCP stream there.
inline constexpr std::string_view note_new_plaintext_upstream = "new plaintext upstream connection open";

// What the sequencer needs of the machine around it.
class starttls_host {
 public:
  virtual bool ended() const = 0;
  virtual void flush_replies(std::uint64_t now) = 0;
  virtual void end_session(std::uint64_t now, std::string_view reason, std::string_view detail) = 0;
  virtual void end_with_reply(std::uint64_t now, const reply& r, std::string_view reason, std::string_view detail) = 0;
  virtual void local_reply(std::uint64_t now, phase ph, int code, std::string_view enhanced, std::string_view text) = 0;
  virtual void count_refused_command() = 0;
  // One more STARTTLS the relay refused itself: true when that was one too many (the client has
  // 421 in its place and the session closes, as for any command the relay refuses).
  virtual bool too_many_refusals(std::uint64_t now) = 0;
  virtual void arm_upstream_for_head() = 0;
  // The client's side: waiting for its handshake (nothing may be read), or back to commands.
  virtual void client_awaits_handshake() = 0;
  virtual void client_back_to_commands() = 0;
  // A new upstream connection answered the client's replayed hello: what it offers now
  // (CHUNKING) is what the client's next commands go to.
  virtual void upstream_hello_answered(const reply& r) = 0;
  virtual std::size_t unread_client_bytes() const = 0;
  virtual bool in_transaction() const = 0;
  // Client commands held while the upstream leg was prepared may go on.
  virtual void resume_client_input(std::uint64_t now) = 0;
  virtual void end_if_client_done(std::uint64_t now) = 0;
  // The upstream connection is gone: why, for the session's end; what it left half-parsed.
  virtual void remember_upstream_loss(std::string_view reason, std::string_view detail) = 0;
  virtual void forget_upstream_input() = 0;
  // The session ends with `reason` once the replies owed to the commands before now are out;
  // nothing the client sent after now is read (relay_fsm::close_after_owed). A host that owes
  // no replies of its own ends it at once.
  virtual void close_after_owed(std::uint64_t now, std::string_view reason, std::string detail) {
    end_session(now, reason, detail);
  }

 protected:
  virtual ~starttls_host() = default;
};

class starttls_sequencer {
 public:
  starttls_sequencer(const relay_options& options, relay_outbox& out, reply_queue& owed, session_observer* observer,
                     starttls_host& host);

  bool client_tls() const { return client_tls_; }
  // No client command may go upstream while the relay prepares the upstream leg.
  bool upstream_prepared() const { return !securing_upstream_ && !reconnecting_; }
  // The upstream's 220 to STARTTLS came: anything after it would be read as protected.
  bool awaiting_upstream_handshake() const { return tls_step_ == tls_step::upstream_handshake; }
  // Whether the client is offered STARTTLS in the EHLO reply.
  bool offers_starttls() const;
  // The upstream's reply to the client's EHLO/HELO `line`: a hello the upstream accepted is the
  // one replayed on a new upstream connection (a refused one, replayed, had the new connection
  // refuse it too, and the client a 421 it never caused). Each reply carries its own line, so
  // pipelined hellos cannot stand in for each other.
  void hello_answered(const reply& r, std::string_view line) {
    if (r.code == 250) hello_line_ = std::string(line);
  }
  const std::string& hello_line() const { return hello_line_; }
  void note_upstream_capabilities(const reply& r);

  // The banner went to the client: secure the upstream first when the mode asks.
  void after_banner(std::uint64_t now);
  void client_starttls(std::uint64_t now);
  // A pipelined STARTTLS proceeds once everything before it is answered.
  void advance(std::uint64_t now);
  // A reply to a slot whose kind is not `relayed`.
  void take_reply(std::uint64_t now, reply_slot& p, const reply& r);
  void tls_ready(std::uint64_t now, leg which, const tls_summary& tls);
  void upstream_tls_failed(std::uint64_t now, std::string_view reason);
  // The new upstream connection of the fall-back is open; false when none was asked for.
  bool upstream_reconnected(std::uint64_t now);
  void injection(std::uint64_t now, leg where, std::string_view detail);
  // Bytes pipelined after the client's STARTTLS itself: the same injection, after the replies
  // owed to the commands before it.
  void pipelined_injection(std::uint64_t now, std::size_t unread);

  // A command of the relay's own goes upstream (without CRLF), recorded as the relay's; its
  // reply is the sequencer's.
  void send_own_command(std::uint64_t now, phase ph, command_kind kind, std::string_view line);

 private:
  // Where a STARTTLS (the client's, or the relay's own securing of the upstream) stands.
  enum class tls_step { idle, upstream_starttls_sent, upstream_handshake, client_handshake };

  bool upstream_needs_tls_now() const;
  void secure_upstream_first(std::uint64_t now);
  void take_internal_ehlo_reply(std::uint64_t now, const reply& r);
  void take_starttls_reply(std::uint64_t now, reply_slot& p, const reply& r);
  void grant_client_tls(std::uint64_t now);
  void pass_on_refusal(std::uint64_t now, reply_slot& p, const reply& r);
  void refuse_starttls(std::uint64_t now, int code, std::string_view enhanced, std::string_view text);
  void refuse_owed_starttls(std::uint64_t now, std::string_view text, std::uint64_t upstream_until);
  bool may_fall_back_to_plaintext() const;
  void fall_back_to_plaintext(std::uint64_t now, std::string_view reason);
  void take_new_upstream_greeting(std::uint64_t now, const reply& r);
  void take_replayed_hello_reply(std::uint64_t now, const reply& r);
  void finish_reconnect(std::uint64_t now);
  void reconnect_failed(std::uint64_t now, std::string_view detail);

  const relay_options& options_;
  relay_outbox& out_;
  reply_queue& owed_;
  session_observer* observer_;
  starttls_host& host_;

  bool client_tls_ = false;
  bool upstream_tls_ = false;
  bool upstream_offers_starttls_ = false;   // in the last EHLO reply the upstream sent
  bool upstream_ehlo_seen_ = false;         // an EHLO answered 250 on this connection since its last handshake
  bool securing_upstream_ = false;          // internal EHLO/STARTTLS before client commands
  tls_step tls_step_ = tls_step::idle;
  // Plaintext fall-back: a new upstream connection is being opened and prepared; client
  // commands wait. After one, the upstream's TLS is known not to work: no second attempt.
  bool reconnecting_ = false;
  bool upstream_tls_broken_ = false;
  std::string hello_line_;                  // the client's last EHLO/HELO line the upstream accepted
};

}  // namespace mailtap::protocol
