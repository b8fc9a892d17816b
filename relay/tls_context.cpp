// TLS contexts, the self-signed pair in the state directory, per-stream client set-up and
// the handshake summary. OpenSSL is called directly wherever Asio's wrappers would hide the
// reason for a failure; every OpenSSL error queue this file fills is cleared before return.
#include "relay/tls_context.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <functional>
#include <system_error>
#include <vector>

#include "config_reader/document.hpp"

namespace mailtap {
namespace {

namespace fs = std::filesystem;
namespace ssl = boost::asio::ssl;

template <auto Free>
struct ossl_free {
  template <class T>
  void operator()(T* p) const { Free(p); }
};
using x509_ptr = std::unique_ptr<X509, ossl_free<X509_free>>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, ossl_free<EVP_PKEY_free>>;
using bio_ptr = std::unique_ptr<BIO, ossl_free<BIO_free_all>>;
using bn_ptr = std::unique_ptr<BIGNUM, ossl_free<BN_free>>;
using ext_ptr = std::unique_ptr<X509_EXTENSION, ossl_free<X509_EXTENSION_free>>;

// TLS 1.2 suites: forward secret only, AEAD first, CBC (ECDHE) last for old peers. TLS 1.3
// suites are OpenSSL's defaults (all AEAD).
constexpr const char* tls12_ciphers =
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:ECDHE+AES:"
    "!aNULL:!eNULL:!MD5:!DSS:!PSK:!SRP:!CAMELLIA:!ARIA:!SEED";
constexpr int selfsigned_days = 825;
constexpr int renew_days = 30;                 // regenerate the pair this long before it expires
constexpr long backdate_seconds = 3600;        // notBefore an hour early, for peers with slow clocks
constexpr std::size_t max_pem_bytes = 16u << 20;

// The most specific reason OpenSSL queued; clears the queue.
std::string ossl_reason() {
  unsigned long e = ERR_peek_last_error();
  std::string out;
  if (e != 0) {
    if (const char* r = ERR_reason_error_string(e)) {
      out = r;
    } else {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof buf);
      out = buf;
    }
  }
  ERR_clear_error();
  return out.empty() ? "unknown OpenSSL error" : out;
}

bool ossl_end_of_pem() {
  unsigned long e = ERR_peek_last_error();
  return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

// The passphrase callback: never prompt on a terminal, remember that a passphrase was wanted.
int no_passphrase(char*, int, int, void* asked) {
  if (asked != nullptr) *static_cast<bool*>(asked) = true;
  return -1;
}

std::string errno_text(int e) { return std::error_code(e, std::generic_category()).message(); }

// PEM files are read as config files are (regular files only, capped): config_reader::read_file.
bool read_file(const fs::path& path, std::string& out, std::string& why) {
  auto read = config_reader::read_file(path, max_pem_bytes);
  if (!read.ok()) {
    why = read.problem;
    return false;
  }
  out = std::move(read.text);
  return true;
}

bio_ptr memory_bio(const std::string& bytes) {
  return bio_ptr(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
}

std::string name_text(const X509_NAME* name) {
  if (name == nullptr) return {};
  bio_ptr b(BIO_new(BIO_s_mem()));
  if (!b) return {};
  // RFC 2253 ("CN=mailtap,O=Example"), UTF-8 kept readable, controls escaped.
  X509_NAME_print_ex(b.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long n = BIO_get_mem_data(b.get(), &data);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

std::string sha256_fingerprint(const X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (cert == nullptr || X509_digest(cert, EVP_sha256(), md, &n) != 1) {
    ERR_clear_error();
    return {};
  }
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(n * 3);
  for (unsigned int i = 0; i < n; ++i) {
    if (i != 0) out += ':';
    out += hex[md[i] >> 4];
    out += hex[md[i] & 0x0f];
  }
  return out;
}

struct cert_chain {
  x509_ptr leaf;
  std::vector<x509_ptr> rest;
};

bool load_certificates(const fs::path& path, cert_chain& chain, std::string& error) {
  std::string pem, why;
  if (!read_file(path, pem, why)) {
    error = path.string() + ": cannot read certificate: " + why;
    return false;
  }
  bio_ptr b = memory_bio(pem);
  ERR_clear_error();
  chain.leaf.reset(PEM_read_bio_X509(b.get(), nullptr, no_passphrase, nullptr));
  if (!chain.leaf) {
    error = path.string() + ": cannot read certificate: " +
            (ossl_end_of_pem() ? (ERR_clear_error(), std::string("no PEM certificate in file")) : ossl_reason());
    return false;
  }
  for (;;) {
    x509_ptr next(PEM_read_bio_X509(b.get(), nullptr, no_passphrase, nullptr));
    if (!next) break;
    chain.rest.push_back(std::move(next));
  }
  if (!ossl_end_of_pem()) {
    error = path.string() + ": cannot read chain certificate " + std::to_string(chain.rest.size() + 2) + ": " +
            ossl_reason();
    return false;
  }
  ERR_clear_error();
  return true;
}

bool load_key(const fs::path& path, pkey_ptr& key, std::string& error) {
  std::string pem, why;
  if (!read_file(path, pem, why)) {
    error = path.string() + ": cannot read private key: " + why;
    return false;
  }
  bio_ptr b = memory_bio(pem);
  bool asked = false;
  ERR_clear_error();
  key.reset(PEM_read_bio_PrivateKey(b.get(), nullptr, no_passphrase, &asked));
  if (!key) {
    std::string reason = ossl_end_of_pem() ? "no PEM private key in file" : ossl_reason();
    ERR_clear_error();
    error = path.string() + ": cannot read private key: " +
            (asked ? std::string("encrypted keys are not supported") : reason);
    return false;
  }
  return true;
}

bool configure_common(SSL_CTX* ctx, std::string& error) {
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(ctx, tls12_ciphers) != 1) {
    error = "tls: cannot configure the context: " + ossl_reason();
    return false;
  }
  return true;
}

// Installs the certificate, its chain and the key; the key must match the leaf.
bool install(SSL_CTX* ctx, cert_chain& chain, EVP_PKEY* key, const fs::path& cert_path,
             const fs::path& key_path, std::string& error) {
  ERR_clear_error();
  if (X509_check_private_key(chain.leaf.get(), key) != 1) {
    ERR_clear_error();
    error = key_path.string() + ": key does not match certificate " + cert_path.string();
    return false;
  }
  if (SSL_CTX_use_certificate(ctx, chain.leaf.get()) != 1) {
    error = cert_path.string() + ": certificate rejected: " + ossl_reason();
    return false;
  }
  SSL_CTX_clear_chain_certs(ctx);
  for (auto& c : chain.rest) {
    if (SSL_CTX_add1_chain_cert(ctx, c.get()) != 1) {
      error = cert_path.string() + ": chain certificate rejected: " + ossl_reason();
      return false;
    }
  }
  if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
    error = key_path.string() + ": private key rejected: " + ossl_reason();
    return false;
  }
  return true;
}

// --- the self-signed pair ---------------------------------------------------------------

bool add_extension(X509* cert, X509V3_CTX* v3, int nid, const char* value) {
  ext_ptr ext(X509V3_EXT_conf_nid(nullptr, v3, nid, value));
  return ext && X509_add_ext(cert, ext.get(), -1) == 1;
}

bool generate_pair(pkey_ptr& key, x509_ptr& cert, std::string& error) {
  ERR_clear_error();
  key.reset(EVP_EC_gen("P-256"));
  if (!key) {
    error = "tls: cannot generate an EC P-256 key: " + ossl_reason();
    return false;
  }
  cert.reset(X509_new());
  unsigned char serial[16];
  if (!cert || RAND_bytes(serial, sizeof serial) != 1) {
    error = "tls: cannot create a certificate: " + ossl_reason();
    return false;
  }
  serial[0] = static_cast<unsigned char>((serial[0] & 0x7f) | 0x40);   // positive, 16 bytes, non-zero
  bn_ptr bn(BN_bin2bn(serial, sizeof serial, nullptr));
  X509_NAME* name = X509_get_subject_name(cert.get());
  bool ok = bn && X509_set_version(cert.get(), X509_VERSION_3) == 1 &&
            BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())) != nullptr &&
            X509_gmtime_adj(X509_getm_notBefore(cert.get()), -backdate_seconds) != nullptr &&
            X509_time_adj_ex(X509_getm_notAfter(cert.get()), selfsigned_days, -backdate_seconds, nullptr) !=
                nullptr &&
            X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                       reinterpret_cast<const unsigned char*>("mailtap"), -1, -1, 0) == 1 &&
            X509_set_issuer_name(cert.get(), name) == 1 && X509_set_pubkey(cert.get(), key.get()) == 1;
  if (ok) {
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
    // No keyUsage: with one lacking keyCertSign, OpenSSL would not treat the certificate as
    // self-signed, and a peer could not use it as its own trust anchor (ca_file).
    ok = add_extension(cert.get(), &v3, NID_basic_constraints, "critical,CA:FALSE") &&
         add_extension(cert.get(), &v3, NID_subject_key_identifier, "hash") &&
         add_extension(cert.get(), &v3, NID_authority_key_identifier, "keyid:always") &&
         add_extension(cert.get(), &v3, NID_ext_key_usage, "serverAuth") &&
         add_extension(cert.get(), &v3, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1") &&
         X509_sign(cert.get(), key.get(), EVP_sha256()) > 0;
  }
  if (!ok) {
    error = "tls: cannot create the self-signed certificate: " + ossl_reason();
    return false;
  }
  return true;
}

bool to_pem(const std::function<int(BIO*)>& write, std::string& out) {
  bio_ptr b(BIO_new(BIO_s_mem()));
  if (!b || write(b.get()) != 1) return false;
  char* data = nullptr;
  long n = BIO_get_mem_data(b.get(), &data);
  if (n <= 0) return false;
  out.assign(data, static_cast<std::size_t>(n));
  return true;
}

// Writes path atomically: a 0600 temporary in the same directory, fsync, rename.
bool write_private_file(const fs::path& path, const std::string& bytes, std::string& error) {
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    error = tmp.string() + ": cannot create: " + errno_text(errno);
    return false;
  }
  bool ok = ::fchmod(fd, 0600) == 0;
  std::size_t done = 0;
  while (ok && done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  int saved = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    saved = errno;
  }
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    saved = errno;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    error = path.string() + ": cannot write: " + errno_text(saved);
  }
  return ok;
}

