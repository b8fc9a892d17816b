// Capture writer: sessions queue typed records; one thread turns them into JSON lines
// (names from schema.hpp), writes each batch with write(2) and so leaves complete lines
// behind at any crash; a barrier may also fdatasync the file (store_options::fsync).
#include "captures/writer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <variant>
#include <vector>

#include "captures/index.hpp"
#include "mailtap/version.hpp"
#include "protocol/base64.hpp"

namespace mailtap::captures {

namespace {
// Record bytes queued but not yet written, across all sessions, above which further bytes
// records are dropped and their captures marked incomplete (bounded memory). Sessions
// stop reading well before this (store::backlog_pause_at), so it is the last resort.
constexpr std::size_t queued_bytes_cap = 32 * 1024 * 1024;
// A file's serialized lines are written out once they reach this, so the writer's buffer is
// reused instead of growing (and page-faulting) with the batch.
constexpr std::size_t write_out_at = 1024 * 1024;
// The writer wakes for barriers and closes at once; other records wait for this tick or
// for this much queued data, so a busy session costs one write(2) per batch, not per record.
constexpr auto writer_tick = std::chrono::milliseconds(20);
constexpr std::size_t wake_at_queued_bytes = 64 * 1024;

std::int64_t unix_us(std::chrono::system_clock::time_point tp) {
  return std::chrono::duration_cast<std::chrono::microseconds>(tp.time_since_epoch()).count();
}

std::string rfc3339(std::chrono::system_clock::time_point tp) { return format_rfc3339_us(unix_us(tp)); }

// Captures closed but not yet in a failing index, beyond which the oldest are dropped from
// it (they stay on disk; `mailtap captures reindex` adds them): bounded memory.
constexpr std::size_t index_pending_cap = 10'000;
// After the index failed to open, how long the writer waits before it tries again.
constexpr auto index_retry_every = std::chrono::seconds(60);

namespace field = schema::field;
namespace record = schema::record;

boost::json::object reply_json(const protocol::reply& r) {
  boost::json::object o;
  o[field::code] = r.code;
  o[field::enhanced] = r.enhanced;
  o[field::text] = r.text();
  return o;
}

struct header_rec { session_info info; };
struct bytes_rec { std::uint64_t t; protocol::leg l; protocol::direction d; std::string bytes; };
// A command or a note. A command is the client's (leg client, dir in) or, since format
// version 3, the relay's own sent upstream (leg upstream, dir out).
struct text_rec { std::uint64_t t; std::string_view type; std::string text; bool relay_command = false; };
struct reply_rec { std::uint64_t t; protocol::leg l; protocol::direction d; protocol::reply r; };
struct tls_rec { std::uint64_t t; protocol::leg l; protocol::tls_summary tls; };
struct end_rec {
  std::uint64_t t;
  std::string reason;
  std::string detail;
  std::uint64_t dropped;
  std::chrono::system_clock::time_point ended_at;   // when the session ended, not when this is written
};
struct fault_rec { std::uint64_t t; protocol::fault_event f; };
struct barrier_rec { std::function<void()> done; };
// complete: the session ended and nothing was dropped; the writer counts the capture
// complete only if, besides, every write of its file succeeded (known only here).
struct close_rec { bool complete; };
}  // namespace

struct capture_file {
  std::filesystem::path path;
  int fd = -1;
  std::string pending;
  bool synced_once = false;   // its directory entry was synced with it (store_options::fsync)
  std::shared_ptr<std::atomic<bool>> failed = std::make_shared<std::atomic<bool>>(false);
  std::optional<summary_builder> summary;   // what the index will hold (store_options::index)
};

struct queued_record {
  std::shared_ptr<capture_file> file;
  // Rare, large records are boxed so every queued record stays small (a flood of commands
  // queues many records; their size is what bounds memory).
  std::variant<std::unique_ptr<header_rec>, bytes_rec, text_rec, reply_rec, std::unique_ptr<tls_rec>,
               protocol::stage_record, std::unique_ptr<protocol::transaction_record>, std::unique_ptr<end_rec>,
               std::unique_ptr<fault_rec>, barrier_rec, close_rec>
      body;
  std::size_t weight = 0;   // memory this record holds, counted against queued_bytes_cap
};

// ---------------------------------------------------------------- serialization

namespace {

// Bytes records are most of a capture's volume: written directly, since base64 text and the
// fixed field values never need JSON escaping.
// Field names are plain identifiers (schema.hpp) and need no escaping either.
void append_bytes_line(std::string& out, const bytes_rec& b) {
  const auto key = [&out](std::string_view name) {
    out += '"';
    out += name;
    out += "\":";
  };
  const auto quoted = [&out](std::string_view value) {
    out += '"';
    out += value;
    out += '"';
  };
  out += '{';
  key(field::type), quoted(record::bytes), out += ',';
  key(field::t_us), out += std::to_string(b.t), out += ',';
  key(field::leg), quoted(to_string(b.l)), out += ',';
  key(field::dir), quoted(to_string(b.d)), out += ',';
  key(field::b64), quoted(protocol::base64_encode(b.bytes));
  out += "}\n";
}

std::string to_line(const queued_record& q) {
  using boost::json::object;
  object o;
  struct visitor {
    object& o;
    void operator()(const std::unique_ptr<header_rec>& h) { (*this)(*h); }
    void operator()(const std::unique_ptr<tls_rec>& t) { (*this)(*t); }
    void operator()(const std::unique_ptr<protocol::transaction_record>& t) { (*this)(*t); }
    void operator()(const std::unique_ptr<end_rec>& e) { (*this)(*e); }
    void operator()(const std::unique_ptr<fault_rec>& f) { (*this)(*f); }
    void operator()(const header_rec& h) {
      o[field::type] = record::header;
      o[field::format] = format_name;
      o[field::version] = format_version;
      o[field::session] = h.info.id;
      o[field::seed] = h.info.seed;
      o[field::client] = h.info.client;
      o[field::listen] = h.info.listen;
      o[field::upstream] = h.info.upstream;
      o[field::started_at] = rfc3339(h.info.started_at);
      o[field::started_mono_us] = h.info.started_mono_us;
      o[field::relay] = name_and_version;
      o[field::bare_eol] = h.info.bare_eol;
    }
    void operator()(const bytes_rec& b) {
      o[field::type] = record::bytes;
      o[field::t_us] = b.t;
      o[field::leg] = to_string(b.l);
      o[field::dir] = to_string(b.d);
      o[field::b64] = protocol::base64_encode(b.bytes);
    }
    void operator()(const text_rec& t) {
      o[field::type] = t.type;
      o[field::t_us] = t.t;
      if (t.type == record::command) {
        o[field::leg] = to_string(t.relay_command ? protocol::leg::upstream : protocol::leg::client);
        o[field::dir] = to_string(t.relay_command ? protocol::direction::out : protocol::direction::in);
      }
      o[field::text] = t.text;
    }
    void operator()(const reply_rec& r) {
      o[field::type] = record::reply;
      o[field::t_us] = r.t;
      o[field::leg] = to_string(r.l);
      o[field::dir] = to_string(r.d);
      o[field::code] = r.r.code;
      o[field::enhanced] = r.r.enhanced;
      boost::json::array lines;
      for (const auto& l : r.r.lines) lines.emplace_back(l);
      o[field::lines] = std::move(lines);
    }
    void operator()(const tls_rec& t) {
      o[field::type] = record::tls;
      o[field::t_us] = t.t;
      o[field::leg] = to_string(t.l);
      o[field::version] = t.tls.version;
      o[field::cipher] = t.tls.cipher;
      o[field::sni] = t.tls.sni;
      o[field::peer_subject] = t.tls.peer_subject;
      o[field::peer_sha256] = t.tls.peer_sha256;
      o[field::verified] = t.tls.verified;
      o[field::insecure] = t.tls.insecure;
      o[field::handshake_us] = t.tls.handshake_us;
      if (t.l == protocol::leg::upstream) o[field::verification] = t.tls.verification;
    }
    void operator()(const protocol::stage_record& s) {
      o[field::type] = record::stage;
      o[field::name] = to_string(s.ph);
      o[field::start_us] = s.start_us;
      o[field::duration_us] = s.duration_us;
      o[field::upstream_us] = s.upstream_us;
      std::uint64_t accounted = std::min(s.duration_us, s.upstream_us + s.client_us);
      o[field::relay_us] = s.duration_us - accounted;
      o[field::client_us] = s.client_us;
      o[field::think_us] = s.think_us;
    }
    void operator()(const protocol::transaction_record& t) {
      o[field::type] = record::transaction;
      o[field::mail_from] = t.mail_from;
      boost::json::array to, codes;
      for (const auto& r : t.rcpt_to) to.emplace_back(r);
      for (int c : t.rcpt_codes) codes.emplace_back(c);
      o[field::rcpt_to] = std::move(to);
      o[field::rcpt_codes] = std::move(codes);
      o[field::message_id] = t.message_id ? boost::json::value(*t.message_id) : boost::json::value(nullptr);
      o[field::size] = t.size;
      o[field::final_reply] = t.final_reply ? boost::json::value(reply_json(*t.final_reply)) : boost::json::value(nullptr);
      o[field::outcome] = to_string(t.result);
      o[field::synthesized] = t.synthesized;
      o[field::start_us] = t.start_us;
      o[field::end_us] = t.end_us;
    }
    void operator()(const fault_rec& f) {
      o[field::type] = record::fault;
      o[field::t_us] = f.t;
      o[field::rule] = f.f.rule;
      o[field::fault_type] = f.f.type;
      o[field::decision] = f.f.decision;
      o[field::phase] = to_string(f.f.ph);
      o[field::planned_delay_us] = f.f.planned_delay_us;
      o[field::actual_delay_us] = f.f.actual_delay_us;
      o[field::detail] = f.f.detail;
    }
    void operator()(const end_rec& e) {
      o[field::type] = record::end;
      o[field::t_us] = e.t;
      o[field::reason] = e.reason;
      o[field::detail] = e.detail;
      o[field::ended_at] = rfc3339(e.ended_at);
      o[field::complete] = e.dropped == 0;
      o[field::dropped_records] = e.dropped;
    }
    void operator()(const barrier_rec&) {}
    void operator()(const close_rec&) {}
  };
  std::visit(visitor{o}, q.body);
  std::string line = boost::json::serialize(o);
  line += '\n';
  return line;
}

}  // namespace

// ---------------------------------------------------------------- store

std::unique_ptr<store> store::open(const std::filesystem::path& dir, std::string& error, store_options options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    error = dir.string() + ": cannot create capture directory: " + ec.message();
    return nullptr;
  }
  if (::chmod(dir.c_str(), 0700) != 0) {
    error = dir.string() + ": cannot set mode 0700: " + std::strerror(errno);
    return nullptr;
  }
  if (::access(dir.c_str(), W_OK) != 0) {
    error = dir.string() + ": capture directory is not writable: " + std::strerror(errno);
    return nullptr;
  }
  return std::unique_ptr<store>(new store(dir, options));
}

