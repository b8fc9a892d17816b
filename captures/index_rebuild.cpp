// Rebuilding the capture index from the files (index.hpp rebuild_index): the files are the
// truth, the index only a way to find them.
#include <algorithm>
#include <map>
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
  std::vector<session_summary> batch;
  auto flush = [&] {
    const bool ok = index->put(batch, error);
    batch.clear();
    return ok;
  };
  std::map<std::string, std::string> file_of;   // session id -> the file indexed for it
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".jsonl" || !it->is_regular_file(ec)) continue;
    std::string why;
    auto cap = read_capture(it->path(), why);
    if (!cap) {
      out.unreadable.push_back(why);
      gone.push_back(it->path().stem().string());
      continue;
    }
    const std::string file = it->path().filename().string();
    auto [known, first] = file_of.try_emplace(cap->header.session, file);
    if (!first) {
      // A copy (or the original, found after its copy): the file named after the session wins.
      const bool canonical = it->path().stem() == cap->header.session;
      const std::string& skipped = canonical ? known->second : file;
      const std::string& kept = canonical ? file : known->second;
      out.duplicates.push_back(skipped + ": session " + cap->header.session + " is " + kept +
                               "'s too; the index holds " + kept + " (show or export the other by its path)");
      if (!canonical) continue;
      known->second = file;
      --out.indexed;   // counted once, for the file that replaces the other's row
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
  // An unreadable file named after a session that a readable copy indexed keeps the copy's row.
  std::erase_if(gone, [&](const std::string& session) { return file_of.contains(session); });
  // Rows of files that are gone (removed by hand, or by a prune of an older mailtap) or
  // could not be read. A capture a running relay finished meanwhile has its file: kept.
  auto rows = index->files(error);
  if (!rows) return std::nullopt;
  for (const auto& [session, file] : *rows)
    if (!fs::exists(dir / file, ec)) gone.push_back(session);
  std::sort(gone.begin(), gone.end());
  gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
  if (!index->remove(gone, error) || !index->set_covers_directory(true, error)) return std::nullopt;
  out.removed = gone.size();
  return out;
}

}  // namespace mailtap::captures
