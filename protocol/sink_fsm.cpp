// Built-in sink: command handling and message acceptance.
#include "protocol/sink_fsm.hpp"

#include <algorithm>
#include <cstdio>

#include "protocol/base64.hpp"
#include "protocol/command.hpp"
#include "protocol/limits.hpp"
#include "protocol/reply.hpp"

namespace mailtap::protocol {

sink_fsm::sink_fsm(sink_options options, std::uint64_t connection_id)
    : options_(std::move(options)), connection_id_(connection_id) {}

std::string sink_fsm::greeting() const {
  return "220 " + options_.hostname + " ESMTP mailtap built-in sink\r\n";
}

void sink_fsm::reset_envelope() {
  have_mail_ = false;
  rcpts_ = 0;
  message_bytes_ = 0;
}

namespace {
// RFC 1870 3: SIZE=<digits>, at most 20 of them.
std::optional<std::uint64_t> declared_size(const std::string& value) {
  if (value.empty() || value.size() > 20 || value.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  if (value.size() == 20 && value > "18446744073709551615") return UINT64_MAX;
  return std::stoull(value);
}

std::string size_refusal() { return format_reply(552, "5.3.4", "Message size exceeds fixed limit"); }
}  // namespace

void sink_fsm::accept_message(std::string& out) {
  // RFC 1870 6.3: a message past the advertised SIZE is refused at its end.
  if (message_bytes_ > options_.max_message_size) {
    out += size_refusal();
    reset_envelope();
    return;
  }
  ++accepted_;
  junk_commands_ = 0;
  errors_ = 0;
  char id[40];
  std::snprintf(id, sizeof id, "%llX%06llX", static_cast<unsigned long long>(connection_id_),
                static_cast<unsigned long long>(accepted_));
  out += format_reply(250, "2.0.0", std::string("Ok: queued as ") + id);
  reset_envelope();
}

void sink_fsm::finish_chunk(std::string& out) {
  mode_ = mode::command;
  if (bdat_failed_) {
    out += format_reply(503, "5.5.1", "Error: send MAIL and RCPT first");
  } else if (bdat_last_) {
    accept_message(out);
  } else {
    out += format_reply(250, "2.0.0", "Ok: chunk received");
  }
}

// Postfix's smtpd: a 4xx or 5xx reply is an error, and so is each junk command past the junk
// limit (counted as Postfix does, `junk_cmds++ > limit`: errors from the 102nd); at the hard
// limit the session ends with 421 (limits.hpp). Unlike Postfix, RSET is no junk and a 503 (bad
// sequence) no error: behind the relay they come from its fault rules, which answer a command
// themselves and send RSET upstream in place of a message, or leave DATA with no recipient.
bool sink_fsm::count_errors(phase ph, std::string_view reply, std::string& out) {
  const bool junk = ph == phase::noop || ph == phase::vrfy || ph == phase::help;
  if (junk) {
    if (junk_commands_++ > limits::sink_junk_commands) ++errors_;
  } else if (!reply.empty() && (reply[0] == '4' || reply[0] == '5') && !reply.starts_with("503")) {
    ++errors_;
  }
  if (errors_ < limits::sink_hard_errors) return true;
  out += format_reply(421, "4.7.0", options_.hostname + " Error: too many errors");
  return false;
}

void sink_fsm::on_start() { actions_.push_back(send_bytes{leg::client, greeting()}); }

void sink_fsm::on_client_bytes(std::string_view bytes) {
  if (closing_) return;
  std::string out;
  const bool open = feed(bytes, out);
  if (!out.empty()) actions_.push_back(send_bytes{leg::client, std::move(out)});
  if (std::exchange(tls_requested_, false)) actions_.push_back(start_tls{leg::client});
  if (!open) actions_.push_back(close_leg{leg::client});
}

void sink_fsm::on_tls_ready() {
  tls_active_ = true;
  reset_envelope();
  in_.clear();
}

void sink_fsm::on_tls_failed() {
  if (std::exchange(closing_, true)) return;
  actions_.push_back(close_leg{leg::client});
}

void sink_fsm::check_credentials(std::string_view user, std::string_view password, std::string& out) {
  mode_ = mode::command;
  if (!options_.auth_user.empty() && (user != options_.auth_user || password != options_.auth_password)) {
    out += format_reply(535, "5.7.8", "Error: authentication failed");
    return;
  }
  authenticated_ = true;
  out += format_reply(235, "2.7.0", "Authentication successful");
}

// One client response of an AUTH exchange (RFC 4954); "*" cancels it.
void sink_fsm::take_auth(std::string_view line, std::string& out) {
  if (line == "*") {
    mode_ = mode::command;
    out += format_reply(501, "5.7.0", "Authentication cancelled");
    return;
  }
  auto decoded = base64_decode(line);
  if (!decoded) {
    mode_ = mode::command;
    out += format_reply(501, "5.5.2", "Cannot decode response");
    return;
  }
  switch (mode_) {
    case mode::auth_plain: {
      // authzid NUL authcid NUL passwd
      auto first = decoded->find('\0');
      auto second = first == std::string::npos ? first : decoded->find('\0', first + 1);
      if (second == std::string::npos) {
        mode_ = mode::command;
        out += format_reply(501, "5.5.2", "Malformed PLAIN response");
        return;
      }
      check_credentials(std::string_view(*decoded).substr(first + 1, second - first - 1),
                        std::string_view(*decoded).substr(second + 1), out);
      return;
    }
    case mode::auth_login_user:
      login_user_ = *decoded;
      mode_ = mode::auth_login_password;
      out += "334 UGFzc3dvcmQ6\r\n";   // "Password:"
      return;
    case mode::auth_login_password: check_credentials(login_user_, *decoded, out); return;
    default: return;
  }
}

bool sink_fsm::feed(std::string_view bytes, std::string& out) {
  if (closing_) return false;
  in_.append(bytes);
  std::size_t pos = 0;
  while (pos < in_.size() && !closing_) {
    std::string_view rest = std::string_view(in_).substr(pos);
    if (mode_ == mode::data) {
      std::string ignored;
      pos += framer_->feed(rest, ignored);
      if (framer_->ended()) {
        // Before the terminator (RFC 1870 3: its dot is not counted; a stuffing dot here is).
        message_bytes_ += framer_->message_bytes();
        framer_.reset();
        mode_ = mode::command;
        accept_message(out);
      }
      continue;
    }
    if (mode_ == mode::bdat) {
      std::uint64_t n = std::min<std::uint64_t>(bdat_remaining_, rest.size());
      pos += n;
      bdat_remaining_ -= n;
      if (bdat_remaining_ == 0) finish_chunk(out);
      continue;
    }
    auto lf = rest.find('\n');
    if (lf == std::string_view::npos) {
      // An AUTH exchange may carry up to 12288 octets of base64 on one line (RFC 4954).
      bool auth_line = mode_ != mode::command || (rest.size() >= 5 && iequals(rest.substr(0, 5), "AUTH "));
      if (rest.size() > (auth_line ? limits::command_line_hard_cap + limits::auth_response_cap
                                   : limits::command_line_hard_cap)) {
        out += format_reply(500, "5.5.2", "Line too long");
        closing_ = true;
      }
      break;
    }
    pos += lf + 1;
    std::string_view line = rest.substr(0, lf);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (mode_ == mode::auth_plain || mode_ == mode::auth_login_user || mode_ == mode::auth_login_password) {
      const std::size_t reply_at = out.size();
      take_auth(line, out);
      if (!count_errors(phase::auth, std::string_view(out).substr(reply_at), out)) closing_ = true;
      continue;
    }
    if (!take_line(line, out)) closing_ = true;
    if (tls_requested_) {   // nothing pipelined after STARTTLS is read as protected
      pos = in_.size();
      break;
    }
  }
  in_.erase(0, pos);
  return !closing_;
}

bool sink_fsm::take_line(std::string_view line, std::string& out) {
  parsed_command parsed = parse_command(line);
  if (parsed.fault == command_fault::bad_bdat) {
    out += format_reply(501, "5.5.4", "Syntax error in BDAT parameters");
    return false;
  }
  const std::size_t reply_at = out.size();
  if (!answer(parsed.cmd, out)) return false;
  // A BDAT chunk is answered when its data has arrived: its errors are not counted.
  return count_errors(parsed.cmd.ph, std::string_view(out).substr(reply_at), out);
}

bool sink_fsm::answer(const command& cmd, std::string& out) {
  switch (cmd.ph) {
    case phase::ehlo:
      reset_envelope();
      out += "250-" + options_.hostname + "\r\n250-PIPELINING\r\n250-SIZE " +
             std::to_string(options_.max_message_size) +
             "\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN\r\n";
      if (options_.offer_starttls && !tls_active_) out += "250-STARTTLS\r\n";
      out += "250 DSN\r\n";
      return true;
    case phase::starttls:
      if (!options_.offer_starttls || tls_active_) {
        out += format_reply(tls_active_ ? 503 : 454, tls_active_ ? "5.5.1" : "4.7.0",
                            tls_active_ ? "TLS already active" : "TLS not available");
        return true;
      }
      if (!cmd.argument.empty()) {   // RFC 3207 4: STARTTLS takes no parameters
        out += format_reply(501, "5.5.4", "Syntax error (no parameters allowed)");
        return true;
      }
      out += format_reply(220, "2.0.0", "Ready to start TLS");
      tls_requested_ = true;
      return true;
    case phase::auth: {
      if (authenticated_) {
        out += format_reply(503, "5.5.1", "Already authenticated");
        return true;
      }
      auto sp = find_separator(cmd.argument);
      std::string mech = to_upper(cmd.argument.substr(0, sp));
      std::string initial = sp == std::string::npos ? std::string() : cmd.argument.substr(sp + 1);
      if (mech == "PLAIN") {
        mode_ = mode::auth_plain;
        if (initial.empty()) out += "334 \r\n";
        else take_auth(initial, out);
      } else if (mech == "LOGIN") {
        mode_ = mode::auth_login_user;
        if (initial.empty()) out += "334 VXNlcm5hbWU6\r\n";   // "Username:"
        else take_auth(initial, out);
      } else {
        out += format_reply(504, "5.5.4", "Unrecognized authentication type");
      }
      return true;
    }
    case phase::helo:
      reset_envelope();
      out += format_reply(250, "", options_.hostname);
      return true;
    case phase::mail: {
      // RFC 1870 6: a declared size past the limit is refused at MAIL (552), and one that is
      // not a number is a syntax error (501).
      std::optional<std::uint64_t> size;
      bool bad_size = false;
      for (const auto& p : cmd.params)
        if (p.keyword == "SIZE") bad_size = !p.value || !(size = declared_size(*p.value));
      if (have_mail_) {
        out += format_reply(503, "5.5.1", "Error: nested MAIL command");
      } else if (bad_size) {
        out += format_reply(501, "5.5.4", "Bad message size syntax");
      } else if (size && *size > options_.max_message_size) {
        out += size_refusal();
      } else {
        have_mail_ = true;
        message_bytes_ = 0;
        out += format_reply(250, "2.1.0", "Ok");
      }
      return true;
    }
    case phase::rcpt:
      if (!have_mail_) {
        out += format_reply(503, "5.5.1", "Error: need MAIL command");
      } else {
        ++rcpts_;
        out += format_reply(250, "2.1.5", "Ok");
      }
      return true;
    case phase::data:
      if (rcpts_ == 0) {
        out += format_reply(503, "5.5.1", "Error: need RCPT command");
      } else {
        mode_ = mode::data;
        framer_.emplace(bare_eol_mode::raw);
        out += format_reply(354, "", "End data with <CR><LF>.<CR><LF>");
      }
      return true;
    case phase::bdat:
      mode_ = mode::bdat;
      bdat_remaining_ = cmd.bdat_size;
      message_bytes_ += std::min(cmd.bdat_size, UINT64_MAX - message_bytes_);
      bdat_last_ = cmd.bdat_last;
      bdat_failed_ = rcpts_ == 0;
      if (bdat_remaining_ == 0) finish_chunk(out);   // a zero-length chunk completes at once
      return true;
    case phase::rset:
      reset_envelope();
      out += format_reply(250, "2.0.0", "Ok");
      return true;
    case phase::noop: out += format_reply(250, "2.0.0", "Ok"); return true;
    case phase::vrfy: out += format_reply(252, "2.0.0", "Cannot VRFY user, but will accept message"); return true;
    case phase::help: out += format_reply(214, "2.0.0", "mailtap built-in sink accepts every message"); return true;
    case phase::quit: out += format_reply(221, "2.0.0", "Bye"); return false;
    // RFC 5321 4.2.4: 500 for a verb not recognized (what a firewall's X'd command gets),
    // 502 for one recognized but not implemented (EXPN).
    case phase::other: out += format_reply(500, "5.5.1", "Error: command not recognized"); return true;
    default: out += format_reply(502, "5.5.1", "Error: command not implemented"); return true;
  }
}

}  // namespace mailtap::protocol
