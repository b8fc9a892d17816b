// TLS contexts for both legs (issue 3): the server context for the client leg (mailtap is
// the TLS server) with its certificate — loaded from PEM files, or the self-signed pair
// generated once and kept in the state directory — and the client context for the upstream
// leg (mailtap is the TLS client) with its verification settings. Also the per-stream set-up
// before a client handshake (SNI, host name verification) and the summary a capture records
// after a handshake. Owns nothing but the contexts it returns; logs nothing (the caller logs
// the fingerprint); never throws: errors come back as one line naming the file and problem.
// Threading: make_*_tls once at start-up on one thread; the contexts are read-only afterwards
// and shared by every session on any io_context thread (SSL_CTX is safe for concurrent
// SSL_new). prepare_client_ssl and describe touch only the one SSL*: call them on the
// stream's executor.
#pragma once
#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

namespace mailtap {

struct tls_settings {
  std::filesystem::path cert_file, key_file;   // both empty: use/generate the self-signed pair in state_dir
  std::filesystem::path state_dir;             // where the generated pair lives (0700 dir, files 0600)
  std::filesystem::path ca_file;               // upstream verification CA bundle; empty: system default paths
  bool insecure_upstream = false;              // skip upstream certificate verification (explicit, recorded)
  std::chrono::milliseconds handshake_timeout{30'000};
};

// File names of the generated pair inside state_dir.
inline constexpr const char* selfsigned_cert_name = "mailtap-selfsigned.crt";
inline constexpr const char* selfsigned_key_name = "mailtap-selfsigned.key";

struct server_tls {                    // for the client leg (mailtap acts as TLS server)
  boost::asio::ssl::context ctx{boost::asio::ssl::context::tls_server};
  std::string certificate_subject;     // RFC 2253, e.g. "CN=mailtap"
  std::string certificate_sha256;      // "AB:CD:..." like openssl x509 -fingerprint -sha256
  bool generated = false;              // true when the self-signed pair was created or reused from state_dir
};

// Loads cert_file (PEM; the leaf first, then any chain certificates) and key_file (PEM,
// unencrypted) or, when both are empty, reuses state_dir/mailtap-selfsigned.{crt,key}, or
// generates them when absent or when the certificate expires within 30 days (EC P-256 key,
// X.509 v3, CN=mailtap, SAN DNS:localhost + IP:127.0.0.1 + IP:::1, valid 825 days, SHA-256
// signature; written 0600 via rename, state_dir created 0700 if missing). TLS >= 1.2 only,
// renegotiation disabled, no compression; TLS 1.2 suites forward secret only (AEAD first,
// ECDHE-CBC last for old peers), TLS 1.3 suites OpenSSL's defaults. No client certificate is requested.
// Null and a one-line error on failure.
std::unique_ptr<server_tls> make_server_tls(const tls_settings& s, std::string& error);

// For the upstream leg (mailtap acts as TLS client): TLS >= 1.2, verify_peer against ca_file
// or the system default paths; with insecure_upstream verify_none (nothing is loaded).
std::unique_ptr<boost::asio::ssl::context> make_client_tls(const tls_settings& s, std::string& error);

// How a client stream checks the upstream's certificate (issue 13, RFC 7435):
//   off     nothing is checked (verify_upstream = none; also a pinned fingerprint, which is
//           compared after the handshake instead of the chain and name);
//   record  the chain and name are checked but the handshake goes on whatever the result
//           (SSL_VERIFY_NONE: OpenSSL still verifies and keeps the first error for
//           SSL_get_verify_result), as Postfix's smtp_tls_security_level = may;
//   enforce a certificate that fails the check fails the handshake (SSL_VERIFY_PEER).
enum class peer_verification { off, record, enforce };

// Before a stream's client handshake: sets SNI (names only, not IP literals; a trailing dot
// is dropped) and, unless off, the name the certificate must carry (SSL_set1_host for names,
// the IP address SAN for literals; "[::1]" brackets accepted). Also sets this stream's verify
// mode (PEER for enforce, NONE otherwise, overriding the context's). enforce with an empty
// host is an error (a chain check without a name proves nothing).
bool prepare_client_ssl(SSL* ssl, const std::string& host, peer_verification v, std::string& error);

// What captures record per leg after a handshake.
struct tls_info {
  std::string version;        // "TLSv1.3"
  std::string cipher;         // OpenSSL name, "TLS_AES_256_GCM_SHA384"
  std::string sni;            // server side: the name the client asked for; client side: the name sent
  std::string peer_subject;   // peer certificate (server side: a client certificate, if any)
  std::string peer_sha256;
  bool verified = false;      // peer verification was on, a certificate was presented and it passed
  // Upstream leg (filled by assess_upstream): "verified", or why not, as Postfix tells a
  // Verified from an Untrusted TLS connection: "untrusted: self-signed certificate",
  // "name mismatch: hostname mismatch", "no certificate presented", "fingerprint mismatch:
  // ...", "not checked: verification off by configuration". Empty on the client leg.
  std::string verification;
};
tls_info describe(SSL* ssl);

// After an upstream handshake: sets info.verified and info.verification for the stream's
// policy. With a pin ("AB:CD:..." as describe gives peer_sha256) only the fingerprint counts.
void assess_upstream(SSL* ssl, peer_verification v, const std::string& pin_sha256, tls_info& info);

}  // namespace mailtap
