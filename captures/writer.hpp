// Capture writing: one JSON Lines file per session (FORMAT.md). Each record is serialized on
// its session's thread into the capture's own buffer, which that thread writes out with
// write(2) when it fills, at a barrier and at the close: a barrier costs no thread hand-off.
// One background thread writes out what idle sessions left buffered for a whole writer tick,
// runs the fdatasync of barriers when store_options::fsync asks for them, keeps the index
// and applies retention; with none of that to do it sleeps (no tick) until a capture buffers
// or closes. The store owns that thread and the directory; a session_capture is
// a session's handle and its observer. Record types and field names come from schema.hpp.
// Threading: session_capture methods are called from its session's strand only; the store
// may be shared by all sessions; callbacks passed to when_written run on the caller's thread
// before it returns, or (fsync) on the writer thread.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "captures/client_bytes_window.hpp"
#include "captures/retention.hpp"
#include "captures/schema.hpp"
#include "protocol/observer.hpp"

namespace mailtap::captures {

struct store_options {
  // fdatasync(2) each capture before a barrier is released (`[captures] fsync`; README
  // "Captures" gives its cost): the transaction record then survives a power failure, not
  // only a crash of mailtap.
  bool fsync = false;
  // Captures past these limits are removed, oldest finished ones first (retention.hpp), when
  // the store opens, every prune_every, and soon after a write fails for lack of space.
  retention retain;
  std::chrono::seconds prune_every{60};
  // Told (on the writer thread; the first, as the store opens, on the thread opening it) of
  // each prune that removed something, failed to, or left the directory above max_bytes; the
  // relay logs it. Given here because the first prune runs as the store opens.
  std::function<void(const prune_result&)> on_prune;
  // Keep the directory's index (index.hpp) up to date: each capture is added by the writer
  // thread within about 0.1 s of its close, in one transaction for all that closed meanwhile,
  // and retention removes the rows of what it prunes. An index failure never loses or holds
  // back a capture: it is counted (store_counters::index_failures), and `on_index_failure` is
  // told of the first one (on the writer thread, or on the thread opening the store) with a
  // one-line reason; `mailtap captures reindex` repairs.
  bool index = false;
  std::function<void(const std::string& reason)> on_index_failure;
  // While more captures than this are open, an idle one (its session recorded nothing for a
  // writer tick) gives its descriptor back until its next write, so that an idle session holds
  // two descriptors (its legs), not three. Descriptors are scarce then (the relay sets it from
  // its RLIMIT_NOFILE); otherwise a capture stays open until its session ends.
  std::size_t park_idle_above = std::numeric_limits<std::size_t>::max();
};

struct session_info {
  std::string id;
  std::uint64_t seed = 0;          // the session's fault generator's, from these two:
  std::uint64_t master_seed = 0;   // the run's (--seed, or the one chosen at start)
  std::uint64_t number = 0;        // the session's number in its run (its id's last part)
  std::string client;
  std::string listen;
  std::string upstream;      // "host:port" or "builtin"
  std::string bare_eol;
  std::string normalize_to;  // under bare_eol normalize, "space" (what a bare CR or LF became); else ""
  std::chrono::system_clock::time_point started_at;
  std::uint64_t started_mono_us = 0;
};

struct store_counters {
  std::atomic<std::uint64_t> opened{0};
  std::atomic<std::uint64_t> complete{0};
  std::atomic<std::uint64_t> incomplete{0};       // kept but not completed (no capture silently lost)
  std::atomic<std::uint64_t> write_failures{0};
  std::atomic<std::uint64_t> bytes_written{0};    // capture bytes write(2) accepted (the admin API's /metrics)
  std::atomic<std::uint64_t> dropped_records{0};  // buffers above their cap (bounded memory)
  std::atomic<std::uint64_t> syncs{0};            // fdatasync calls made for barriers (store_options::fsync)
  std::atomic<std::uint64_t> pruned{0};           // captures removed by store_options::retain
  std::atomic<std::uint64_t> pruned_bytes{0};
  std::atomic<std::uint64_t> indexed{0};          // captures added to the index (store_options::index)
  std::atomic<std::uint64_t> index_failures{0};   // index opens or writes that failed
  std::atomic<std::uint64_t> index_dropped{0};    // captures never indexed: too many waited for a failing index
};

class session_capture;
class capture_index;
struct capture_file;
struct session_summary;
class summary_builder;
struct writer_job;

class store {
 public:
  // Creates `dir` with mode 0700 if needed. nullptr and a one-line error on failure.
  static std::unique_ptr<store> open(const std::filesystem::path& dir, std::string& error, store_options options = {});
  ~store();   // stop()
  // What opening made: the directories it created (deepest first, absolute; a symlink, even
  // a dangling one, is never among them) and whether it created the index. A program whose
  // start then fails removes exactly these, once the store is gone (relay/cli_run.cpp).
  struct made_at_open {
    std::vector<std::filesystem::path> directories;
    bool index = false;
  };
  const made_at_open& made() const { return made_; }
  // Writes out everything buffered, puts the closed captures in the index, then joins the
  // writer thread; once every session is gone. counters() are final after it. Idempotent.
  void stop();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  // Creates the session's capture file (a failure marks the capture failed and is reported).
  std::unique_ptr<session_capture> begin(const session_info& info);
  // True while records wait to be written beyond backlog_pause_at: sessions stop reading
  // their clients until the writer catches up (backpressure, so a flood costs time, not memory).
  bool backlogged() const { return buffered_bytes_.load(std::memory_order_relaxed) >= backlog_pause_at; }
  // Buffered record bytes at which sessions pause reading.
  static constexpr std::size_t backlog_pause_at = 8 * 1024 * 1024;
  // Calls `resume` once the backlog has fallen below backlog_pause_at: on the writer thread
  // after it wrote the buffers out, or at once on the caller's thread if it is not backlogged now.
  // A session paused by the backlog waits on it instead of polling backlogged().
  void when_caught_up(std::function<void()> resume);
  const store_counters& counters() const { return counters_; }
  // Whether this store has the session's capture open (its session is in progress here).
  bool is_open(std::string_view session_id) const;
  // Told (on the thread whose write failed: a session's or the writer's) of each capture
  // whose file cannot be created or written: its session id and the reason. Set it before
  // the first begin(); the relay logs it.
  using failure_listener = std::function<void(const std::string& session_id, const std::string& reason)>;
  void on_write_failure(failure_listener listener) { failure_listener_ = std::move(listener); }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  friend class session_capture;
  store(std::filesystem::path dir, store_options options);
  void run();
  // Under f.mutex: write f's buffered lines with write(2).
  void write_out(capture_file& f);
  // A capture's buffer just became non-empty: the writer writes it out at its next tick
  // unless its session does first.
  void mark_buffered(const std::shared_ptr<capture_file>& f);
  void buffered(std::size_t bytes);
  void enqueue(writer_job&& job);
  void close(capture_file& f, bool complete);
  void release(capture_file& f);
  // Under f.mutex: an idle capture gives its descriptor back (so an idle session holds two,
  // its legs', not three), and the next write_out opens the file again, to append.
  void park(capture_file& f);
  void unpark(capture_file& f);
  // Writer thread: while descriptors are scarce, parks each open capture whose session
  // recorded nothing since the last tick.
  void park_idle();
  void report_failure(const capture_file& f, const std::string& reason);
  void sync(capture_file& f);
  void prune_if_due();
  void index_closed(session_summary&& s);
  void flush_index(bool now);
  bool index_ready();
  void mark_relay();
  void index_failed(const std::string& reason);

