// What an export writes out of a capture (messages, a pcap) is as private as the capture
// (captures/FORMAT.md: capture files are 0600): the file is made the owner's only before any
// byte goes in, whatever the umask or an older file's mode.
#pragma once

#include <filesystem>
#include <string>

namespace mailtap::captures {

// Creates `path` (or truncates it) with mode 0600, so that the writer that opens it next
// keeps that mode. False, with `error` naming the file and why, when it cannot.
bool make_private_file(const std::filesystem::path& path, std::string& error);

}  // namespace mailtap::captures
