// mailtap's configuration: built from embedded defaults, then a TOML file (--config), then
// command-line flags. Immutable once the relay starts; shared read-only by all sessions.
// Loading never throws: errors come back as one line naming the file, line and key.
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policies/rule.hpp"
#include "protocol/data_framer.hpp"
#include "protocol/relay_fsm.hpp"

namespace mailtap {

struct endpoint {
  std::string host;     // literal address or name; IPv6 without brackets
  std::uint16_t port = 0;
  std::string to_string() const;   // "127.0.0.1:2525", "[::1]:2525"
};

// Parses "HOST:PORT" or "[V6]:PORT". Port 0 is allowed (ephemeral). Empty error = ok.
std::optional<endpoint> parse_endpoint(std::string_view text, std::string& error);

// How the upstream's certificate is checked (issue 13, "TLS the way MTAs do it"):
// none = not at all (the old insecure_upstream); record = checked and the result recorded,
// the session carries on either way (RFC 7435 opportunistic, Postfix
// smtp_tls_security_level = may); require = a certificate that fails the check fails TLS.
enum class upstream_verify { none, record, require };
std::string_view to_string(upstream_verify v);
std::optional<upstream_verify> parse_upstream_verify(std::string_view name);

// "sha256:HEX" (the prefix optional; colons optional; any case; 32 bytes) as the
// "AB:CD:..." form captures record. std::nullopt and a one-line error when malformed.
std::optional<std::string> parse_sha256_fingerprint(std::string_view text, std::string& error);

// How the upstream learns the original client (issue 13): not at all, a PROXY protocol
// header at the start of each upstream connection (haproxy's proxy-protocol.txt; Postfix
// smtpd_upstream_proxy_protocol = haproxy), or XCLIENT when the upstream offers it (Postfix
// smtpd_authorized_xclient_hosts). relay/client_identity.hpp writes it.
enum class upstream_identity { none, proxy_v1, proxy_v2, xclient };
std::string_view to_string(upstream_identity mode);
std::optional<upstream_identity> parse_upstream_identity(std::string_view name);

// TLS on both legs (issue 3). With no cert/key, a self-signed pair is generated in
// state_dir on first start and reused.
struct tls_config {
  std::filesystem::path cert_file, key_file;
  std::filesystem::path ca_file;               // upstream verification; empty: system CAs
  std::filesystem::path state_dir;             // empty: default_state_dir()
  std::optional<endpoint> listen;              // implicit TLS (SMTPS) listener
  bool offer_starttls = true;                  // advertise STARTTLS to clients
  protocol::upstream_tls_mode upstream = protocol::upstream_tls_mode::mirror;
  bool upstream_implicit = false;              // the upstream speaks TLS from connect (port 465)
  // Unset: `require` when upstream = required (TLS that must hold must be verified, as
  // before), `record` otherwise. insecure_upstream = true (the old key) sets `none`.
  std::optional<upstream_verify> verify_upstream;
  std::string upstream_fingerprint;            // pinned leaf SHA-256, "AB:CD:..."; empty: none
  std::chrono::milliseconds handshake_timeout{30'000};
};

// The verification in force: the explicit setting, else by `upstream` (see verify_upstream).
upstream_verify effective_upstream_verify(const tls_config& t);
// True when a certificate that fails its check must fail the upstream TLS (require, or a pin).
inline bool upstream_verification_required(const tls_config& t) {
  return !t.upstream_fingerprint.empty() || effective_upstream_verify(t) == upstream_verify::require;
}

// The built-in sink's AUTH: empty user accepts any credentials.
struct sink_config {
  std::string auth_user;
  std::string auth_password;
};

struct config {
  endpoint listen{"127.0.0.1", 2525};
  // Upstream SMTP server; std::nullopt means the built-in sink.
  std::optional<endpoint> upstream;
  // The admin API (admin/README.md): loopback only. "off" disables it. Unless given
  // explicitly (config or --admin), a default address that is taken is warned about and
  // skipped rather than stopping the relay.
  endpoint admin{"127.0.0.1", 8025};
  bool admin_off = false;
  bool admin_explicit = false;
  // The admin API's bearer token (admin/README.md, "Authentication"): every request must
  // carry it. Empty: none, which only a loopback admin address may have. From admin_token or
  // admin_token_file in the config, $MAILTAP_ADMIN_TOKEN, or --admin-token-file (last wins).
  std::string admin_token;
  // More names the admin API answers to in a Host (and a browser's Origin) header, beside
  // localhost, 127.0.0.1, [::1] and its own address: those clients elsewhere use to reach it
  // (admin_hosts; --admin-host). Lower-case, IPv6 in brackets.
  std::vector<std::string> admin_hosts;
  std::filesystem::path captures_dir;          // default: default_captures_dir()
  // fdatasync each capture before the end-of-data reply is released ([captures] fsync;
  // README "Captures" gives the cost). Off: records survive a crash of mailtap, not of the host.
  bool captures_fsync = false;
  // Retention ([captures] max_age, max_bytes; --captures-max-age, --captures-max-bytes):
  // finished captures past them are removed, oldest first (captures/retention.hpp). Unset: kept.
  std::optional<std::chrono::seconds> captures_max_age;
  std::optional<std::uint64_t> captures_max_bytes;
  std::vector<std::filesystem::path> scenarios;
  // Fault rules: [[fault]] tables of this file, then those of each scenario file, then
  // --scenario files (policies/README.md).
  std::vector<policies::rule> faults;
  std::uint64_t seed = 0;                      // 0: chosen at start and logged
  // The first session's number (its id's last part, and what nth_session and each session's
  // seed are made from): a capture's `show` gives it, with the seed, to get its faults again.
  std::uint64_t first_session = 1;
  std::size_t max_sessions = 256;              // smtp-sink's default concurrency
  std::size_t threads = 0;                     // 0: one per core
  // How long an I/O thread polls before it sleeps while one session is open (relay/io_loop.hpp);
  // zero: it sleeps at once.
  std::chrono::microseconds busy_poll{200};
  protocol::bare_eol_mode bare_eol = protocol::bare_eol_mode::strict;
  protocol::relay_timeouts timeouts;
  std::chrono::milliseconds upstream_connect_timeout{30'000};   // Postfix smtp_connect_timeout
  std::chrono::milliseconds drain_timeout{30'000};              // SIGTERM: in-flight deadline
  std::string relay_name = "mailtap";
  std::string log_level = "info";
  bool record_auth_username = false;           // AUTH usernames in captures (never secrets)
  upstream_identity identity = upstream_identity::none;   // key upstream_identity
  // Every connection starts with a load balancer's PROXY header naming the real client
  // (relay/proxy_listener.hpp); one without a valid header is refused with 421.
  bool listen_proxy_protocol = false;
  // Each connection's upstream is its original destination (SO_ORIGINAL_DST after an
  // nftables/iptables REDIRECT); one addressed to mailtap itself goes to `upstream`.
  bool transparent = false;
  tls_config tls;
  sink_config sink;
};

// max_sessions (smtp-sink's default is 256): each session holds two sockets and a capture
// file, so past a few thousand the descriptor limit binds first (accept pauses on EMFILE).
inline constexpr std::int64_t max_sessions_limit = 100'000;
// threads: 0 means one per core; 256 is well past any useful I/O thread count.
inline constexpr std::int64_t max_threads_limit = 256;
// busy_poll_us: a tenth of a second of polling is far past any round trip worth waiting for.
inline constexpr std::int64_t max_busy_poll_us = 100'000;

// The log levels the config file and --log-level accept (spdlog's names): one list for both.
inline constexpr std::string_view log_levels[] = {"trace", "debug", "info", "warn", "error", "off"};
inline constexpr std::string_view log_levels_expected = "one of trace|debug|info|warn|error|off";
bool is_log_level(std::string_view text);

// An admin token: 16 to 256 characters from A-Z a-z 0-9 - . _ ~ (RFC 3986 unreserved: it
// travels unescaped in a header, a WebSocket subprotocol and a query). 32 random bytes as hex
// (`openssl rand -hex 32`) fit.
inline constexpr std::size_t admin_token_min_chars = 16;
inline constexpr std::size_t admin_token_max_chars = 256;
// What is wrong with `token` as an admin token, in one line that does not repeat it; "" when
// nothing is.
std::string admin_token_problem(std::string_view token);
// The token in `file`: its text less trailing blanks and line ends, checked as above.
// nullopt and a one-line error naming the file (never the token) otherwise.
std::optional<std::string> read_admin_token_file(const std::filesystem::path& file, std::string& error);

// admin_hosts: at most this many names, each a DNS name (RFC 1035 2.3.4: 253 characters
// written out) or an IP address.
inline constexpr std::size_t max_admin_hosts = 64;
// `name` as an admin_hosts entry (lower-case, IPv6 in brackets); nullopt and a one-line
// problem when it is not a host name or an IP address.
std::optional<std::string> admin_host_name(std::string_view name, std::string& problem);

// Where mailtap keeps state (the generated certificate): $XDG_STATE_HOME/mailtap, else
// ~/.local/state/mailtap, else ./mailtap-state. ~ is $HOME, else (unset or empty) the password
// database's home of the user, for both defaults.
std::filesystem::path default_state_dir();

// $MAILTAP_CAPTURES if set, else $XDG_STATE_HOME/mailtap/captures, else
// ~/.local/state/mailtap/captures, else ./mailtap-captures.
std::filesystem::path default_captures_dir();

// The retention flags (`run --captures-max-age`, `captures prune --max-age`, and the -bytes
// ones): a duration string ("168h", "30m") and a size ("500MB", "10GiB", or bytes). nullopt
// and a one-line problem when malformed.
std::optional<std::chrono::seconds> parse_captures_max_age(std::string_view text, std::string& problem);
std::optional<std::uint64_t> parse_captures_max_bytes(std::string_view text, std::string& problem);

// Reads a TOML file over `base`. On error returns std::nullopt and sets `error` to one line:
// "FILE:LINE: key 'KEY': problem", safe on a terminal: what it echoes of the file has its
// controls escaped, C1 and bidirectional ones and U+2028/U+2029 too (protocol/terminal_text.hpp
// terminal_safe, as the capture readers' errors).
std::optional<config> load_config_file(const std::filesystem::path& file, const config& base,
                                       std::string& error);

// The same, from TOML text (for tests); `source_name` stands in for the file name.
std::optional<config> load_config_text(std::string_view toml, std::string_view source_name,
                                       const config& base, std::string& error);

}  // namespace mailtap
