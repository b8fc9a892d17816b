// The messages of a capture (`mailtap export eml`): each message the client sent, as it
// sent it, read back from the client leg's recorded bytes. DATA content is dot-unstuffed
// (RFC 5321 4.5.2) and ends before the dot line that ended it (<CRLF>.<CRLF>); BDAT chunks
// are joined (RFC 3030).
// The client's bytes are cut as the relay read them, by captures/client_steps.hpp (the cutter of
// `mailtap show` and replay): command lines to their CRLF; after a DATA line the relay took and
// the client heard 354 to, the message to its end as the capture's framing says the relay found it
// (message_framing: "\n.\n" too in an older normalize capture); a BDAT line with the chunk its
// size counts, LAST as its grammar has it (RFC 3030); after a 334 to AUTH, AUTH responses, never
// commands. A BDAT message is its chunks up to its LAST; chunks before a RSET or QUIT, or an
// accepted EHLO, HELO, MAIL or STARTTLS, are no part of it (their transaction ended). A message the
// session cut before its end is left out.
// Pure: no I/O but write_eml_files.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "captures/reader.hpp"

namespace mailtap::captures {

struct sent_message {
  std::string content;   // the message, CRLF line ends as sent
  bool bdat = false;     // sent in BDAT chunks, not DATA
};

std::vector<sent_message> sent_messages(const capture& c);

// Writes DIR/<session>-<n>.eml for each message (n from 1), creating DIR. The paths written
// (none, and no DIR made, when the capture holds no message), or nullopt and a one-line error.
std::optional<std::vector<std::filesystem::path>> write_eml_files(const capture& c, const std::filesystem::path& dir,
                                                                  std::string& error);

}  // namespace mailtap::captures
