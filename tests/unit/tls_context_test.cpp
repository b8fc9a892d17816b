// relay/tls_context: the self-signed pair (modes, reuse, renewal, profile, fingerprint as the
// openssl CLI prints it), explicit PEM pairs and their errors, context options, and real
// handshakes between the two contexts over a connected pair of local sockets.
#include "relay/tls_context.hpp"

#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

namespace fs = std::filesystem;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using namespace std::chrono_literals;
using mailtap::tls_info;
using mailtap::tls_settings;

class temp_dir {
 public:
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "mailtap-tls-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

unsigned mode_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0xffff;
  return st.st_mode & 07777;
}

// Runs a shell command, returns its stdout (empty when it cannot run).
std::string run(const std::string& cmd) {
  std::string out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ::pclose(f);
  return out;
}

bool have_openssl_cli() { return run("openssl version 2>/dev/null").rfind("OpenSSL", 0) == 0; }

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

std::string cli_fingerprint(const fs::path& cert) {
  std::string out = run("openssl x509 -noout -fingerprint -sha256 -in " + quoted(cert) + " 2>/dev/null");
  auto eq = out.find('=');
  if (eq == std::string::npos) return {};
  out = out.substr(eq + 1);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::unique_ptr<mailtap::server_tls> generated_in(const fs::path& dir) {
  tls_settings s;
  s.state_dir = dir;
  std::string error;
  auto tls = mailtap::make_server_tls(s, error);
  EXPECT_TRUE(tls) << error;
  EXPECT_EQ(error, "");
  return tls;
}

std::unique_ptr<ssl::context> client_ctx(const tls_settings& s) {
  std::string error;
  auto ctx = mailtap::make_client_tls(s, error);
  EXPECT_TRUE(ctx) << error;
  return ctx;
}

struct handshake_result {
  bool server_ok = false, client_ok = false;
  std::string server_error, client_error;
  tls_info server_side, client_side;
};

// Both handshakes on one io_context over a socketpair. A side that fails closes its socket,
// so the other side never waits for bytes that will not come.
handshake_result handshake(ssl::context& server_ctx, ssl::context& client_ctx, const std::string& host,
                           mailtap::peer_verification verify, int client_max_version = 0,
                           int client_min_version = 0, const std::string& pin = {}) {
  asio::io_context io;
  asio::local::stream_protocol::socket a(io), b(io);
  asio::local::connect_pair(a, b);
  ssl::stream<asio::local::stream_protocol::socket> server(std::move(a), server_ctx);
  ssl::stream<asio::local::stream_protocol::socket> client(std::move(b), client_ctx);
  if (client_max_version != 0) SSL_set_max_proto_version(client.native_handle(), client_max_version);
  if (client_min_version != 0) SSL_set_min_proto_version(client.native_handle(), client_min_version);
  std::string error;
  EXPECT_TRUE(mailtap::prepare_client_ssl(client.native_handle(), host, verify, error)) << error;

  handshake_result r;
  server.async_handshake(ssl::stream_base::server, [&](const boost::system::error_code& ec) {
    r.server_ok = !ec;
    r.server_error = ec.message();
    if (ec) server.lowest_layer().close();
  });
  client.async_handshake(ssl::stream_base::client, [&](const boost::system::error_code& ec) {
    r.client_ok = !ec;
    r.client_error = ec.message();
    if (ec) client.lowest_layer().close();
  });
  io.run_for(10s);
  r.server_side = mailtap::describe(server.native_handle());
  r.client_side = mailtap::describe(client.native_handle());
  if (r.client_ok) mailtap::assess_upstream(client.native_handle(), verify, pin, r.client_side);
  return r;
}

// verify: enforced (true) or off (false), as the upstream leg did before issue 13.
handshake_result handshake(ssl::context& server_ctx, ssl::context& client_ctx, const std::string& host,
                           bool verify, int client_max_version = 0, int client_min_version = 0) {
  return handshake(server_ctx, client_ctx, host,
                   verify ? mailtap::peer_verification::enforce : mailtap::peer_verification::off,
                   client_max_version, client_min_version);
}

// --- the self-signed pair --------------------------------------------------------------

TEST(SelfSigned, GeneratedWithPrivateModesAndReused) {
  temp_dir tmp;
  fs::path dir = tmp.path() / "state" / "tls";   // neither exists yet
  auto first = generated_in(dir);
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->generated);
  EXPECT_EQ(first->certificate_subject, "CN=mailtap");
  EXPECT_EQ(first->certificate_sha256.size(), 32u * 3 - 1);

  EXPECT_EQ(mode_of(dir), 0700u);
  EXPECT_EQ(mode_of(dir / "mailtap-selfsigned.crt"), 0600u);
  EXPECT_EQ(mode_of(dir / "mailtap-selfsigned.key"), 0600u);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 2);   // no temporaries left

  auto second = generated_in(dir);
  ASSERT_TRUE(second);
  EXPECT_TRUE(second->generated);
  EXPECT_EQ(second->certificate_sha256, first->certificate_sha256);
}