store::store(std::filesystem::path dir, store_options options)
    : dir_(std::move(dir)), options_(options), thread_([this] { run(); }) {}

store::~store() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

std::unique_ptr<session_capture> store::begin(const session_info& info) {
  auto file = std::make_shared<capture_file>();
  file->path = dir_ / (info.id + ".jsonl");
  ++counters_.opened;
  std::unique_ptr<session_capture> cap(new session_capture(*this, file, info));
  cap->push({file, std::make_unique<header_rec>(header_rec{info})});
  return cap;
}

void store::enqueue(queued_record&& r) {
  bool urgent = std::holds_alternative<barrier_rec>(r.body) || std::holds_alternative<close_rec>(r.body);
  bool wake;
  {
    std::lock_guard lock(mutex_);
    queued_bytes_.fetch_add(r.weight, std::memory_order_relaxed);
    wake = urgent || queued_bytes_.load(std::memory_order_relaxed) >= wake_at_queued_bytes;
    wake_requested_ = wake_requested_ || wake;
    queue_.push_back(std::move(r));
  }
  if (wake) wake_.notify_one();
}

void store::when_caught_up(std::function<void()> resume) {
  {
    std::lock_guard lock(mutex_);   // the writer empties the queue under it: no wake-up is lost
    if (backlogged()) {
      caught_up_waiters_.push_back(std::move(resume));
      return;
    }
  }
  resume();
}