  std::filesystem::path dir_;
  made_at_open made_;
  store_options options_;
  store_counters counters_;
  // Guards what follows up to thread_, except the writer-only members it names.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<writer_job> jobs_;                           // barriers to sync (store_options::fsync)
  std::vector<std::shared_ptr<capture_file>> buffered_files_;   // for the next tick
  std::vector<session_summary> closed_;                    // for the index, at the next tick
  std::atomic<std::size_t> buffered_bytes_{0};             // every capture's unwritten lines
  std::atomic<bool> backlog_wake_sent_{false};             // the writer was woken for the backlog
  bool stopping_ = false;
  bool wake_requested_ = false;   // a sync or a large backlog waits
  bool writer_asleep_ = false;    // the writer waits with nothing to do: a buffered or closed capture wakes it
  std::vector<std::function<void()>> caught_up_waiters_;   // when_caught_up
  // The captures open now, by session id (never pruned; parked when descriptors are scarce).
  std::map<std::string, std::shared_ptr<capture_file>, std::less<>> open_;
  // The captures begin() is creating: open to is_open from before their file exists, so that
  // no reader of the directory (the admin API's list, the pruner) sees a file nobody has open.
  std::set<std::string, std::less<>> creating_;
  failure_listener failure_listener_;
  // Writer thread only: when to prune next.
  std::chrono::steady_clock::time_point next_prune_{};
  capture_kinds capture_kinds_;   // what earlier prunes read of the files (retention.hpp); writer thread only
  std::atomic<bool> out_of_space_{false};   // a write failed with ENOSPC: prune at once
  // Writer thread only: the index (store_options::index), the inode it was opened on (a
  // reindex may replace the file), captures closed but not yet in it, and when to try to
  // open it again after a failure.
  std::unique_ptr<capture_index> index_;
  std::uint64_t index_inode_ = 0;
  bool relay_marked_ = false;   // this relay's marker is in the open index (index_ready)
  std::vector<session_summary> index_pending_;
  std::chrono::steady_clock::time_point index_pending_since_{};   // when the oldest of them closed
  std::chrono::steady_clock::time_point next_index_open_{};
  bool index_failure_told_ = false;
  std::thread thread_;
};

class session_capture final : public protocol::session_observer {
 public:
  ~session_capture() override;   // closes the file; without on_end it stays incomplete