void sync_directory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Creates dir 0700 when it does not exist; an existing directory is left as it is.
bool ensure_state_dir(const fs::path& dir, std::string& error) {
  std::error_code ec;
  if (fs::is_directory(dir, ec)) return true;
  if (fs::exists(dir, ec)) {
    error = dir.string() + ": not a directory";
    return false;
  }
  if (dir.has_parent_path() && dir.parent_path() != dir) {
    fs::create_directories(dir.parent_path(), ec);
    if (ec) {
      error = dir.parent_path().string() + ": cannot create directory: " + ec.message();
      return false;
    }
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    error = dir.string() + ": cannot create directory: " + errno_text(errno);
    return false;
  }
  if (::chmod(dir.c_str(), 0700) != 0) {   // the umask may have taken bits away; never adds any
    error = dir.string() + ": cannot set mode 0700: " + errno_text(errno);
    return false;
  }
  return true;
}

bool expires_soon(const X509* cert) {
  std::time_t cutoff = std::time(nullptr) + static_cast<std::time_t>(renew_days) * 86400;
  int cmp = X509_cmp_time(X509_get0_notAfter(cert), &cutoff);
  ERR_clear_error();
  return cmp <= 0;   // before the cutoff, or unparseable
}

void tighten_to_0600(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) ::chmod(path.c_str(), 0600);
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