namespace {

// True when DIR holds at least one capture file (stops at the first).
bool directory_has_capture(const std::filesystem::path& dir) {
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".jsonl") return true;
  return false;
}

// What the index learns from one record (index_summary.hpp), as summarize() learns it from the file.
void summarize_record(summary_builder& b, const capture_file& f, const queued_record& q) {
  if (const auto* h = std::get_if<std::unique_ptr<header_rec>>(&q.body)) {
    const session_info& info = (*h)->info;
    b.header(info.id, f.path.filename().string(), unix_us(info.started_at), info.client, info.upstream);
  } else if (const auto* r = std::get_if<reply_rec>(&q.body)) {
    b.reply(r->r.code, r->r.enhanced);
  } else if (const auto* t = std::get_if<std::unique_ptr<protocol::transaction_record>>(&q.body)) {
    const auto& tx = **t;
    indexed_transaction it{tx.mail_from, tx.rcpt_to, tx.rcpt_codes, tx.message_id.value_or(""),
                           std::string(to_string(tx.result)), 0, ""};
    if (tx.final_reply) {
      it.final_code = tx.final_reply->code;
      it.final_enhanced = tx.final_reply->enhanced;
    }
    b.transaction(std::move(it));
  } else if (const auto* fr = std::get_if<std::unique_ptr<fault_rec>>(&q.body)) {
    b.fault((*fr)->f.rule);
  } else if (const auto* e = std::get_if<std::unique_ptr<end_rec>>(&q.body)) {
    b.end((*e)->reason, unix_us((*e)->ended_at), (*e)->dropped == 0);
  }
}

}  // namespace

