// Capture writing: one JSON Lines file per session (FORMAT.md), written by one background
// thread so the session's hot path only copies records into a queue. The store owns the
// thread and the directory; a session_capture is a session's handle and its observer.
// Threading: session_capture methods are called from its session's strand only; the store
// may be shared by all sessions; callbacks passed to when_durable run on the writer thread.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "captures/format.hpp"
#include "protocol/observer.hpp"

namespace mailtap::captures {


struct session_info {
  std::string id;
  std::uint64_t seed = 0;
  std::string client;
  std::string listen;
  std::string upstream;      // "host:port" or "builtin"
  std::string bare_eol;
  std::chrono::system_clock::time_point started_at;
  std::uint64_t started_mono_us = 0;
};

struct store_counters {
  std::atomic<std::uint64_t> opened{0};
  std::atomic<std::uint64_t> complete{0};
  std::atomic<std::uint64_t> incomplete{0};       // kept but not completed (no capture silently lost)
  std::atomic<std::uint64_t> write_failures{0};
  std::atomic<std::uint64_t> dropped_records{0};  // queue above its cap (bounded memory)
};

class session_capture;
struct queued_record;
struct capture_file;

class store {
 public:
  // Creates `dir` with mode 0700 if needed. nullptr and a one-line error on failure.
  static std::unique_ptr<store> open(const std::filesystem::path& dir, std::string& error);
  ~store();   // writes everything queued, then joins the writer thread
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  std::unique_ptr<session_capture> begin(const session_info& info);
  // True while the writer is behind: sessions stop reading their clients until it catches up
  // (backpressure, so a flood costs time, not memory).
  bool backlogged() const { return queued_bytes_.load(std::memory_order_relaxed) >= backlog_pause_at; }
  // Queued record bytes at which sessions pause reading.
  static constexpr std::size_t backlog_pause_at = 8 * 1024 * 1024;
  const store_counters& counters() const { return counters_; }
  // Told (on the writer thread) of each capture whose file cannot be created or written:
  // its session id and the reason. Set it before the first begin(); the relay logs it.
  using failure_listener = std::function<void(const std::string& session_id, const std::string& reason)>;
  void on_write_failure(failure_listener listener) { failure_listener_ = std::move(listener); }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  friend class session_capture;
  explicit store(std::filesystem::path dir);
  void enqueue(queued_record&& r);
  void run();

  std::filesystem::path dir_;
  store_counters counters_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<queued_record> queue_;
  std::atomic<std::size_t> queued_bytes_{0};   // every queued record's weight
  bool stopping_ = false;
  bool wake_requested_ = false;   // a barrier, a close or a large backlog is queued
  failure_listener failure_listener_;
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

  // Calls `done` (on the writer thread) once everything recorded so far is written out.
  void when_durable(std::function<void()> done);
  // True once any write to this capture failed.
  bool failed() const { return file_failed_->load(); }
  const std::string& id() const { return id_; }

 private:
  friend class store;
  session_capture(store& owner, std::shared_ptr<capture_file> file, std::string id);
  void push(queued_record&& r);

  store& store_;
  std::shared_ptr<capture_file> file_;
  std::shared_ptr<std::atomic<bool>> file_failed_;
  std::string id_;
  bool ended_ = false;
  std::uint64_t dropped_ = 0;
};

}  // namespace mailtap::captures
