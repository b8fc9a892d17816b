// Following the client leg to find its messages (eml_export.hpp): commands and message data
// from the client's bytes, replies from mailtap's bytes to it, paired in order.
#include "captures/eml_export.hpp"
#include "captures/private_file.hpp"

#include <algorithm>
#include <cctype>
#include <deque>
#include <fstream>

namespace mailtap::captures {

namespace {

// What one reply to the client answers.
enum class owed { banner, command, data_command, message_end };

class client_leg_reader {
 public:
  void client_bytes(std::string_view b) {
    in_ += b;
    advance();
  }
  void mailtap_bytes(std::string_view b) {
    out_ += b;
    for (;;) {
      const auto code = take_reply();
      if (!code) break;
      const owed what = owed_.empty() ? owed::command : owed_.front();
      if (!owed_.empty()) owed_.pop_front();
      if (what == owed::data_command) {
        awaiting_354_ = false;
        if (*code == 354) state_ = state::data;
      }
      advance();
    }
  }
  std::vector<sent_message> take() { return std::move(messages_); }

 private:
  enum class state { commands, data, bdat };

  // The code of the next complete reply mailtap sent (multi-line: up to its "NNN " line).
  std::optional<int> take_reply() {
    std::size_t at = 0;
    for (;;) {
      const auto lf = out_.find('\n', at);
      if (lf == std::string::npos) return std::nullopt;
      const std::string_view line(out_.data() + at, lf - at);
      at = lf + 1;
      if (line.size() < 4 || line[3] != '-') {
        int code = 0;
        for (std::size_t i = 0; i < 3 && i < line.size(); ++i)
          code = std::isdigit(static_cast<unsigned char>(line[i])) ? code * 10 + (line[i] - '0') : 0;
        out_.erase(0, at);
        return code;
      }
    }
  }

  void advance() {
    for (bool progress = true; progress;) {
      switch (state_) {
        case state::commands: progress = take_command(); break;
        case state::data: progress = take_data(); break;
        case state::bdat: progress = take_bdat(); break;
      }
    }
  }

