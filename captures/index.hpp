// The capture index: an SQLite database in the capture directory (index_file_name) with one
// row per session (index_summary.hpp) and its transactions, recipients, reply codes and
// fault rules, so `mailtap captures list|search` answer without reading the captures. The
// files stay the truth: the writer thread adds each capture as it ends (writer.cpp),
// retention removes the rows of what it prunes, and rebuild_index() (index_rebuild.cpp)
// makes it again from the files. Schema and queries: captures/FORMAT.md "The index".
// One capture_index is used by one thread at a time; several processes may share the file
// (SQLite's WAL mode: readers never wait for the writer).
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "captures/index_summary.hpp"

struct sqlite3;

namespace mailtap::captures {

inline constexpr std::string_view index_file_name = "index.sqlite3";
// Bumped with any change to the tables; an index of another version is rebuilt by reindex.
// A table added that an older index may lack and an older mailtap may ignore (left_out) is no
// change to them: the code reads its absence as empty. Version 2: transactions.without_mail.
inline constexpr int index_schema_version = 2;

// What to look for; every condition given must hold. Addresses: an exact address (any
// case), "@domain" (every address at that domain), or a pattern with '*' (any characters).
struct search_filter {
  std::string sender;
  std::string recipient;
  std::optional<std::int64_t> since_us;   // started at or after (Unix µs)
  std::optional<std::int64_t> until_us;   // started before
  std::string outcome;                    // the session outcome (FORMAT.md)
  std::string code;                       // a reply code "550", a class "5xx", or an enhanced code "5.1.1"
  std::string message_id;                 // with or without its angle brackets
  std::string client;                     // an address, or "ip:port"
  std::string rule;                       // a fault rule's name
  std::size_t limit = 50;
  std::size_t offset = 0;
};

// A one-line problem with the filter's values, or nullopt when they can be searched.
std::optional<std::string> filter_problem(const search_filter& f);

// A capture file the last rebuild read and left out of the index, as it was then (FORMAT.md
// "The index", table left_out): list and search name an unreadable one rather than count it
// among the captures not indexed yet, which reindex would add.
struct left_out_file {
  std::string file;              // its name in the directory
  std::uint64_t size = 0;        // its size and modification time when it was read: a file
  std::int64_t mtime_ns = 0;     // changed since is no longer known to be left out
  bool unreadable = false;       // true: the reader refused it; false: a copy of another capture
  std::string problem;           // one line: the reader's error, or whose copy it is

  bool operator==(const left_out_file&) const = default;
};

// Fills `into`'s size and mtime_ns from FILE; false when it cannot be stat'ed.
bool stamp_file(const std::filesystem::path& file, left_out_file& into);

class capture_index {
 public:
  enum class busy { fail, wait };   // a write lock held elsewhere: fail at once (the relay) or wait (the CLI)
  // Opens DIR/index.sqlite3, creating it (mode 0600) when it is missing. nullptr and a
  // one-line error naming the file when it cannot be opened or is not an index.
  static std::unique_ptr<capture_index> open(const std::filesystem::path& dir, busy on_busy, std::string& error);
  ~capture_index();
  capture_index(const capture_index&) = delete;
  capture_index& operator=(const capture_index&) = delete;

  // Adds or replaces these sessions, in one transaction. False and a one-line error when it
  // could not (nothing of the batch is then written).
  bool put(std::span<const session_summary> sessions, std::string& error);
  // Removes the rows of these sessions, in one transaction.
  bool remove(std::span<const std::string> sessions, std::string& error);
  // Matching sessions, newest first (start time, then session id), one page.
  std::optional<std::vector<session_summary>> search(const search_filter& f, std::string& error);
  // Replaces the files the last rebuild left out (in one transaction).
  bool set_left_out(std::span<const left_out_file> files, std::string& error);
  // The files the last rebuild left out, as recorded (none in an index no rebuild since
  // this table was added has written); nullopt (and `error`) when it cannot be read.
  std::optional<std::vector<left_out_file>> left_out(std::string& error);
  // Every session id with its file name (reindex uses it to drop rows of vanished files).
  std::optional<std::vector<std::pair<std::string, std::string>>> files(std::string& error);

  // True when this open created the file.
  bool created() const { return created_; }
  // True once every capture of the directory is known to be in the index: it was created
  // in an empty directory, or rebuilt from the files. An index the relay created beside
  // older captures is not, and list/search rebuild it first.
  bool covers_directory(std::string& error);
  // How many captures the index lists; nullopt (and `error`) when it cannot be read.
  std::optional<std::uint64_t> size(std::string& error);
  bool set_covers_directory(bool covers, std::string& error);
  // A relay recording into the directory leaves its marker (relay_marker.hpp) and takes it
  // away when it stops in order. note_relay_started: this process's marker added, and any
  // marker whose process is gone (a relay killed, or crashed: the captures it left open were
  // never indexed) taken away with covers_directory unset, so that the next list or search
  // rebuilds. Relays sharing the directory leave each other's markers alone.
  bool note_relay_started(std::string& error);
  bool note_relay_stopped(std::string& error);

  const std::filesystem::path& path() const { return path_; }

 private:
  capture_index(std::filesystem::path path, sqlite3* db, bool created) : path_(std::move(path)), db_(db), created_(created) {}
  bool exec(const char* sql, std::string& error);
  bool meta_flag(std::string_view key, std::string& error);
  bool set_meta_flag(std::string_view key, bool value, std::string& error);
  std::string problem(std::string_view what) const;

  std::filesystem::path path_;
  sqlite3* db_;
  bool created_;
};

// Removes the index file and its WAL companions (a corrupt index before a rebuild).
void remove_index_files(const std::filesystem::path& dir);

// Those of index.left_out() that are still in DIR unchanged (same size and modification time).
std::optional<std::vector<left_out_file>> files_left_out(const std::filesystem::path& dir, capture_index& index,
                                                         std::string& error);

struct rebuild_result {
  std::uint64_t indexed = 0;              // captures read and put in the index
  std::uint64_t removed = 0;              // rows whose file is gone or unreadable
  std::vector<std::string> unreadable;    // one line each: a capture that could not be read
  // One line each: a capture whose session id another file has too (a copy). The index holds
  // one row per session: the file named after it when there is one, else the first read.
  std::vector<std::string> duplicates;
};
// Makes the index of DIR agree with its capture files: every readable capture is put (in
// batches, so a running relay's own inserts wait only for one batch), rows of files that
// are gone or unreadable are removed, and the files left out (unreadable, copies) recorded. A file that is not an index, or an index of another
// schema version, is replaced. nullopt and a one-line error when the index cannot be written.
std::optional<rebuild_result> rebuild_index(const std::filesystem::path& dir, std::string& error);

}  // namespace mailtap::captures