std::unique_ptr<server_tls> make_server_tls(const tls_settings& s, std::string& error) {
  error.clear();
  if (s.cert_file.empty() != s.key_file.empty()) {
    error = "tls: cert_file and key_file go together (leave both empty for the self-signed pair)";
    return nullptr;
  }
  std::unique_ptr<server_tls> out;
  try {
    out = std::make_unique<server_tls>();
  } catch (const std::exception& e) {
    error = std::string("tls: cannot create the server context: ") + e.what();
    ERR_clear_error();
    return nullptr;
  }
  SSL_CTX* ctx = out->ctx.native_handle();
  if (!configure_common(ctx, error)) return nullptr;
  SSL_CTX_set_dh_auto(ctx, 1);   // DHE suites with an RSA certificate
  static constexpr unsigned char sid_ctx[] = "mailtap";
  SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);

  cert_chain chain;
  pkey_ptr key;
  fs::path cert_path = s.cert_file, key_path = s.key_file;
  if (!s.cert_file.empty()) {
    if (!load_certificates(cert_path, chain, error) || !load_key(key_path, key, error)) return nullptr;
  } else {
    if (s.state_dir.empty()) {
      error = "tls: no state_dir to keep the self-signed certificate in (or set cert_file and key_file)";
      return nullptr;
    }
    if (!ensure_state_dir(s.state_dir, error)) return nullptr;
    cert_path = s.state_dir / selfsigned_cert_name;
    key_path = s.state_dir / selfsigned_key_name;
    std::error_code ec;
    bool reuse = fs::exists(cert_path, ec) && fs::exists(key_path, ec);
    if (reuse) {
      const std::string remedy = " (delete " + cert_path.string() + " and " + key_path.string() +
                                 " to generate a new pair)";
      if (!load_certificates(cert_path, chain, error) || !load_key(key_path, key, error)) {
        error += remedy;
        return nullptr;
      }
      if (X509_check_private_key(chain.leaf.get(), key.get()) != 1) {
        ERR_clear_error();
        error = key_path.string() + ": key does not match certificate " + cert_path.string() + remedy;
        return nullptr;
      }
      if (expires_soon(chain.leaf.get())) {
        reuse = false;
        chain = {};
        key.reset();
      } else {
        tighten_to_0600(cert_path);
        tighten_to_0600(key_path);
      }
    }
    if (!reuse) {
      x509_ptr cert;
      if (!generate_pair(key, cert, error)) return nullptr;
      std::string key_pem, cert_pem;
      if (!to_pem([&](BIO* b) { return PEM_write_bio_PrivateKey(b, key.get(), nullptr, nullptr, 0, nullptr, nullptr); },
                  key_pem) ||
          !to_pem([&](BIO* b) { return PEM_write_bio_X509(b, cert.get()); }, cert_pem)) {
        error = "tls: cannot encode the self-signed pair: " + ossl_reason();
        return nullptr;
      }
      // The key first: a crash in between leaves no certificate, so the next start regenerates.
      if (!write_private_file(key_path, key_pem, error) || !write_private_file(cert_path, cert_pem, error))
        return nullptr;
      sync_directory(s.state_dir);
      chain.leaf = std::move(cert);
    }
    out->generated = true;
  }
  if (!install(ctx, chain, key.get(), cert_path, key_path, error)) return nullptr;
  out->certificate_subject = name_text(X509_get_subject_name(chain.leaf.get()));
  out->certificate_sha256 = sha256_fingerprint(chain.leaf.get());
  ERR_clear_error();
  return out;
}