TEST(SelfSigned, FingerprintMatchesOpensslCli) {
  ASSERT_TRUE(have_openssl_cli()) << "the openssl command is missing (scripts/test installs it)";
  temp_dir tmp;
  auto tls = generated_in(tmp.path());
  ASSERT_TRUE(tls);
  EXPECT_EQ(cli_fingerprint(tmp.path() / "mailtap-selfsigned.crt"), tls->certificate_sha256);
}

TEST(SelfSigned, CertificateProfile) {
  temp_dir tmp;
  ASSERT_TRUE(generated_in(tmp.path()));
  FILE* f = std::fopen((tmp.path() / "mailtap-selfsigned.crt").c_str(), "r");
  ASSERT_NE(f, nullptr);
  X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  ASSERT_NE(cert, nullptr);

  EXPECT_EQ(X509_get_version(cert), X509_VERSION_3);
  EXPECT_EQ(X509_get_signature_nid(cert), NID_ecdsa_with_SHA256);
  EVP_PKEY* pub = X509_get0_pubkey(cert);
  ASSERT_NE(pub, nullptr);
  EXPECT_EQ(EVP_PKEY_get_base_id(pub), EVP_PKEY_EC);
  char group[64] = {};
  std::size_t glen = 0;
  EXPECT_EQ(EVP_PKEY_get_group_name(pub, group, sizeof group, &glen), 1);
  EXPECT_STREQ(group, "prime256v1");
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)), 0);

  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(cert), X509_get0_notAfter(cert)), 1);
  EXPECT_EQ(days, 825);
  EXPECT_EQ(secs, 0);

  EXPECT_EQ(X509_check_host(cert, "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert, "127.0.0.1", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert, "::1", 0), 1);
  EXPECT_EQ(X509_check_host(cert, "example.com", 0, 0, nullptr), 0);
  EXPECT_EQ(X509_check_ca(cert), 0);   // CA:FALSE
  X509_free(cert);
}

TEST(SelfSigned, PairThatExpiresSoonIsRegenerated) {
  ASSERT_TRUE(have_openssl_cli()) << "the openssl command is missing (scripts/test installs it)";
  temp_dir tmp;
  fs::path crt = tmp.path() / "mailtap-selfsigned.crt", key = tmp.path() / "mailtap-selfsigned.key";
  run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=old -keyout " +
      quoted(key) + " -out " + quoted(crt) + " 2>/dev/null");
  ASSERT_TRUE(fs::exists(crt));
  std::string old_fp = cli_fingerprint(crt);
  auto tls = generated_in(tmp.path());
  ASSERT_TRUE(tls);
  EXPECT_EQ(tls->certificate_subject, "CN=mailtap");
  EXPECT_NE(tls->certificate_sha256, old_fp);
  EXPECT_EQ(cli_fingerprint(crt), tls->certificate_sha256);
  EXPECT_EQ(mode_of(key), 0600u);
}

