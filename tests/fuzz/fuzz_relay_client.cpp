// The relay machine with a well-behaved upstream (a small server model answering what the relay
// sends, enforcing command order: EHLO with PIPELINING and CHUNKING, 354 to DATA, 250 to each BDAT chunk and to the
// dot), so the client's bytes reach the DATA and BDAT paths end to end. Input: one options
// byte (options_from), then client writes, each a length byte and that many bytes; what is
// left after the last whole write is one more write. The invariants of relay_harness.hpp are
// checked after every step.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "relay_harness.hpp"

using namespace mailtap::fuzz;

namespace {

// Answers a relay's upstream-bound stream like an ESMTP server (RFC 5321 command order enforced).
class model_upstream {
 public:
  // Replies to the bytes the relay sent, in order.
  std::string answer(std::string_view sent) {
    std::string out;
    for (char c : sent) {
      if (bdat_left_ > 0) {
        if (--bdat_left_ == 0) out += bdat_reply_;
        continue;
      }
      line_.push_back(c);
      if (c != '\n') continue;
      if (in_data_) {
        if (line_ == ".\r\n") {
          in_data_ = false;
          out += "250 2.0.0 Ok: queued as 4Xk9\r\n";
        }
      } else {
        out += command(line_);
      }
      line_.clear();
    }
    return out;
  }
  bool quit() const { return quit_; }

 private:
  std::string command(std::string_view line) {
    std::string verb;
    for (char c : line.substr(0, 4)) verb.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    if (verb == "EHLO" || verb == "HELO" || verb == "RSET") reset();
    if (verb == "EHLO") return "250-mx.example.org\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n250 SIZE 10240000\r\n";
    if (verb == "HELO") return "250 mx.example.org\r\n";
    if (verb == "DATA" && !has_rcpt_) return "503 5.5.1 Error: need RCPT command\r\n";
    if (verb == "DATA") {
      in_data_ = true;
      reset();
      return "354 End data with <CR><LF>.<CR><LF>\r\n";
    }
    if (verb == "BDAT") {
      std::uint64_t n = 0;
      for (std::size_t i = 5; i < line.size() && std::isdigit(static_cast<unsigned char>(line[i])) && n < (1ull << 32); ++i)
        n = n * 10 + static_cast<std::uint64_t>(line[i] - '0');
      // The chunk is read whatever the answer (RFC 3030 2).
      bool last = line.find("LAST") != std::string_view::npos || line.find("last") != std::string_view::npos;
      bdat_reply_ = !has_rcpt_ ? "503 5.5.1 Error: need RCPT command\r\n"
                    : last     ? "250 2.0.0 Ok: queued as 4Xk9\r\n"
                               : "250 2.0.0 chunk accepted\r\n";
      if (last) reset();
      bdat_left_ = n;
      return n == 0 ? bdat_reply_ : "";
    }
    if (verb == "QUIT") {
      quit_ = true;
      return "221 2.0.0 Bye\r\n";
    }
    if (verb == "STAR") return "454 4.7.0 TLS not available due to local problem\r\n";
    if (verb == "AUTH") return "235 2.7.0 Authentication successful\r\n";
    if (verb == "MAIL") {
      if (has_mail_) return "503 5.5.1 Error: nested MAIL command\r\n";
      has_mail_ = true;
    }
    if (verb == "RCPT") {
      if (!has_mail_) return "503 5.5.1 Error: need MAIL command\r\n";
      if (line.find("reject") != std::string_view::npos) return "550 5.1.1 User unknown\r\n";
      has_rcpt_ = true;
    }
    return "250 2.0.0 Ok\r\n";
  }

  void reset() { has_mail_ = has_rcpt_ = false; }

  std::string line_;
  bool has_mail_ = false, has_rcpt_ = false;
  bool in_data_ = false;
  bool quit_ = false;
  std::uint64_t bdat_left_ = 0;
  std::string bdat_reply_;
};

// Lets the upstream answer until it has nothing more to say (bounded).
void pump(relay_harness& h, model_upstream& up) {
  for (int i = 0; i < 64; ++i) {
    std::string reply = up.answer(h.take_upstream_sent());
    if (reply.empty()) break;
    h.upstream_bytes(reply);
    if (up.quit()) {
      h.upstream_eof();
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  relay_harness h(options_from(data[0]));
  model_upstream up;
  h.start(true, false);
  h.upstream_bytes("220 mx.example.org ESMTP Postfix\r\n");
  pump(h, up);
  std::size_t i = 1;
  while (i < size && !h.fsm().finished()) {
    std::size_t len = data[i++];
    if (len == 0 || len > size - i) len = size - i;
    h.client_bytes(std::string_view(reinterpret_cast<const char*>(data + i), len));
    i += len;
    pump(h, up);
    h.advance(1'000);
  }
  h.client_eof();
  pump(h, up);
  h.finish();
  return 0;
}