  void on_bytes(std::uint64_t t_us, protocol::leg l, protocol::direction d, std::string_view bytes) override;
  void on_command(std::uint64_t t_us, std::string_view text) override;
  void on_relay_command(std::uint64_t t_us, std::string_view text) override;
  void on_reply(std::uint64_t t_us, protocol::leg l, protocol::direction d, const protocol::reply& r) override;
  void on_note(std::uint64_t t_us, std::string_view text) override;
  void on_tls(std::uint64_t t_us, protocol::leg l, const protocol::tls_summary& tls) override;
  void on_stage(const protocol::stage_record& s) override;
  void on_transaction(const protocol::transaction_record& t) override;
  void on_fault(std::uint64_t t_us, const protocol::fault_event& f) override;
  void on_end(std::uint64_t t_us, std::string_view reason, std::string_view detail) override;

  // The barrier: calls `done` once everything recorded so far is written to the file with
  // write(2), where a crash of mailtap cannot lose it, and with store_options::fsync also
  // flushed to the disk (fdatasync), where a power failure cannot. Without fsync the write
  // is made here and `done` runs before this returns; with it, on the writer thread after
  // the sync. A write or sync that fails marks the capture failed and still calls `done`.
  void when_written(std::function<void()> done);
  // The barrier, when it can be settled here and now: writes everything recorded so far with
  // write(2) and returns true; false (nothing done) when store_options::fsync asks for a sync,
  // which is the writer thread's: use when_written then. A failed write marks the capture
  // failed.
  bool written_now();
  // Writes out what is buffered once it has reached the size a session writes at
  // (write_out_at). record() leaves that to the session, which calls this once the bytes just
  // read have been forwarded: the peer works on them while the capture is written, and the
  // write is not on the relay's critical path. Anything left is written at the next barrier, by
  // this, or by the writer thread within a tick; record() still writes at once when a buffer
  // reaches four times the size (bounded memory, whoever calls).
  void write_out_if_due();
  // True once any write to this capture failed.
  bool failed() const { return file_failed_->load(); }
  const std::string& id() const { return id_; }

 private:
  friend class store;
  session_capture(store& owner, std::shared_ptr<capture_file> file, const session_info& info);
  // Serializes one record into the capture's buffer (append(std::string&) writes the line).
  template <typename Append>
  void record(std::size_t size_hint, Append&& append);
  // Writes out the rest, counts the capture and hands it to the index; once. Called by the end
  // record, which nothing follows (FORMAT.md), so that the capture is listed at the writer's
  // next index batch after the session ends (index_batch_wait), not once its connections have
  // finished closing (a TLS close_notify, the linger after our FIN: seconds); and by the
  // destructor for a capture that never ended, which then gives the descriptor back
  // (store::release).
  void close_file();

  store& store_;
  std::shared_ptr<capture_file> file_;
  std::shared_ptr<std::atomic<bool>> file_failed_;
  std::string id_;
  std::chrono::system_clock::time_point started_at_;   // + on_end's t_us = ended_at
  bool ended_ = false;
  bool closed_ = false;   // close_file ran: nothing more is recorded
  std::uint64_t dropped_ = 0;
  std::unique_ptr<summary_builder> summary_;   // what the index will hold (store_options::index)
  // The client's recorded bytes, for finding the relay's copies of them; a copy shorter than
  // bytes_ref_min is recorded whole (its base64 is about as short as the reference).
  client_bytes_window client_in_;
  static constexpr std::size_t bytes_ref_min = 256;
};

}  // namespace mailtap::captures