TEST(SelfSigned, LoneFileIsReplacedByANewPair) {
  temp_dir tmp;
  std::ofstream(tmp.path() / "mailtap-selfsigned.crt") << "stale\n";
  auto tls = generated_in(tmp.path());
  ASSERT_TRUE(tls);
  EXPECT_TRUE(fs::exists(tmp.path() / "mailtap-selfsigned.key"));
}

TEST(SelfSigned, CorruptPairIsAnErrorNotSilentlyReplaced) {
  temp_dir tmp;
  std::ofstream(tmp.path() / "mailtap-selfsigned.crt") << "garbage\n";
  std::ofstream(tmp.path() / "mailtap-selfsigned.key") << "garbage\n";
  tls_settings s;
  s.state_dir = tmp.path();
  std::string error;
  EXPECT_FALSE(mailtap::make_server_tls(s, error));
  EXPECT_NE(error.find("mailtap-selfsigned.crt: cannot read certificate"), std::string::npos) << error;
  EXPECT_NE(error.find("to generate a new pair"), std::string::npos) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos);
}

TEST(SelfSigned, NeedsAStateDir) {
  std::string error;
  EXPECT_FALSE(mailtap::make_server_tls(tls_settings{}, error));
  EXPECT_NE(error.find("state_dir"), std::string::npos) << error;
}

// --- explicit pairs --------------------------------------------------------------------

TEST(ExplicitPair, Loads) {
  temp_dir tmp;
  auto gen = generated_in(tmp.path());
  ASSERT_TRUE(gen);
  tls_settings s;
  s.cert_file = tmp.path() / "mailtap-selfsigned.crt";
  s.key_file = tmp.path() / "mailtap-selfsigned.key";
  std::string error;
  auto tls = mailtap::make_server_tls(s, error);
  ASSERT_TRUE(tls) << error;
  EXPECT_FALSE(tls->generated);
  EXPECT_EQ(tls->certificate_subject, "CN=mailtap");
  EXPECT_EQ(tls->certificate_sha256, gen->certificate_sha256);
}

TEST(ExplicitPair, CertificateWithChainAndKeyInOneFile) {
  ASSERT_TRUE(have_openssl_cli()) << "the openssl command is missing (scripts/test installs it)";
  temp_dir tmp;
  fs::path d = tmp.path();
  // A CA and a leaf it signed; the leaf file carries the leaf, the CA (chain) and the key.
  run("cd " + quoted(d) +
      " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=test-ca"
      " -keyout ca.key -out ca.crt 2>/dev/null"
      " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /O=Example/CN=mx.example"
      " -keyout leaf.key -out leaf.csr 2>/dev/null"
      " && openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out leaf.crt 2>/dev/null"
      " && cat leaf.crt ca.crt leaf.key > bundle.pem");
  ASSERT_TRUE(fs::exists(d / "bundle.pem"));
  tls_settings s;
  s.cert_file = d / "bundle.pem";
  s.key_file = d / "bundle.pem";
  std::string error;
  auto tls = mailtap::make_server_tls(s, error);
  ASSERT_TRUE(tls) << error;
  EXPECT_EQ(tls->certificate_subject, "CN=mx.example,O=Example");
  EXPECT_EQ(tls->certificate_sha256, cli_fingerprint(d / "leaf.crt"));
  STACK_OF(X509)* chain = nullptr;
  ASSERT_EQ(SSL_CTX_get0_chain_certs(tls->ctx.native_handle(), &chain), 1);
  ASSERT_NE(chain, nullptr);
  EXPECT_EQ(sk_X509_num(chain), 1);

  // The client trusts the CA only: the server must send the chain for this to verify.
  tls_settings cs;
  cs.ca_file = d / "ca.crt";
  auto cctx = client_ctx(cs);
  ASSERT_TRUE(cctx);
  auto r = handshake(tls->ctx, *cctx, "mx.example", true);
  EXPECT_TRUE(r.client_ok) << r.client_error;
  EXPECT_TRUE(r.client_side.verified);
}

