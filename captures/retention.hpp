// Keeping the capture directory within bounds (README "Captures", "Keeping the disk"):
// finished captures older than max_age, then the oldest finished ones while the directory
// holds more than max_bytes, are removed. A capture is finished when its last line is the
// `end` record; one without it is in progress, or was cut by a crash and is evidence: never
// removed here. Only a file whose header names it (session == its name) is a capture: a renamed
// copy, or another program's JSON Lines, is left alone and not counted. The caller also names the captures it has open (the relay's store), which are
// never removed either. Pure apart from the file system; not thread-safe per directory (one
// pruner at a time: the relay's writer thread, or `mailtap captures prune`).
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mailtap::captures {

struct retention {
  std::optional<std::chrono::seconds> max_age;   // unset: no age limit
  std::optional<std::uint64_t> max_bytes;        // unset: no size limit
  bool any() const { return max_age.has_value() || max_bytes.has_value(); }
};

struct prune_result {
  std::uint64_t removed = 0;         // captures removed
  std::uint64_t removed_bytes = 0;
  std::uint64_t kept = 0;            // captures left, finished or not
  std::uint64_t kept_bytes = 0;
  std::uint64_t left_unfinished = 0; // past a limit but left: open, or without an end record
  std::uint64_t not_captures = 0;    // *.jsonl files whose header does not name them: left alone, not counted
  bool over_max_bytes = false;       // still above max_bytes: only unfinished or open ones left
  std::vector<std::string> errors;   // one line each: a file that could not be listed or removed
  std::vector<std::string> removed_sessions;   // the session ids of the removed captures (for the index)
};

// Which files were found to be captures, by name and inode: a header does not change once
// written, so a pruner that runs again (the relay's store, every minute) reads each file's
// first line once in its life rather than every file every time. Files no longer listed are
// forgotten at each prune.
struct capture_kinds {
  std::unordered_map<std::string, std::pair<std::uint64_t, bool>> known;   // name -> (inode, is a capture)
};

// `is_open(session_id)`: the capture is being written by this process (may be null).
// `kinds`: what an earlier prune of the same directory learnt (may be null).
prune_result prune(const std::filesystem::path& dir, const retention& limits,
                   std::chrono::system_clock::time_point now,
                   const std::function<bool(std::string_view session_id)>& is_open = {},
                   capture_kinds* kinds = nullptr);

// prune(), then the index rows of what it removed (index.hpp), when DIR has an index; an
// index that cannot be updated adds a line to `errors` (`mailtap captures reindex` repairs).
prune_result prune_with_index(const std::filesystem::path& dir, const retention& limits,
                              std::chrono::system_clock::time_point now);

// True when the file's last line is an `end` record (schema.hpp).
bool is_finished_capture(const std::filesystem::path& file);

}  // namespace mailtap::captures
