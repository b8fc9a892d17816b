// Pruning: list the directory's captures (stat, and the first line of each file not seen
// before), oldest last write first, then remove while a limit is exceeded, reading only the
// tails of the candidates.
#include "captures/retention.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <cstring>

#include "captures/index.hpp"
#include "captures/reader.hpp"
#include "captures/schema.hpp"

namespace mailtap::captures {

namespace {

namespace fs = std::filesystem;

// A header record is a few hundred bytes (addresses, times, the relay's version); a first line
// longer than this is no capture's header.
constexpr std::size_t head_bytes = 8 * 1024;

// An end record is a few hundred bytes (its reason and detail are short); reading this much
// of a file's tail always holds the whole last line of a finished capture.
constexpr std::size_t tail_bytes = 16 * 1024;

// What a *.jsonl file in the directory is. A capture's header names its session, and the relay
// names the file after it (FORMAT.md): a renamed or copied capture, or another program's JSON
// Lines, is not the relay's to remove, nor counted. An empty file is a capture just begun (the
// relay creates the file, then writes its header line whole in one write(2)); any other file
// without a first line is not one. A file that cannot be read (no permission, out of
// descriptors) cannot be told apart: it is neither counted nor removed, and said (an error).
// One gone meanwhile is skipped.
enum class file_kind { capture, not_a_capture, no_first_line, header_not_written, unreadable, gone };

// O_NONBLOCK: a FIFO put in a regular file's place after its lstat must not hang the pruner.
file_kind kind_of(const fs::path& file, int& error) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    error = errno;
    return error == ENOENT ? file_kind::gone : file_kind::unreadable;
  }
  std::string head(head_bytes, '\0');
  const ssize_t n = ::pread(fd, head.data(), head.size(), 0);
  error = n < 0 ? errno : 0;
  ::close(fd);
  if (n < 0) return file_kind::unreadable;
  head.resize(static_cast<std::size_t>(n));
  const auto eol = head.find('\n');
  if (eol == std::string::npos)
    return head.empty() && is_session_id(file.stem().string()) ? file_kind::header_not_written
                                                               : file_kind::no_first_line;
  boost::json::error_code ec;
  const boost::json::value v = boost::json::parse(std::string_view(head).substr(0, eol), ec);
  if (ec || !v.is_object()) return file_kind::not_a_capture;
  const auto& o = v.get_object();
  const auto* type = o.if_contains(schema::field::type);
  const auto* session = o.if_contains(schema::field::session);
  const bool names_itself = type && type->is_string() && type->get_string() == schema::record::header && session &&
                            session->is_string() && session->get_string() == file.stem().string();
  return names_itself ? file_kind::capture : file_kind::not_a_capture;
}

struct entry {
  fs::path path;
  std::uint64_t bytes = 0;
  std::chrono::system_clock::time_point written;   // last modification: the session's end
};

// The file's kind, from `kinds` when it was read before (same name, same inode). Only a first
// line read is remembered: a capture just begun, a file without a first line, or one that
// could not be opened, is asked again.
file_kind kind_of(const fs::path& file, const struct stat& st, capture_kinds* kinds, capture_kinds& seen, int& error) {
  const std::string name = file.filename().string();
  if (kinds) {
    if (auto it = kinds->known.find(name); it != kinds->known.end() && it->second.first == st.st_ino) {
      seen.known.insert(*it);
      return it->second.second ? file_kind::capture : file_kind::not_a_capture;
    }
  }
  const file_kind kind = kind_of(file, error);
  if (kind == file_kind::capture || kind == file_kind::not_a_capture)
    seen.known.emplace(name, std::make_pair(static_cast<std::uint64_t>(st.st_ino), kind == file_kind::capture));
  // Without a first line it is not a capture now, and is asked again next time (a header cut
  // short by a full disk is written whole or not at all by the next write).
  return kind == file_kind::no_first_line ? file_kind::not_a_capture : kind;
}