TEST(ExplicitPair, MismatchedKeyFails) {
  temp_dir a, b;
  ASSERT_TRUE(generated_in(a.path()));
  ASSERT_TRUE(generated_in(b.path()));
  tls_settings s;
  s.cert_file = a.path() / "mailtap-selfsigned.crt";
  s.key_file = b.path() / "mailtap-selfsigned.key";
  std::string error;
  EXPECT_FALSE(mailtap::make_server_tls(s, error));
  EXPECT_EQ(error, s.key_file.string() + ": key does not match certificate " + s.cert_file.string());
}

TEST(ExplicitPair, MissingFilesAreNamed) {
  temp_dir tmp;
  ASSERT_TRUE(generated_in(tmp.path()));
  tls_settings s;
  s.cert_file = tmp.path() / "nope.pem";
  s.key_file = tmp.path() / "mailtap-selfsigned.key";
  std::string error;
  EXPECT_FALSE(mailtap::make_server_tls(s, error));
  EXPECT_EQ(error, s.cert_file.string() + ": cannot read certificate: No such file or directory");

  s.cert_file = tmp.path() / "mailtap-selfsigned.crt";
  s.key_file = tmp.path() / "nokey.pem";
  EXPECT_FALSE(mailtap::make_server_tls(s, error));
  EXPECT_EQ(error, s.key_file.string() + ": cannot read private key: No such file or directory");
}

TEST(ExplicitPair, NotPemAndEncryptedKeyAreClearErrors) {
  temp_dir tmp;
  ASSERT_TRUE(generated_in(tmp.path()));
  fs::path junk = tmp.path() / "junk.pem";
  std::ofstream(junk) << "not a certificate\n";
  tls_settings s;
  s.cert_file = junk;
  s.key_file = tmp.path() / "mailtap-selfsigned.key";
  std::string error;
  EXPECT_FALSE(mailtap::make_server_tls(s, error));
  EXPECT_EQ(error, junk.string() + ": cannot read certificate: no PEM certificate in file");

  ASSERT_TRUE(have_openssl_cli()) << "the openssl command is missing (scripts/test installs it)";
  fs::path enc = tmp.path() / "enc.key";
  run("openssl pkey -in " + quoted(tmp.path() / "mailtap-selfsigned.key") + " -aes256 -passout pass:x -out " +
      quoted(enc) + " 2>/dev/null");
  ASSERT_TRUE(fs::exists(enc));
  s.cert_file = tmp.path() / "mailtap-selfsigned.crt";
  s.key_file = enc;
  EXPECT_FALSE(mailtap::make_server_tls(s, error));
  EXPECT_EQ(error, enc.string() + ": cannot read private key: encrypted keys are not supported");
}

TEST(ExplicitPair, CertWithoutKeyIsAnError) {
  tls_settings s;
  s.cert_file = "/some/cert.pem";
  std::string error;
  EXPECT_FALSE(mailtap::make_server_tls(s, error));
  EXPECT_NE(error.find("cert_file and key_file"), std::string::npos) << error;
}

// --- context options -------------------------------------------------------------------

