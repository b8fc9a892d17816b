// Rebuilding the capture index from the files (index.hpp rebuild_index): the files are the
// truth, the index only a way to find them.
#include <algorithm>
#include <set>
#include <system_error>

#include "captures/index.hpp"
#include "captures/reader.hpp"

namespace mailtap::captures {

namespace {

namespace fs = std::filesystem;

// Captures put per transaction: a running relay's insert waits for at most one such batch.
constexpr std::size_t rebuild_batch = 500;

std::unique_ptr<capture_index> open_or_replace(const fs::path& dir, std::string& error) {
  if (auto index = capture_index::open(dir, capture_index::busy::wait, error)) return index;
  // Not an index (corrupt, or another schema version): it only ever held what the files
  // hold, so it is replaced.
  remove_index_files(dir);
  error.clear();
  return capture_index::open(dir, capture_index::busy::wait, error);
}

}  // namespace

std::optional<rebuild_result> rebuild_index(const fs::path& dir, std::string& error) {
  auto index = open_or_replace(dir, error);
  if (!index) return std::nullopt;
  rebuild_result out;
  std::vector<std::string> gone;
  std::vector<left_out_file> left_out;
  std::vector<session_summary> batch;
  auto flush = [&] {
    const bool ok = index->put(batch, error);
    batch.clear();
    return ok;
  };
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".jsonl" || !it->is_regular_file(ec)) continue;
    const std::string file = it->path().filename().string();
    // Stamped before it is read: a file that changes while it is read is not the one judged.
    left_out_file stamp;
    stamp.file = file;
    const bool stamped = stamp_file(it->path(), stamp);
    std::string why;
    auto cap = read_capture(it->path(), why);
    if (!cap) {
      out.unreadable.push_back(why);
      gone.push_back(it->path().stem().string());
      if (stamped) {
        stamp.unreadable = true;
        // Recorded by the file's name, as a copy's problem is: the reader names the path this
        // rebuild was given (DIR/FILE:LINE: what), which is no path from another directory
        // (`reindex --dir ix`, then `cd ix; list --dir .`). list puts the directory in use back.
        const std::string given = it->path().string();
        stamp.problem = why.starts_with(given) ? file + why.substr(given.size()) : why;
        left_out.push_back(std::move(stamp));
      }
      continue;
    }
    if (it->path().stem() != cap->header.session) {
      // A capture is the file named after its session (FORMAT.md "The index"): a copy or a
      // renamed file is never indexed, whether or not the original is still here, as prune
      // leaves it alone. Before, a copy whose original was gone was indexed under a session id
      // that `show ID` could not open.
      const std::string original = cap->header.session + ".jsonl";
      std::error_code absent;
      const bool here = fs::exists(dir / original, absent);
      out.duplicates.push_back(file + ": session " + cap->header.session +
                               (here ? " is " + original + "'s too; the index holds " + original
                                     : ", whose file " + original + " is not here; a copy is not indexed") +
                               " (show or export it by its path)");
      if (stamped) {
        stamp.problem = out.duplicates.back();
        left_out.push_back(std::move(stamp));
      }
      continue;
    }
    batch.push_back(summarize(*cap));
    ++out.indexed;
    if (batch.size() >= rebuild_batch && !flush()) return std::nullopt;
  }
  if (ec) {
    error = dir.string() + ": cannot list the directory: " + ec.message();
    return std::nullopt;
  }
  if (!flush()) return std::nullopt;
  // Rows of files that are gone (removed by hand, or by a prune of an older mailtap) or
  // could not be read. A capture a running relay finished meanwhile has its file: kept.
  auto rows = index->files(error);
  if (!rows) return std::nullopt;
  std::set<std::string> with_rows;
  for (const auto& [session, file] : *rows) {
    with_rows.insert(session);
    // Gone, or a copy's row an older mailtap indexed.
    if (!fs::exists(dir / file, ec) || fs::path(file).stem() != session) gone.push_back(session);
  }
  // Only rows there are count as removed: an unreadable file usually never had one (a trial:
  // every reindex said "removed 1 stale row(s)" for a broken file).
  std::erase_if(gone, [&](const std::string& session) { return !with_rows.contains(session); });
  std::sort(gone.begin(), gone.end());
  gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
  if (!index->remove(gone, error) || !index->set_left_out(left_out, error) || !index->set_covers_directory(true, error))
    return std::nullopt;
  out.removed = gone.size();
  return out;
}

}  // namespace mailtap::captures