std::unique_ptr<boost::asio::ssl::context> make_client_tls(const tls_settings& s, std::string& error) {
  error.clear();
  std::unique_ptr<ssl::context> ctx;
  try {
    ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  } catch (const std::exception& e) {
    error = std::string("tls: cannot create the client context: ") + e.what();
    ERR_clear_error();
    return nullptr;
  }
  SSL_CTX* native = ctx->native_handle();
  if (!configure_common(native, error)) return nullptr;
  if (s.insecure_upstream) {
    SSL_CTX_set_verify(native, SSL_VERIFY_NONE, nullptr);
    return ctx;
  }
  SSL_CTX_set_verify(native, SSL_VERIFY_PEER, nullptr);
  ERR_clear_error();
  if (s.ca_file.empty()) {
    if (SSL_CTX_set_default_verify_paths(native) != 1) {
      error = "tls: cannot use the system CA paths: " + ossl_reason();
      return nullptr;
    }
    ERR_clear_error();
    return ctx;
  }
  std::string pem, why;
  if (!read_file(s.ca_file, pem, why)) {
    error = s.ca_file.string() + ": cannot read CA bundle: " + why;
    return nullptr;
  }
  bio_ptr b = memory_bio(pem);
  X509_STORE* store = SSL_CTX_get_cert_store(native);
  int count = 0;
  for (;;) {
    x509_ptr cert(PEM_read_bio_X509_AUX(b.get(), nullptr, no_passphrase, nullptr));
    if (!cert) break;
    if (X509_STORE_add_cert(store, cert.get()) != 1) {
      error = s.ca_file.string() + ": CA certificate " + std::to_string(count + 1) + " rejected: " + ossl_reason();
      return nullptr;
    }
    ++count;
  }
  if (!ossl_end_of_pem()) {
    error = s.ca_file.string() + ": cannot read CA certificate " + std::to_string(count + 1) + ": " + ossl_reason();
    return nullptr;
  }
  ERR_clear_error();
  if (count == 0) {
    error = s.ca_file.string() + ": no PEM certificates in CA bundle";
    return nullptr;
  }
  return ctx;
}

