// The relay machine's settings (relay_options: timeouts, TLS on each leg, names) and the
// per-session figures it counts (relay_stats). Pure value types; the shell fills them from
// relay/config.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/data_framer.hpp"
#include "protocol/xclient.hpp"

namespace mailtap::protocol {

struct relay_timeouts {
  // RFC 5321 4.5.3.2.7: a server waits at least 5 minutes for the next command.
  std::chrono::milliseconds client_idle{300'000};
  // From the first byte of a command line to its CRLF (Postfix smtpd_timeout with
  // smtpd_per_request_deadline): a client trickling one byte at a time cannot hold a session.
  std::chrono::milliseconds client_command{300'000};
  // Message bytes per second a client must keep up in DATA and BDAT (Postfix
  // smtpd_min_data_rate, 500): each read adds bytes/rate to the time left, never beyond
  // client_idle. 0 turns it off (client_idle per read).
  std::uint64_t min_data_rate = 500;
  // Postfix smtp_helo_timeout 300 s.
  std::chrono::milliseconds upstream_greeting{300'000};
  // RFC 5321 4.5.3.2.2/3: MAIL and RCPT 5 minutes.
  std::chrono::milliseconds upstream_reply{300'000};
  // RFC 5321 4.5.3.2.4: DATA initiation 2 minutes.
  std::chrono::milliseconds upstream_data_init{120'000};
  // RFC 5321 4.5.3.2.6: DATA termination 10 minutes (shorter causes duplicate deliveries).
  std::chrono::milliseconds upstream_data_end{600'000};
  // RFC 5321 4.5.3.2.5: each send of message data to the upstream, 3 minutes. An upstream
  // that takes nothing for this long (it stopped reading) is timed out like a silent one.
  std::chrono::milliseconds upstream_data_block{180'000};
};

// How the upstream leg is secured (issue 3): mirror = TLS upstream whenever the client leg
// is TLS; required = always; opportunistic = when the upstream offers STARTTLS, never
// failing the client for it; never = plaintext upstream.
enum class upstream_tls_mode { mirror, required, opportunistic, never };
std::string_view to_string(upstream_tls_mode m);
std::optional<upstream_tls_mode> parse_upstream_tls_mode(std::string_view name);

struct relay_tls_options {
  bool offer_starttls = false;          // the client leg can be secured (a certificate is loaded)
  bool implicit_client_tls = false;     // the client connected to the SMTPS listener (TLS from connect)
  upstream_tls_mode upstream = upstream_tls_mode::mirror;
  // The upstream's certificate must pass its check (verify_upstream = require, or a pinned
  // fingerprint): a failed upstream handshake then fails closed, as under `required`.
  // Otherwise a failed handshake after the client's STARTTLS falls back to plaintext on a
  // new upstream connection (RFC 7435; Postfix smtp_tls_security_level = may).
  bool upstream_verification_required = false;
};

struct relay_options {
  bare_eol_mode eol = bare_eol_mode::strict;
  relay_timeouts timeouts;
  std::string name = "mailtap";   // appears in the relay's own replies
  // The upstream as the relay's own replies name it: "host:port" as configured, so that an
  // injected refusal reads like a real one, or "builtin" (the built-in sink's internal port is
  // no address of the mail path's).
  std::string upstream = "upstream";
  relay_tls_options tls;
  // Record the AUTH username (PLAIN, LOGIN) in a note; the secret is never recorded.
  bool record_auth_username = false;
  // The first bytes of every new upstream connection (a PROXY protocol header naming the
  // client, upstream_identity = proxy_v1/proxy_v2), recorded like all bytes; empty: none.
  std::string upstream_preamble;
  // Tell an upstream that offers XCLIENT who the client is (upstream_identity = xclient,
  // xclient_exchange.hpp); its `helo` is taken from the client's EHLO. Absent: never.
  std::optional<xclient_identity> xclient;
  // A recorder writes this session's records (the shell has a capture): each message's end
  // waits for them to be written (await_capture), so a message whose capture failed is
  // answered 451 4.3.0 and never completed upstream.
  bool end_waits_for_capture = false;
};

// Per-session figures the shell adds to the process-wide metrics.
struct relay_stats {
  std::uint64_t commands = 0;
  std::uint64_t refused_commands = 0;    // never forwarded: forbidden, NUL, bare CR/LF, too long
  std::uint64_t ambiguous_end_of_data = 0;
  std::uint64_t normalized_line_endings = 0;
  std::uint64_t long_data_lines = 0;     // message lines over RFC 5321's 1000 octets, forwarded unchanged
  std::uint64_t transactions = 0;
  std::uint64_t delivered = 0;
  std::uint64_t faults_injected = 0;     // fault records written: rules applied, not merely decided (fault_holds::event)
  std::uint64_t blackholed = 0;          // messages a blackhole fault answered with 250 (the one exception to
                                         // "never a 2xx the destination did not give")
  std::uint64_t client_timeouts = 0;     // idle, slow command line, data rate below the minimum
  std::uint64_t upstream_replied_in_data = 0;   // a reply before the dot ended the message
  std::uint64_t unacknowledged_end_of_data = 0; // the upstream answered the dot after the client left
};

}  // namespace mailtap::protocol
