// What a protocol machine tells the recorder: raw bytes per leg and direction (already
// redacted), parsed commands and replies, stage timings, transactions, notes and the one
// terminal event. Implemented by captures/; a null observer is allowed. Times are
// microseconds since the session started, supplied by the caller (protocol/ has no clock).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/action.hpp"
#include "protocol/fault.hpp"
#include "protocol/phase.hpp"
#include "protocol/reply.hpp"

namespace mailtap::protocol {

enum class direction : unsigned char { in, out };  // relative to mailtap
std::string_view to_string(direction d);

// What became of a transaction (README "Outcomes", captures/FORMAT.md):
//   delivered   the destination accepted the message (its 2xx to the end of data);
//   blackholed  the relay answered 2xx itself (a blackhole fault): nothing was delivered;
//   rejected    refused with 5xx: at MAIL, at DATA, at the end of data, or every recipient;
//   tempfailed  refused with 4xx, or every recipient refused with at least one 4xx among
//               them (a retry may succeed);
//   aborted     ended by the client (RSET, EHLO, QUIT, closing) or the relay before a final reply;
//   unknown     the message went upstream and no reply came back: it may have been delivered.
enum class outcome { delivered, blackholed, rejected, tempfailed, aborted, unknown };
std::string_view to_string(outcome o);
std::optional<outcome> parse_outcome(std::string_view name);
outcome outcome_of_code(int code);
// When every recipient was refused (`codes`: one reply code per RCPT, none 2xx, at least
// one): tempfailed if any refusal was 4xx, else rejected. Otherwise nullopt.
std::optional<outcome> outcome_of_refused_recipients(const std::vector<int>& codes);

struct stage_record {
  phase ph = phase::other;
  std::uint64_t start_us = 0;
  std::uint64_t duration_us = 0;   // first byte of the stage in to its reply out
  std::uint64_t upstream_us = 0;   // waiting on the upstream within that duration
  std::uint64_t think_us = 0;      // sender think time before the stage began
  std::uint64_t client_us = 0;     // the sender busy within it (message transfer, its TLS handshake)
};

struct transaction_record {
  std::string mail_from;
  std::vector<std::string> rcpt_to;
  std::vector<int> rcpt_codes;     // reply code per RCPT, same order
  std::optional<std::string> message_id;
  std::uint64_t size = 0;
  std::optional<reply> final_reply;
  outcome result = outcome::unknown;
  bool synthesized = false;        // final reply made by the relay, not the destination
  // Begun by a BDAT with no MAIL before it (the destination refuses it): mail_from is empty
  // because there was no MAIL, not the null reverse-path of MAIL FROM:<> (a bounce).
  bool without_mail = false;
  std::uint64_t start_us = 0;
  std::uint64_t end_us = 0;
};

// The note a session writes, after "the client" or "the upstream", when that peer asked to
// renegotiate TLS and the relay refused (relay/session.cpp); diagnose's tls check reads it.
inline constexpr std::string_view note_renegotiation_refused =
    " asked to renegotiate TLS; the relay refuses renegotiation (no_renegotiation alert)";

// What a TLS handshake established on one leg (filled in by the shell, which has OpenSSL).
struct tls_summary {
  std::string version;          // "TLSv1.3"
  std::string cipher;
  std::string sni;              // the name asked for (client leg) or sent (upstream leg)
  std::string peer_subject;     // peer certificate subject, if any
  std::string peer_sha256;      // its SHA-256 fingerprint
  bool verified = false;        // upstream leg: the certificate chain and name were verified
  bool insecure = false;        // upstream leg: verification was switched off by configuration
  std::uint64_t handshake_us = 0;
  // Upstream leg: "verified", or why not ("untrusted: self-signed certificate", "not checked:
  // verification off by configuration"); under the default policy an unverified upstream
  // still carries the session, as Postfix's "Untrusted TLS connection established".
  std::string verification;
};

class session_observer {
 public:
  virtual ~session_observer() = default;
  virtual void on_bytes(std::uint64_t t_us, leg l, direction d, std::string_view bytes) = 0;
  virtual void on_command(std::uint64_t t_us, std::string_view text) = 0;
  // A command the relay itself sent upstream, not the client's: its EHLO and STARTTLS when it
  // secures the upstream leg first, the RSET of a message a fault answers, the QUIT of a
  // greeting a fault replaced. Without it the upstream's reply would show with no command.
  virtual void on_relay_command(std::uint64_t t_us, std::string_view text) = 0;
  // Replies from the upstream (leg upstream, in) and the relay's own (leg client, out).
  virtual void on_reply(std::uint64_t t_us, leg l, direction d, const reply& r) = 0;
  virtual void on_note(std::uint64_t t_us, std::string_view text) = 0;
  virtual void on_tls(std::uint64_t t_us, leg l, const tls_summary& tls) = 0;
  virtual void on_stage(const stage_record& s) = 0;
  virtual void on_transaction(const transaction_record& t) = 0;
  // An injected fault (policies/ decided, the machine carried it out).
  virtual void on_fault(std::uint64_t t_us, const fault_event& f) = 0;
  // Exactly once per session.
  virtual void on_end(std::uint64_t t_us, std::string_view reason, std::string_view detail) = 0;
};

}  // namespace mailtap::protocol