bool prepare_client_ssl(SSL* ssl, const std::string& host, peer_verification v, std::string& error) {
  error.clear();
  if (ssl == nullptr) {
    error = "tls: no SSL handle";
    return false;
  }
  std::string name = host;
  if (name.size() >= 2 && name.front() == '[' && name.back() == ']') name = name.substr(1, name.size() - 2);
  if (auto pct = name.find('%'); pct != std::string::npos && is_ip_literal(name.substr(0, pct)))
    name.erase(pct);   // IPv6 zone id: not part of the address a certificate names
  bool ip = is_ip_literal(name);
  if (!ip) {
    while (!name.empty() && name.back() == '.') name.pop_back();
  }
  ERR_clear_error();
  if (!ip && !name.empty() && SSL_set_tlsext_host_name(ssl, name.c_str()) != 1) {
    error = "tls: cannot send SNI for " + host + ": " + ossl_reason();
    return false;
  }
  // The policy decides for this stream, whatever the context says. Under `record` OpenSSL
  // still checks chain and name (against the CAs the context loaded) and keeps the result.
  SSL_set_verify(ssl, v == peer_verification::enforce ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  if (v == peer_verification::off) return true;
  if (name.empty()) {
    if (v == peer_verification::record) return true;   // the chain is still checked and recorded
    error = "tls: certificate verification needs the upstream's host name";
    return false;
  }
  if (ip) {
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) != 1) {
      error = "tls: cannot verify against address " + host + ": " + ossl_reason();
      return false;
    }
  } else {
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl, name.c_str()) != 1) {
      error = "tls: cannot verify against host " + host + ": " + ossl_reason();
      return false;
    }
  }
  return true;
}

tls_info describe(SSL* ssl) {
  tls_info info;
  if (ssl == nullptr) return info;
  info.version = SSL_get_version(ssl);
  if (const SSL_CIPHER* c = SSL_get_current_cipher(ssl)) info.cipher = SSL_CIPHER_get_name(c);
  if (const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) info.sni = sni;
  x509_ptr peer(SSL_get1_peer_certificate(ssl));
  if (peer) {
    info.peer_subject = name_text(X509_get_subject_name(peer.get()));
    info.peer_sha256 = sha256_fingerprint(peer.get());
    info.verified = (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) != 0 && SSL_get_verify_result(ssl) == X509_V_OK;
  }
  return info;
}

void assess_upstream(SSL* ssl, peer_verification v, const std::string& pin_sha256, tls_info& info) {
  info.verified = false;
  const bool presented = !info.peer_sha256.empty();
  if (!pin_sha256.empty()) {
    if (!presented) info.verification = "no certificate presented (a fingerprint is pinned)";
    else if (info.peer_sha256 != pin_sha256)
      info.verification = "fingerprint mismatch: the certificate is " + info.peer_sha256 + ", pinned " + pin_sha256;
    else info.verified = true, info.verification = "verified: fingerprint matches the pin";
    return;
  }
  if (v == peer_verification::off) {
    info.verification = "not checked: verification off by configuration";
    return;
  }
  if (!presented) {
    info.verification = "no certificate presented";
    return;
  }
  const long result = ssl != nullptr ? SSL_get_verify_result(ssl) : X509_V_ERR_UNSPECIFIED;
  if (result == X509_V_OK) {
    info.verified = true;
    info.verification = "verified";
    return;
  }
  // Postfix's words: a chain that does not lead to a trusted CA is "untrusted"; a trusted
  // chain for another name is a name mismatch.
  const bool name = result == X509_V_ERR_HOSTNAME_MISMATCH || result == X509_V_ERR_IP_ADDRESS_MISMATCH ||
                    result == X509_V_ERR_EMAIL_MISMATCH;
  info.verification = std::string(name ? "name mismatch: " : "untrusted: ") + X509_verify_cert_error_string(result);
}

}  // namespace mailtap