  bool take_command() {
    if (awaiting_354_) return false;   // the client waits for it before its data (RFC 5321 4.1.1.4)
    const auto lf = in_.find('\n', in_at_);
    if (lf == std::string::npos) return false;
    std::string line = in_.substr(in_at_, lf - in_at_);
    consume(lf + 1 - in_at_);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string verb = line.substr(0, line.find(' '));
    std::transform(verb.begin(), verb.end(), verb.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    if (verb == "DATA" && line.size() == 4) {
      owed_.push_back(owed::data_command);
      awaiting_354_ = true;
      return true;
    }
    owed_.push_back(owed::command);
    if (verb == "BDAT") start_bdat(line);
    return true;
  }

  // "BDAT <size> [LAST]" (RFC 3030 2): the size in bytes follows the command line.
  void start_bdat(const std::string& line) {
    std::size_t size = 0, i = 5;
    bool digits = false;
    for (; i < line.size() && std::isdigit(static_cast<unsigned char>(line[i])); ++i) {
      size = size * 10 + static_cast<std::size_t>(line[i] - '0');
      digits = true;
    }
    if (!digits) return;   // refused: no chunk follows
    std::string rest = line.substr(i);
    std::transform(rest.begin(), rest.end(), rest.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    bdat_left_ = size;
    bdat_last_ = rest.find("LAST") != std::string::npos;
    state_ = state::bdat;
  }

  bool take_bdat() {
    const auto n = std::min(bdat_left_, in_.size() - in_at_);
    bdat_message_.append(in_, in_at_, n);
    consume(n);
    bdat_left_ -= n;
    if (bdat_left_ > 0) return false;
    state_ = state::commands;
    if (bdat_last_) {
      messages_.push_back({std::move(bdat_message_), true});
      bdat_message_.clear();
    }
    return true;
  }

  // Up to <CRLF>.<CRLF> (or a lone ".<CRLF>" first), then dot-unstuffed.
  bool take_data() {
    std::size_t end, after;
    if (in_.compare(in_at_, 3, ".\r\n") == 0) {
      end = in_at_;
      after = in_at_ + 3;
    } else {
      // Searched from where the last search stopped (less the terminator's length), so that
      // a message recorded in many pieces is scanned once.
      const auto dot = in_.find("\r\n.\r\n", std::max(in_at_, data_searched_to_));
      if (dot == std::string::npos) {
        data_searched_to_ = in_.size() < 4 ? 0 : in_.size() - 4;
        return false;
      }
      end = dot + 2;
      after = dot + 5;
    }
    data_searched_to_ = 0;
    std::string message;
    std::size_t line_start = in_at_;
    while (line_start < end) {
      const auto lf = in_.find('\n', line_start);
      const auto line_end = lf == std::string::npos || lf >= end ? end : lf + 1;
      std::size_t from = line_start;
      // RFC 5321 4.5.2: a leading dot was doubled, at the start of a line, which a CRLF ends
      // (2.3.8): a dot after a bare LF is the line's content, as the relay forwards it (under
      // normalize the LF is a space) and the destination keeps it.
      const bool after_crlf = line_start == in_at_ || (line_start >= 2 && in_[line_start - 2] == '\r');
      if (in_[from] == '.' && after_crlf) ++from;
      message.append(in_, from, line_end - from);
      line_start = line_end;
    }
    consume(after - in_at_);
    messages_.push_back({std::move(message), false});
    owed_.push_back(owed::message_end);
    state_ = state::commands;
    return true;
  }

  // The client's bytes not yet consumed are in_ from in_at_ on: consuming moves the offset,
  // and the consumed front is dropped only once it is most of the buffer (one erase per
  // line made a 30 MB message quadratic).
  void consume(std::size_t n) {
    in_at_ += n;
    if (in_at_ < 64 * 1024 || in_at_ * 2 < in_.size()) return;
    in_.erase(0, in_at_);
    data_searched_to_ = data_searched_to_ > in_at_ ? data_searched_to_ - in_at_ : 0;
    in_at_ = 0;
  }

  std::string in_, out_;
  std::size_t in_at_ = 0;              // where the unconsumed client bytes begin in in_
  std::size_t data_searched_to_ = 0;   // in_ before this holds no end of data (state::data)
  std::deque<owed> owed_{owed::banner};
  state state_ = state::commands;
  bool awaiting_354_ = false;
  std::size_t bdat_left_ = 0;
  bool bdat_last_ = false;
  std::string bdat_message_;
  std::vector<sent_message> messages_;
};

}  // namespace

std::vector<sent_message> sent_messages(const capture& c) {
  client_leg_reader reader;
  for (const auto& e : c.events) {
    const auto* b = std::get_if<bytes_event>(&e);
    if (!b || b->leg != protocol::leg::client) continue;
    if (b->dir == protocol::direction::in) reader.client_bytes(b->data);
    else reader.mailtap_bytes(b->data);
  }
  return reader.take();
}

std::optional<std::vector<std::filesystem::path>> write_eml_files(const capture& c, const std::filesystem::path& dir,
                                                                  std::string& error) {
  // The reader takes only a plain session id; a capture model built elsewhere is checked again,
  // since the id becomes a file name inside `dir`.
  if (!is_session_id(c.header.session)) {
    error = "the capture's session id is not a plain name: refusing to make a file name of it";
    return std::nullopt;
  }
  std::vector<std::filesystem::path> written;
  const auto messages = sent_messages(c);
  if (messages.empty()) return written;   // nothing to write: no directory made for it
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    error = dir.string() + ": cannot create: " + ec.message();
    return std::nullopt;
  }
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const auto path = dir / (c.header.session + "-" + std::to_string(i + 1) + ".eml");
    if (!make_private_file(path, error)) return std::nullopt;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << messages[i].content;
    out.close();
    if (!out) {
      error = path.string() + ": cannot write";
      return std::nullopt;
    }
    written.push_back(path);
  }
  return written;
}

}  // namespace mailtap::captures