void store::run() {
  std::deque<queued_record> batch;
  std::vector<capture_file*> touched;
  std::vector<std::function<void()>> caught_up;
  auto report_failure = [this](const capture_file& f, const std::string& reason) {
    if (failure_listener_) failure_listener_(f.path.stem().string(), reason);
  };
  auto write_out = [this, &report_failure](capture_file& f) {
    if (f.pending.empty()) return;
    if (f.fd < 0 || f.failed->load()) {
      f.pending.clear();
      return;
    }
    std::string_view rest = f.pending;
    while (!rest.empty()) {
      ssize_t n = ::write(f.fd, rest.data(), rest.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        out_of_space_ = out_of_space_ || (n < 0 && errno == ENOSPC);
        f.failed->store(true);
        ++counters_.write_failures;
        report_failure(f, n < 0 ? std::strerror(errno) : "nothing written");
        break;
      }
      rest.remove_prefix(static_cast<std::size_t>(n));
      counters_.bytes_written.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
    }
    f.pending.clear();   // keeps its capacity for the next lines
  };
  // Opened before the first capture, so that a new index knows whether older captures exist.
  if (options_.index) index_ready();
  for (;;) {
    prune_if_due();
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, writer_tick, [&] { return stopping_ || wake_requested_; });
      wake_requested_ = false;
      if (queue_.empty() && stopping_) break;
      if (queue_.empty()) continue;
      batch.swap(queue_);
      queued_bytes_.store(0, std::memory_order_relaxed);
      caught_up.swap(caught_up_waiters_);
    }
    for (auto& resume : caught_up) resume();
    caught_up.clear();
    for (auto& q : batch) {
      capture_file& f = *q.file;
      if (std::holds_alternative<std::unique_ptr<header_rec>>(q.body)) {
        f.fd = ::open(f.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (options_.index) f.summary.emplace();
        open_ids_.insert(f.path.stem().string());
        if (f.fd < 0) {
          out_of_space_ = out_of_space_ || errno == ENOSPC;
          f.failed->store(true);
          ++counters_.write_failures;
          report_failure(f, std::string("cannot create ") + f.path.filename().string() + ": " + std::strerror(errno));
        }
      }
      if (f.summary) summarize_record(*f.summary, f, q);
      if (auto* b = std::get_if<barrier_rec>(&q.body)) {
        for (auto* t : touched) write_out(*t);
        touched.clear();
        if (options_.fsync) sync(f);
        b->done();
        continue;
      }
      if (auto* c = std::get_if<close_rec>(&q.body)) {
        write_out(f);
        index_closed(f);
        if (c->complete && f.fd >= 0 && !f.failed->load()) ++counters_.complete;
        else ++counters_.incomplete;
        if (f.fd >= 0) ::close(f.fd);
        f.fd = -1;
        if (auto it = open_ids_.find(f.path.stem().string()); it != open_ids_.end()) open_ids_.erase(it);
        continue;
      }
      if (auto* b = std::get_if<bytes_rec>(&q.body)) append_bytes_line(f.pending, *b);
      else f.pending += to_line(q);
      if (f.pending.size() >= write_out_at) write_out(f);
      if (touched.empty() || touched.back() != &f) touched.push_back(&f);
    }
    for (auto* t : touched) write_out(*t);
    touched.clear();
    batch.clear();
    flush_index();
  }
}