TEST(Contexts, Tls12MinimumNoRenegotiationNoCompression) {
  temp_dir tmp;
  auto server = generated_in(tmp.path());
  ASSERT_TRUE(server);
  tls_settings s;
  s.ca_file = tmp.path() / "mailtap-selfsigned.crt";
  auto client = client_ctx(s);
  ASSERT_TRUE(client);
  for (SSL_CTX* c : {server->ctx.native_handle(), client->native_handle()}) {
    EXPECT_EQ(SSL_CTX_get_min_proto_version(c), TLS1_2_VERSION);
    EXPECT_NE(SSL_CTX_get_options(c) & SSL_OP_NO_RENEGOTIATION, 0u);
    EXPECT_NE(SSL_CTX_get_options(c) & SSL_OP_NO_COMPRESSION, 0u);
  }
  EXPECT_EQ(SSL_CTX_get_verify_mode(client->native_handle()), SSL_VERIFY_PEER);
  s.insecure_upstream = true;
  auto insecure = client_ctx(s);
  ASSERT_TRUE(insecure);
  EXPECT_EQ(SSL_CTX_get_verify_mode(insecure->native_handle()), SSL_VERIFY_NONE);
}

TEST(Contexts, CaFileErrorsNameTheFile) {
  temp_dir tmp;
  tls_settings s;
  s.ca_file = tmp.path() / "missing-ca.pem";
  std::string error;
  EXPECT_FALSE(mailtap::make_client_tls(s, error));
  EXPECT_EQ(error, s.ca_file.string() + ": cannot read CA bundle: No such file or directory");

  std::ofstream(tmp.path() / "empty-ca.pem") << "\n";
  s.ca_file = tmp.path() / "empty-ca.pem";
  EXPECT_FALSE(mailtap::make_client_tls(s, error));
  EXPECT_EQ(error, s.ca_file.string() + ": no PEM certificates in CA bundle");
}

TEST(Contexts, PrepareClientSslNeedsANameToVerify) {
  auto ctx = client_ctx(tls_settings{});
  ASSERT_TRUE(ctx);
  SSL* ssl = SSL_new(ctx->native_handle());
  std::string error;
  EXPECT_FALSE(mailtap::prepare_client_ssl(ssl, "", mailtap::peer_verification::enforce, error));
  EXPECT_NE(error.find("host name"), std::string::npos) << error;
  EXPECT_TRUE(mailtap::prepare_client_ssl(ssl, "", mailtap::peer_verification::off, error)) << error;
  // Recording checks the chain even without a name (the result is only recorded).
  EXPECT_TRUE(mailtap::prepare_client_ssl(ssl, "", mailtap::peer_verification::record, error)) << error;
  SSL_free(ssl);
}

// --- handshakes ------------------------------------------------------------------------

class Handshake : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = generated_in(tmp_.path());
    ASSERT_TRUE(server_);
    ca_ = tmp_.path() / "mailtap-selfsigned.crt";
  }
  temp_dir tmp_;
  std::unique_ptr<mailtap::server_tls> server_;
  fs::path ca_;
};

TEST_F(Handshake, VerifiedAgainstTheGeneratedCertificate) {
  tls_settings s;
  s.ca_file = ca_;
  auto client = client_ctx(s);
  ASSERT_TRUE(client);
  auto r = handshake(server_->ctx, *client, "localhost", true);
  ASSERT_TRUE(r.client_ok) << r.client_error;
  ASSERT_TRUE(r.server_ok) << r.server_error;

  const tls_info& c = r.client_side;
  EXPECT_TRUE(c.version == "TLSv1.3" || c.version == "TLSv1.2") << c.version;
  EXPECT_FALSE(c.cipher.empty());
  EXPECT_EQ(c.sni, "localhost");
  EXPECT_EQ(c.peer_subject, "CN=mailtap");
  EXPECT_EQ(c.peer_sha256, server_->certificate_sha256);
  EXPECT_TRUE(c.verified);

  const tls_info& sv = r.server_side;
  EXPECT_EQ(sv.version, c.version);
  EXPECT_EQ(sv.cipher, c.cipher);
  EXPECT_EQ(sv.sni, "localhost");   // the name the client asked for
  EXPECT_EQ(sv.peer_subject, "");   // no client certificate
  EXPECT_FALSE(sv.verified);
}

