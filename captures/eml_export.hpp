// The messages of a capture (`mailtap export eml`): each message the client sent, as it
// sent it, read back from the client leg's recorded bytes. DATA content is dot-unstuffed
// (RFC 5321 4.5.2) and ends before its <CRLF>.<CRLF>; BDAT chunks are joined (RFC 3030).
// The client leg is followed as a conversation: each command line, and each message's end,
// is owed one reply (the banner comes first), so DATA content begins only once its 354 came.
// A message the session cut before its end is left out. Pure: no I/O but write_eml_files.
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
