// The capture format's identity, shared by writer and reader (FORMAT.md). Bump the version
// together with an upgrade step in reader.cpp whenever a record changes.
// Version history (FORMAT.md "Version history"): 1 the first format; 2 adds `fault` records;
// 3 adds the `blackholed` outcome and the relay's own upstream commands (`command` leg/dir).
#pragma once
#include <string_view>

namespace mailtap::captures {

inline constexpr std::string_view format_name = "mailtap-capture";
inline constexpr int format_version = 3;

}  // namespace mailtap::captures
