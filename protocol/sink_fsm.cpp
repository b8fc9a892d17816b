// Built-in sink: command handling and message acceptance.
#include "protocol/sink_fsm.hpp"

#include <algorithm>
#include <cstdio>

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
}

void sink_fsm::accept_message(std::string& out) {
  ++accepted_;
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
      if (rest.size() > limits::command_line_hard_cap) {
        out += format_reply(500, "5.5.2", "Line too long");
        closing_ = true;
      }
      break;
    }
    pos += lf + 1;
    std::string_view line = rest.substr(0, lf);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!take_line(line, out)) closing_ = true;
  }
  in_.erase(0, pos);
  return !closing_;
}

bool sink_fsm::take_line(std::string_view line, std::string& out) {
  parsed_command parsed = parse_command(line);
  const command& cmd = parsed.cmd;
  if (parsed.fault == command_fault::bad_bdat) {
    out += format_reply(501, "5.5.4", "Syntax error in BDAT parameters");
    return false;
  }
  switch (cmd.ph) {
    case phase::ehlo:
      reset_envelope();
      out += "250-" + options_.hostname + "\r\n250-PIPELINING\r\n250-SIZE " +
             std::to_string(options_.max_message_size) +
             "\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250 DSN\r\n";
      return true;
    case phase::helo:
      reset_envelope();
      out += format_reply(250, "", options_.hostname);
      return true;
    case phase::mail:
      if (have_mail_) {
        out += format_reply(503, "5.5.1", "Error: nested MAIL command");
      } else {
        have_mail_ = true;
        out += format_reply(250, "2.1.0", "Ok");
      }
      return true;
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
    default: out += format_reply(502, "5.5.1", "Error: command not recognized"); return true;
  }
}

}  // namespace mailtap::protocol