// Runs the retention limits when they are due (or at once after ENOSPC), never touching a
// capture this store has open.
void store::prune_if_due() {
  if (!options_.retain.any()) return;
  const auto steady = std::chrono::steady_clock::now();
  if (!out_of_space_ && steady < next_prune_) return;
  next_prune_ = steady + options_.prune_every;
  out_of_space_ = false;
  prune_result r;
  try {
    r = prune(dir_, options_.retain, std::chrono::system_clock::now(),
              [this](std::string_view id) { return open_ids_.find(id) != open_ids_.end(); });
  } catch (const std::exception& e) {   // allocation failure: try again next time
    r.errors.push_back(dir_.string() + ": cannot prune: " + e.what());
  }
  if (options_.index && !r.removed_sessions.empty()) {
    // A capture waiting for the index that retention removed meanwhile stays out of it.
    std::erase_if(index_pending_, [&r](const session_summary& s) {
      return std::find(r.removed_sessions.begin(), r.removed_sessions.end(), s.session) != r.removed_sessions.end();
    });
    std::string error;
    if (index_ready() && !index_->remove(r.removed_sessions, error)) index_failed(error);
  }
  counters_.pruned += r.removed;
  counters_.pruned_bytes += r.removed_bytes;
  if (options_.on_prune && (r.removed > 0 || !r.errors.empty() || r.over_max_bytes)) options_.on_prune(r);
}

// ---------------------------------------------------------------- index

// A closed capture joins the index at the end of this batch. One whose file could not be
// written is left out: its file is not what its records said (reindex reads what is there).
void store::index_closed(capture_file& f) {
  if (!f.summary) return;
  if (!f.failed->load()) index_pending_.push_back(std::move(*f.summary).finish());
  f.summary.reset();
  if (index_pending_.size() > index_pending_cap) {
    const auto excess = index_pending_.size() - index_pending_cap;
    index_pending_.erase(index_pending_.begin(), index_pending_.begin() + static_cast<std::ptrdiff_t>(excess));
    counters_.index_dropped += excess;
  }
}

void store::index_failed(const std::string& reason) {
  ++counters_.index_failures;
  if (index_failure_told_) return;
  index_failure_told_ = true;
  if (options_.on_index_failure) options_.on_index_failure(reason);
}

// The index open, and still the file in the directory (a reindex may have replaced it);
// opened again when needed, at most every index_retry_every after a failure.
bool store::index_ready() {
  struct stat st {};
  const auto path = dir_ / index_file_name;
  const bool same_file = ::stat(path.c_str(), &st) == 0 && st.st_ino == index_inode_;
  if (index_ && same_file) return true;
  index_.reset();
  const auto now = std::chrono::steady_clock::now();
  if (now < next_index_open_) return false;
  std::string error;
  index_ = capture_index::open(dir_, capture_index::busy::fail, error);
  // A new index beside older captures does not list them: list and search rebuild it first.
  if (index_ && index_->created() && !index_->set_covers_directory(!directory_has_capture(dir_), error)) index_.reset();
  if (!index_) {
    next_index_open_ = now + index_retry_every;
    index_failed(error);
    return false;
  }
  index_inode_ = ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
  return true;
}

// The batch's closed captures, in one transaction. A lock held elsewhere (a reindex) or a
// failed write keeps them for the next batch.
void store::flush_index() {
  if (index_pending_.empty() || !index_ready()) return;
  std::string error;
  if (!index_->put(index_pending_, error)) {
    index_failed(error);
    return;
  }
  counters_.indexed += index_pending_.size();
  index_pending_.clear();
}