TEST_F(Handshake, Tls12WhenThePeerStopsThere) {
  tls_settings s;
  s.ca_file = ca_;
  auto client = client_ctx(s);
  ASSERT_TRUE(client);
  auto r = handshake(server_->ctx, *client, "localhost", true, TLS1_2_VERSION);
  ASSERT_TRUE(r.client_ok) << r.client_error;
  EXPECT_EQ(r.client_side.version, "TLSv1.2");
  EXPECT_EQ(r.client_side.cipher.rfind("ECDHE-ECDSA-", 0), 0u) << r.client_side.cipher;
  EXPECT_TRUE(r.client_side.verified);
}

TEST_F(Handshake, Tls11IsRefused) {
  tls_settings s;
  s.insecure_upstream = true;
  auto client = client_ctx(s);
  ASSERT_TRUE(client);
  SSL_CTX_set_security_level(client->native_handle(), 0);
  SSL_CTX_set_cipher_list(client->native_handle(), "ALL:@SECLEVEL=0");
  auto r = handshake(server_->ctx, *client, "localhost", false, TLS1_1_VERSION, TLS1_VERSION);
  EXPECT_FALSE(r.server_ok);
  EXPECT_FALSE(r.client_ok);
  EXPECT_NE(r.server_error.find("unsupported protocol"), std::string::npos) << r.server_error;
}

TEST_F(Handshake, IpLiteralsVerifyAgainstIpSansWithoutSni) {
  tls_settings s;
  s.ca_file = ca_;
  auto client = client_ctx(s);
  ASSERT_TRUE(client);
  for (const char* host : {"127.0.0.1", "::1", "[::1]"}) {
    auto r = handshake(server_->ctx, *client, host, true);
    EXPECT_TRUE(r.client_ok) << host << ": " << r.client_error;
    EXPECT_TRUE(r.client_side.verified) << host;
    EXPECT_EQ(r.client_side.sni, "") << host;
    EXPECT_EQ(r.server_side.sni, "") << host;
  }
  auto r = handshake(server_->ctx, *client, "10.0.0.1", true);
  EXPECT_FALSE(r.client_ok);
}

TEST_F(Handshake, TrailingDotDroppedFromSni) {
  tls_settings s;
  s.ca_file = ca_;
  auto client = client_ctx(s);
  ASSERT_TRUE(client);
  auto r = handshake(server_->ctx, *client, "localhost.", true);
  EXPECT_TRUE(r.client_ok) << r.client_error;
  EXPECT_EQ(r.server_side.sni, "localhost");
}

TEST_F(Handshake, WrongHostNameFails) {
  tls_settings s;
  s.ca_file = ca_;
  auto client = client_ctx(s);
  ASSERT_TRUE(client);
  auto r = handshake(server_->ctx, *client, "mx.example.com", true);
  EXPECT_FALSE(r.client_ok);
  EXPECT_FALSE(r.server_ok);
  EXPECT_NE(r.client_error.find("certificate verify failed"), std::string::npos) << r.client_error;
}

TEST_F(Handshake, VerificationWithoutTheCaFails) {
  auto client = client_ctx(tls_settings{});   // system default paths: the self-signed cert is unknown
  ASSERT_TRUE(client);
  auto r = handshake(server_->ctx, *client, "localhost", true);
  EXPECT_FALSE(r.client_ok);
  EXPECT_FALSE(r.server_ok);
  EXPECT_NE(r.client_error.find("certificate verify failed"), std::string::npos) << r.client_error;
}

TEST_F(Handshake, InsecureUpstreamSucceedsUnverified) {
  tls_settings s;
  s.insecure_upstream = true;
  auto client = client_ctx(s);
  ASSERT_TRUE(client);
  auto r = handshake(server_->ctx, *client, "mx.example.com", false);
  ASSERT_TRUE(r.client_ok) << r.client_error;
  ASSERT_TRUE(r.server_ok) << r.server_error;
  EXPECT_EQ(r.client_side.peer_subject, "CN=mailtap");
  EXPECT_EQ(r.client_side.peer_sha256, server_->certificate_sha256);
  EXPECT_FALSE(r.client_side.verified);
  EXPECT_EQ(r.server_side.sni, "mx.example.com");
}