std::vector<entry> list_captures(const fs::path& dir, capture_kinds* kinds, std::uint64_t& not_captures,
                                 std::vector<std::string>& errors) {
  std::vector<entry> out;
  capture_kinds seen;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".jsonl") continue;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;   // gone meanwhile
    if (!S_ISREG(st.st_mode)) {   // a directory, FIFO or link named *.jsonl
      ++not_captures;
      continue;
    }
    int error = 0;
    const file_kind kind = kind_of(it->path(), st, kinds, seen, error);
    if (kind == file_kind::gone) continue;
    if (kind == file_kind::unreadable) {
      errors.push_back(it->path().string() + ": cannot read it (" + std::strerror(error) +
                       "): left alone, not counted");
      continue;
    }
    if (kind == file_kind::not_a_capture) {
      ++not_captures;
      continue;
    }
    const auto written = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
    out.push_back({it->path(), static_cast<std::uint64_t>(st.st_size), written});
  }
  if (ec) errors.push_back(dir.string() + ": cannot list the directory: " + ec.message());
  else if (kinds) *kinds = std::move(seen);
  std::sort(out.begin(), out.end(), [](const entry& a, const entry& b) {
    return a.written != b.written ? a.written < b.written : a.path < b.path;
  });
  return out;
}

}  // namespace

bool is_finished_capture(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  struct stat st {};
  std::string tail;
  if (::fstat(fd, &st) == 0 && st.st_size > 0) {
    const auto size = static_cast<std::uint64_t>(st.st_size);
    const std::uint64_t from = size > tail_bytes ? size - tail_bytes : 0;
    tail.resize(static_cast<std::size_t>(size - from));
    const ssize_t n = ::pread(fd, tail.data(), tail.size(), static_cast<off_t>(from));
    tail.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  }
  ::close(fd);
  // The last line, terminated: a cut line is not an end record.
  if (tail.size() < 2 || tail.back() != '\n') return false;
  tail.pop_back();
  const auto start = tail.rfind('\n');
  const std::string_view line = start == std::string::npos ? std::string_view(tail) : std::string_view(tail).substr(start + 1);
  boost::json::error_code ec;
  const boost::json::value v = boost::json::parse(line, ec);
  if (ec || !v.is_object()) return false;
  const auto* type = v.get_object().if_contains(schema::field::type);
  return type && type->is_string() && type->get_string() == schema::record::end;
}

prune_result prune(const fs::path& dir, const retention& limits, std::chrono::system_clock::time_point now,
                   const std::function<bool(std::string_view)>& is_open, capture_kinds* kinds) {
  prune_result out;
  std::vector<entry> all = list_captures(dir, kinds, out.not_captures, out.errors);
  std::uint64_t total = 0;
  for (const auto& e : all) total += e.bytes;
  for (const auto& e : all) {   // oldest first
    const bool too_old = limits.max_age && now - e.written > *limits.max_age;
    const bool too_big = limits.max_bytes && total > *limits.max_bytes;
    if (too_old || too_big) {
      const bool open = is_open && is_open(e.path.stem().string());
      std::error_code ec;
      if (open || !is_finished_capture(e.path)) {
        ++out.left_unfinished;
      } else if (fs::remove(e.path, ec)) {
        ++out.removed;
        out.removed_bytes += e.bytes;
        out.removed_sessions.push_back(e.path.stem().string());
        if (kinds) kinds->known.erase(e.path.filename().string());
        total -= e.bytes;
        continue;
      } else {
        out.errors.push_back(e.path.string() + ": cannot remove: " + (ec ? ec.message() : "gone"));
      }
    }
    ++out.kept;
    out.kept_bytes += e.bytes;
  }
  out.over_max_bytes = limits.max_bytes && total > *limits.max_bytes;
  return out;
}

prune_result prune_with_index(const fs::path& dir, const retention& limits, std::chrono::system_clock::time_point now) {
  prune_result out = prune(dir, limits, now);
  std::error_code ec;
  if (out.removed_sessions.empty() || !fs::exists(dir / index_file_name, ec)) return out;
  std::string error;
  auto index = capture_index::open(dir, capture_index::busy::wait, error);
  if (!index || !index->remove(out.removed_sessions, error))
    out.errors.push_back(error + " (the index still lists removed captures: run 'mailtap captures reindex')");
  return out;
}

}  // namespace mailtap::captures