// The file's data, and the first time also the directory entry that names it, so that the
// file itself survives a power failure (fsync(2): syncing a file does not sync its entry).
void store::sync(capture_file& f) {
  if (f.fd < 0 || f.failed->load()) return;
  bool ok = ::fdatasync(f.fd) == 0;
  std::string reason = ok ? std::string() : std::string("fdatasync: ") + std::strerror(errno);
  if (ok && !f.synced_once) {
    const int dir_fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ok = dir_fd >= 0 && ::fsync(dir_fd) == 0;
    if (!ok) reason = std::string("fsync of the capture directory: ") + std::strerror(errno);
    if (dir_fd >= 0) ::close(dir_fd);
    f.synced_once = ok;
  }
  ++counters_.syncs;
  if (ok) return;
  f.failed->store(true);
  ++counters_.write_failures;
  if (failure_listener_) failure_listener_(f.path.stem().string(), reason);
}

// ---------------------------------------------------------------- session_capture

session_capture::session_capture(store& owner, std::shared_ptr<capture_file> file, const session_info& info)
    : store_(owner), file_(std::move(file)), file_failed_(file_->failed), id_(info.id), started_at_(info.started_at) {}

// Counted complete or incomplete by the writer when it closes the file: a write can still
// fail after this, and a capture that failed is incomplete however its session ended.
session_capture::~session_capture() { push({file_, close_rec{ended_ && dropped_ == 0}}); }

void session_capture::push(queued_record&& r) {
  // Every record counts, not only raw bytes: a flood of small commands is mostly records.
  r.weight += sizeof(queued_record);
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, text_rec>) r.weight += body.text.size();
        else if constexpr (std::is_same_v<T, reply_rec>) r.weight += 2 * body.r.raw.size();
        else if constexpr (std::is_same_v<T, std::unique_ptr<protocol::transaction_record>>) r.weight += 512;
        else if constexpr (std::is_same_v<T, std::unique_ptr<fault_rec>>)
          r.weight += sizeof(fault_rec) + body->f.rule.size() + body->f.type.size() + body->f.decision.size() +
                      body->f.detail.size();
      },
      r.body);
  store_.enqueue(std::move(r));
}

void session_capture::on_bytes(std::uint64_t t, protocol::leg l, protocol::direction d, std::string_view bytes) {
  if (store_.queued_bytes_.load(std::memory_order_relaxed) + bytes.size() > queued_bytes_cap) {
    ++dropped_;
    ++store_.counters_.dropped_records;
    return;
  }
  push({file_, bytes_rec{t, l, d, std::string(bytes)}, bytes.size()});
}

void session_capture::on_command(std::uint64_t t, std::string_view text) {
  push({file_, text_rec{t, record::command, std::string(text)}});
}

void session_capture::on_relay_command(std::uint64_t t, std::string_view text) {
  push({file_, text_rec{t, record::command, std::string(text), true}});
}

void session_capture::on_reply(std::uint64_t t, protocol::leg l, protocol::direction d, const protocol::reply& r) {
  push({file_, reply_rec{t, l, d, r}});
}

void session_capture::on_note(std::uint64_t t, std::string_view text) {
  push({file_, text_rec{t, record::note, std::string(text)}});
}

void session_capture::on_tls(std::uint64_t t, protocol::leg l, const protocol::tls_summary& tls) {
  push({file_, std::make_unique<tls_rec>(tls_rec{t, l, tls})});
}

void session_capture::on_stage(const protocol::stage_record& s) { push({file_, s}); }

void session_capture::on_transaction(const protocol::transaction_record& t) {
  push({file_, std::make_unique<protocol::transaction_record>(t)});
}

void session_capture::on_fault(std::uint64_t t, const protocol::fault_event& f) {
  push({file_, std::make_unique<fault_rec>(fault_rec{t, f})});
}

void session_capture::on_end(std::uint64_t t, std::string_view reason, std::string_view detail) {
  if (ended_) return;
  ended_ = true;
  // t is the session's clock (µs since it started); started_at is the wall clock at that start.
  const auto ended_at = started_at_ + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                          std::chrono::microseconds(t));
  push({file_, std::make_unique<end_rec>(end_rec{t, std::string(reason), std::string(detail), dropped_, ended_at})});
}

void session_capture::when_written(std::function<void()> done) {
  push({file_, barrier_rec{std::move(done)}});
}

}  // namespace mailtap::captures