// --- issue 13: verify and record, as MTAs do (RFC 7435) -----------------------------------

using mailtap::peer_verification;

TEST_F(Handshake, RecordGoesOnWithAnUntrustedCertificateAndSaysWhy) {
  auto client = client_ctx(tls_settings{});   // system CAs: the self-signed certificate is unknown
  ASSERT_TRUE(client);
  auto r = handshake(server_->ctx, *client, "localhost", peer_verification::record);
  ASSERT_TRUE(r.client_ok) << r.client_error;
  ASSERT_TRUE(r.server_ok) << r.server_error;
  EXPECT_FALSE(r.client_side.verified);
  EXPECT_EQ(r.client_side.verification, "untrusted: self-signed certificate");
  EXPECT_EQ(r.client_side.peer_sha256, server_->certificate_sha256);
}

TEST_F(Handshake, RecordGoesOnWithAnotherNameAndSaysWhy) {
  tls_settings s;
  s.ca_file = ca_;
  auto client = client_ctx(s);
  ASSERT_TRUE(client);
  auto r = handshake(server_->ctx, *client, "mx.example.com", peer_verification::record);
  ASSERT_TRUE(r.client_ok) << r.client_error;
  EXPECT_FALSE(r.client_side.verified);
  EXPECT_EQ(r.client_side.verification, "name mismatch: hostname mismatch");
  r = handshake(server_->ctx, *client, "10.0.0.1", peer_verification::record);
  ASSERT_TRUE(r.client_ok) << r.client_error;
  EXPECT_EQ(r.client_side.verification, "name mismatch: IP address mismatch");
}

TEST_F(Handshake, RecordVerifiesAGoodCertificate) {
  tls_settings s;
  s.ca_file = ca_;
  auto client = client_ctx(s);
  ASSERT_TRUE(client);
  auto r = handshake(server_->ctx, *client, "localhost", peer_verification::record);
  ASSERT_TRUE(r.client_ok) << r.client_error;
  EXPECT_TRUE(r.client_side.verified);
  EXPECT_EQ(r.client_side.verification, "verified");
}

TEST_F(Handshake, OffSaysNotChecked) {
  tls_settings s;
  s.insecure_upstream = true;
  auto client = client_ctx(s);
  ASSERT_TRUE(client);
  auto r = handshake(server_->ctx, *client, "localhost", peer_verification::off);
  ASSERT_TRUE(r.client_ok) << r.client_error;
  EXPECT_FALSE(r.client_side.verified);
  EXPECT_EQ(r.client_side.verification, "not checked: verification off by configuration");
}

TEST_F(Handshake, APinnedFingerprintDecidesAlone) {
  auto client = client_ctx(tls_settings{});   // the chain would not verify: the pin is what counts
  ASSERT_TRUE(client);
  auto r = handshake(server_->ctx, *client, "mx.example.com", peer_verification::off, 0, 0,
                     server_->certificate_sha256);
  ASSERT_TRUE(r.client_ok) << r.client_error;
  EXPECT_TRUE(r.client_side.verified);
  EXPECT_EQ(r.client_side.verification, "verified: fingerprint matches the pin");

  const std::string other(95, 'A');
  r = handshake(server_->ctx, *client, "localhost", peer_verification::off, 0, 0, other);
  ASSERT_TRUE(r.client_ok) << r.client_error;
  EXPECT_FALSE(r.client_side.verified);
  EXPECT_EQ(r.client_side.verification,
            "fingerprint mismatch: the certificate is " + server_->certificate_sha256 + ", pinned " + other);
}

}  // namespace
