// Capture writer: each session serializes its records into JSON lines (names from
// schema.hpp) in its capture's buffer and writes them with write(2) when the buffer fills,
// at a barrier and at the close, so complete lines are left behind at any crash; the writer
// thread writes out what idle sessions left buffered each tick, and runs the fdatasync of a
// barrier (store_options::fsync).
#include "captures/writer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <optional>
#include <type_traits>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <variant>
#include <vector>

#include "captures/cache_release.hpp"
#include "captures/index.hpp"
#include "captures/latin1_text.hpp"
#include "captures/utf8_text.hpp"
#include "mailtap/version.hpp"
#include "protocol/base64.hpp"

namespace mailtap::captures {

namespace {
// Record bytes buffered but not yet written, across all sessions, above which further bytes
// records are dropped and their captures marked incomplete (bounded memory). Sessions
// stop reading well before this (store::backlog_pause_at), so it is the last resort.
constexpr std::size_t buffered_bytes_cap = 32 * 1024 * 1024;
// A capture's buffered lines are written out by its session once they reach this, so one
// session's buffer stays small however large its message (bounded memory: 10,000 sessions).
constexpr std::size_t write_out_at = 64 * 1024;
// ... and at once, inside record(), at four times that (write_out_if_due is the usual way).
constexpr std::size_t write_out_now_at = 4 * write_out_at;
// The writer writes out the buffers idle sessions left behind every tick; it wakes sooner
// for a barrier to sync, or when this much is buffered across sessions.
constexpr auto writer_tick = std::chrono::milliseconds(20);
constexpr std::size_t wake_at_buffered_bytes = 1024 * 1024;
// How many characters more than base64 a bytes record's text may take (FORMAT.md `bytes`).
constexpr std::size_t latin1_slack = 8;

std::int64_t unix_us(std::chrono::system_clock::time_point tp) {
  return std::chrono::duration_cast<std::chrono::microseconds>(tp.time_since_epoch()).count();
}

std::string rfc3339(std::chrono::system_clock::time_point tp) { return format_rfc3339_us(unix_us(tp)); }

// Captures closed but not yet in a failing index, beyond which the oldest are dropped from
// it (they stay on disk; `mailtap captures reindex` adds them): bounded memory.
constexpr std::size_t index_pending_cap = 10'000;
// How long a closed capture waits for the index at most, and how many wait before they go in
// at once. An index transaction costs about the same for one capture as for hundreds (SQLite
// writes each B-tree page it changed to the WAL once per transaction: some 17 pages for
// a message's session), so batches are gathered over a few ticks, not one.
constexpr auto index_batch_wait = std::chrono::milliseconds(100);
constexpr std::size_t index_batch_max = 512;
// After the index failed to open, how long the writer waits before it tries again.
constexpr auto index_retry_every = std::chrono::seconds(60);

namespace field = schema::field;
namespace record = schema::record;

// The records as the session reports them, serialized at once (views into its data).
struct header_rec { const session_info& info; };
struct bytes_rec { std::uint64_t t; protocol::leg l; protocol::direction d; std::string_view bytes; };
// Bytes that repeat the client's incoming bytes at `at` (FORMAT.md `bytes_ref`).
struct bytes_ref_rec { std::uint64_t t; protocol::leg l; protocol::direction d; std::uint64_t at; std::size_t length; };
// A command or a note. A command is the client's (leg client, dir in) or, since format
// version 3, the relay's own sent upstream (leg upstream, dir out).
struct text_rec { std::uint64_t t; std::string_view type; std::string_view text; bool relay_command = false; };
struct reply_rec { std::uint64_t t; protocol::leg l; protocol::direction d; const protocol::reply& r; };
struct tls_rec { std::uint64_t t; protocol::leg l; const protocol::tls_summary& tls; };
struct end_rec {
  std::uint64_t t;
  std::string_view reason;
  std::string_view detail;
  std::uint64_t dropped;
  std::chrono::system_clock::time_point ended_at;   // when the session ended, not when this is written
};
struct fault_rec { std::uint64_t t; const protocol::fault_event& f; };
}  // namespace

struct capture_file {
  std::filesystem::path path;
  std::string id;
  std::shared_ptr<std::atomic<bool>> failed = std::make_shared<std::atomic<bool>>(false);
  // Guards what follows: the session's thread appends and writes out, the writer thread
  // writes out what an idle session left and syncs.
  std::mutex mutex;
  std::string pending;          // serialized lines not yet written
  int fd = -1;
  bool listed = false;          // in store::buffered_files_ for the next tick
  bool synced_once = false;     // its directory entry was synced with it (store_options::fsync)
  bool parked = false;          // its descriptor given back while idle (store::park)
  bool recorded = false;        // a record came since the writer last looked (store::park_idle)
  std::uint64_t written = 0;    // bytes write(2) accepted
  cache_release cache;          // what is written leaves the page cache behind the writer
};

// A barrier waiting for its fdatasync (store_options::fsync).
struct writer_job {
  std::shared_ptr<capture_file> file;
  std::function<void()> done;
};

// ---------------------------------------------------------------- serialization

namespace {

// One JSON object on one line, written field by field straight into the capture's buffer
// (a JSON library's document tree cost more than the rest of the relay per message). Field
// names are plain identifiers (schema.hpp) and need no escaping; string values are escaped
// as RFC 8259 section 7 requires, other bytes (UTF-8 included) pass through as they are.
class json_line {
 public:
  explicit json_line(std::string& out) : out_(out) { out_ += '{'; }
  ~json_line() { out_ += "}\n"; }
  json_line(const json_line&) = delete;
  json_line& operator=(const json_line&) = delete;

  void operator()(std::string_view name, std::string_view value) {
    key(name);
    quoted(value);
  }
  void operator()(std::string_view name, const std::string& value) { (*this)(name, std::string_view(value)); }
  void operator()(std::string_view name, const char* value) { (*this)(name, std::string_view(value)); }
  void operator()(std::string_view name, bool value) {
    key(name);
    out_ += value ? "true" : "false";
  }
  template <typename Number>
    requires std::is_integral_v<Number>
  void operator()(std::string_view name, Number value) {
    key(name);
    number(value);
  }
  // A value from schema.hpp or a to_string of an enum: a plain word, never escaped.
  void word(std::string_view name, std::string_view value) {
    key(name);
    out_ += '"';
    out_ += value;
    out_ += '"';
  }
  void null(std::string_view name) {
    key(name);
    out_ += "null";
  }
  void optional_string(std::string_view name, const std::optional<std::string>& value) {
    if (value) (*this)(name, *value);
    else null(name);
  }
  template <typename Strings>
  void strings(std::string_view name, const Strings& values) {
    key(name);
    out_ += '[';
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (i > 0) out_ += ',';
      quoted(values[i]);
    }
    out_ += ']';
  }
  template <typename Numbers>
  void numbers(std::string_view name, const Numbers& values) {
    key(name);
    out_ += '[';
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (i > 0) out_ += ',';
      number(values[i]);
    }
    out_ += ']';
  }
  void open_object(std::string_view name) {
    key(name);
    out_ += '{';
    first_ = true;
  }
  void close_object() {
    out_ += '}';
    first_ = false;
  }
  // A bytes record's bytes: as Latin-1 text (`latin1`) when that is at most 8 characters
  // longer than their base64 (`b64`), which ASCII text is (the slack keeps a lone ".\r\n"
  // readable); binary bytes, or text mostly of bytes from 0x80, as base64 (FORMAT.md).
  void raw_bytes(std::string_view bytes) {
    const std::size_t before = out_.size();
    const bool was_first = first_;
    const std::size_t base64_size = (bytes.size() + 2) / 3 * 4;
    key(field::latin1);
    out_ += '"';
    if (!append_latin1_json(out_, bytes, base64_size + latin1_slack)) {
      out_.resize(before);
      first_ = was_first;
      key(field::b64);
      out_ += '"';
      protocol::base64_encode_into(out_, bytes);
    }
    out_ += '"';
  }

 private:
  // `,"name":` in one append: a line has a dozen fields, and a capture a dozen lines per message.
  void key(std::string_view name) {
    char text[key_text_max];
    std::size_t n = 0;
    if (!first_) text[n++] = ',';
    first_ = false;
    text[n++] = '"';
    name = name.substr(0, key_text_max - 4);   // schema.hpp's names are far shorter
    std::memcpy(text + n, name.data(), name.size());
    n += name.size();
    text[n++] = '"';
    text[n++] = ':';
    out_.append(text, n);
  }
  static constexpr std::size_t key_text_max = 64;
  template <typename Number>
  void number(Number value) {
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
    out_.append(digits, end);
  }
  // A text field: JSON-escaped, and UTF-8 whatever the peer sent (utf8_text.hpp): a byte that
  // is not part of a well-formed sequence is written as \xNN (its backslash escaped).
  void quoted(std::string_view value) {
    out_ += '"';
    std::size_t plain = 0;   // the start of the run of bytes that need no escape
    for (std::size_t i = 0; i < value.size(); ++i) {
      const auto c = static_cast<unsigned char>(value[i]);
      if (!needs_escape[c]) continue;
      if (c >= 0x80) {
        if (const std::size_t n = utf8_sequence_length(value, i); n > 0) {
          i += n - 1;   // kept as it is
          continue;
        }
      }
      out_.append(value.data() + plain, i - plain);
      plain = i + 1;
      if (c >= 0x80) {
        static constexpr char hex[] = "0123456789abcdef";
        const char escaped[] = {'\\', '\\', 'x', hex[c >> 4], hex[c & 0xf]};
        out_.append(escaped, sizeof escaped);
        continue;
      }
      char escaped[6];
      out_.append(escaped, write_json_escape(escaped, c));
    }
    out_.append(value.data() + plain, value.size() - plain);
    out_ += '"';
  }
  static constexpr std::array<bool, 256> needs_escape = [] {
    std::array<bool, 256> table{};
    for (std::size_t c = 0; c < 0x20; ++c) table[c] = true;
    for (std::size_t c = 0x80; c < 0x100; ++c) table[c] = true;   // checked for UTF-8
    table['"'] = table['\\'] = true;
    return table;
  }();

  std::string& out_;
  bool first_ = true;
};

// Bytes records are most of a capture's volume.
void append_json_line(std::string& out, const bytes_rec& b) {
  json_line j(out);
  j.word(field::type, record::bytes);
  j(field::t_us, b.t);
  j.word(field::leg, to_string(b.l));
  j.word(field::dir, to_string(b.d));
  j.raw_bytes(b.bytes);
}

void append_json_line(std::string& out, const bytes_ref_rec& b) {
  json_line j(out);
  j.word(field::type, record::bytes_ref);
  j(field::t_us, b.t);
  j.word(field::leg, to_string(b.l));
  j.word(field::dir, to_string(b.d));
  j(field::client_in_at, b.at);
  j(field::length, b.length);
}

void append_json_line(std::string& out, const header_rec& h) {
  json_line j(out);
  j.word(field::type, record::header);
  j.word(field::format, format_name);
  j(field::version, format_version);
  j(field::session, h.info.id);
  j(field::seed, h.info.seed);
  j(field::master_seed, h.info.master_seed);
  j(field::session_number, h.info.number);
  j(field::client, h.info.client);
  j(field::listen, h.info.listen);
  j(field::upstream, h.info.upstream);
  j(field::started_at, rfc3339(h.info.started_at));
  j(field::started_mono_us, h.info.started_mono_us);
  j(field::relay, name_and_version);
  j(field::bare_eol, h.info.bare_eol);
  if (!h.info.normalize_to.empty()) j(field::normalize_to, h.info.normalize_to);   // added within version 5
}

void append_json_line(std::string& out, const text_rec& t) {
  json_line j(out);
  j.word(field::type, t.type);
  j(field::t_us, t.t);
  if (t.type == record::command) {
    j.word(field::leg, to_string(t.relay_command ? protocol::leg::upstream : protocol::leg::client));
    j.word(field::dir, to_string(t.relay_command ? protocol::direction::out : protocol::direction::in));
  }
  j(field::text, t.text);
}

void append_json_line(std::string& out, const reply_rec& r) {
  json_line j(out);
  j.word(field::type, record::reply);
  j(field::t_us, r.t);
  j.word(field::leg, to_string(r.l));
  j.word(field::dir, to_string(r.d));
  j(field::code, r.r.code);
  j(field::enhanced, r.r.enhanced);
  j.strings(field::lines, r.r.lines);
}

void append_json_line(std::string& out, const tls_rec& t) {
  json_line j(out);
  j.word(field::type, record::tls);
  j(field::t_us, t.t);
  j.word(field::leg, to_string(t.l));
  j(field::version, t.tls.version);
  j(field::cipher, t.tls.cipher);
  j(field::sni, t.tls.sni);
  j(field::peer_subject, t.tls.peer_subject);
  j(field::peer_sha256, t.tls.peer_sha256);
  j(field::verified, t.tls.verified);
  j(field::insecure, t.tls.insecure);
  j(field::handshake_us, t.tls.handshake_us);
  if (t.l == protocol::leg::upstream) j(field::verification, t.tls.verification);
}

void append_json_line(std::string& out, const protocol::stage_record& s) {
  json_line j(out);
  j.word(field::type, record::stage);
  j.word(field::name, to_string(s.ph));
  j(field::start_us, s.start_us);
  j(field::duration_us, s.duration_us);
  j(field::upstream_us, s.upstream_us);
  const std::uint64_t accounted = std::min(s.duration_us, s.upstream_us + s.client_us);
  j(field::relay_us, s.duration_us - accounted);
  j(field::client_us, s.client_us);
  j(field::think_us, s.think_us);
}

void append_json_line(std::string& out, const protocol::transaction_record& t) {
  json_line j(out);
  j.word(field::type, record::transaction);
  j(field::mail_from, t.mail_from);
  j.strings(field::rcpt_to, t.rcpt_to);
  j.numbers(field::rcpt_codes, t.rcpt_codes);
  j.optional_string(field::message_id, t.message_id);
  j(field::size, t.size);
  if (t.final_reply) {
    j.open_object(field::final_reply);
    j(field::code, t.final_reply->code);
    j(field::enhanced, t.final_reply->enhanced);
    j(field::text, t.final_reply->full_text());
    j.close_object();
  } else {
    j.null(field::final_reply);
  }
  j.word(field::outcome, to_string(t.result));
  j(field::synthesized, t.synthesized);
  j(field::without_mail, t.without_mail);
  j(field::start_us, t.start_us);
  j(field::end_us, t.end_us);
}

void append_json_line(std::string& out, const fault_rec& f) {
  json_line j(out);
  j.word(field::type, record::fault);
  j(field::t_us, f.t);
  j(field::rule, f.f.rule);
  j(field::fault_type, f.f.type);
  j(field::decision, f.f.decision);
  j.word(field::phase, to_string(f.f.ph));
  j(field::planned_delay_us, f.f.planned_delay_us);
  j(field::actual_delay_us, f.f.actual_delay_us);
  j(field::detail, f.f.detail);
}

void append_json_line(std::string& out, const end_rec& e) {
  json_line j(out);
  j.word(field::type, record::end);
  j(field::t_us, e.t);
  j(field::reason, e.reason);
  j(field::detail, e.detail);
  j(field::ended_at, rfc3339(e.ended_at));
  j(field::complete, e.dropped == 0);
  j(field::dropped_records, e.dropped);
}

}  // namespace

// ---------------------------------------------------------------- store

std::unique_ptr<store> store::open(const std::filesystem::path& dir, std::string& error, store_options options) {
  std::error_code ec;
  // The directories this makes: each level that is not there at all (symlink_status: a
  // dangling symlink is there, and is never ours to remove).
  // A path through "." or ".." is not followed level by level: nothing is listed for it.
  std::vector<std::filesystem::path> absent;
  std::filesystem::path whole;
  bool plain = true;
  for (const auto& part : std::filesystem::absolute(dir, ec)) {
    if (part == "." || part == "..") plain = false;
    if (!part.empty()) whole /= part;
  }
  for (auto p = whole; plain && !ec && p.has_relative_path(); p = p.parent_path()) {
    if (std::filesystem::symlink_status(p, ec).type() != std::filesystem::file_type::not_found) break;
    ec.clear();
    absent.push_back(p);
  }
  ec.clear();
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
  auto opened = std::unique_ptr<store>(new store(dir, options));
  opened->made_.directories = std::move(absent);
  return opened;
}

store::store(std::filesystem::path dir, store_options options) : dir_(std::move(dir)), options_(options) {
  // Before the first capture, on the caller's thread: the prune "as the store opens", and the
  // index, so that a new index knows whether older captures exist. The writer thread takes
  // both over as it starts.
  prune_if_due();
  if (options_.index && index_ready()) made_.index = index_->created();
  thread_ = std::thread([this] { run(); });
}

store::~store() { stop(); }

void store::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
  // Stopped in order, every capture closed and indexed: the next relay need not rebuild. Not
  // when the last batch failed (another process held the index): those captures are missing.
  std::string error;
  if (index_ && index_pending_.empty()) index_->note_relay_stopped(error);
}

std::unique_ptr<session_capture> store::begin(const session_info& info) {
  auto file = std::make_shared<capture_file>();
  file->path = dir_ / (info.id + ".jsonl");
  file->id = info.id;
  ++counters_.opened;
  // The file is complete before the writer thread can see it in open_ (store::park_idle reads
  // its descriptor), and counts as just recorded so that it is not parked before its header.
  file->recorded = true;
  {
    std::lock_guard lock(mutex_);
    creating_.insert(info.id);
  }
  struct created {   // the id leaves creating_ however begin() leaves this block (a throwing listener)
    store& s;
    const std::string& id;
    ~created() {
      std::lock_guard lock(s.mutex_);
      s.creating_.erase(id);
    }
  };
  {
    const created done{*this, info.id};
    file->fd = ::open(file->path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (file->fd < 0) {
      if (errno == ENOSPC) out_of_space_ = true;
      file->failed->store(true);
      ++counters_.write_failures;
      report_failure(*file, std::string("cannot create ") + file->path.filename().string() + ": " + std::strerror(errno));
    }
    {
      std::lock_guard lock(mutex_);
      open_.emplace(info.id, file);
    }
  }   // `done`: out of creating_ now that it is in open_
  std::unique_ptr<session_capture> cap(new session_capture(*this, file, info));
  if (options_.index) {
    cap->summary_ = std::make_unique<summary_builder>();
    cap->summary_->header(info.id, file->path.filename().string(), unix_us(info.started_at), info.client,
                          info.upstream);
  }
  cap->record(256, [&info](std::string& out) { append_json_line(out, header_rec{info}); });
  return cap;
}

void store::report_failure(const capture_file& f, const std::string& reason) {
  if (failure_listener_) failure_listener_(f.id, reason);
}

void store::write_out(capture_file& f) {
  if (f.pending.empty()) return;
  buffered_bytes_.fetch_sub(f.pending.size(), std::memory_order_relaxed);
  if (f.parked) unpark(f);
  if (f.fd < 0 || f.failed->load()) {
    f.pending.clear();
    return;
  }
  std::string_view rest = f.pending;
  while (!rest.empty()) {
    ssize_t n = ::write(f.fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n < 0 && errno == ENOSPC) {
        out_of_space_ = true;   // the writer prunes at once, woken if it sleeps
        {
          std::lock_guard lock(mutex_);   // f.mutex, then mutex_: the order record() takes them in
          wake_requested_ = true;
        }
        wake_.notify_one();
      }
      f.failed->store(true);
      ++counters_.write_failures;
      report_failure(f, n < 0 ? std::strerror(errno) : "nothing written");
      break;
    }
    rest.remove_prefix(static_cast<std::size_t>(n));
    f.written += static_cast<std::uint64_t>(n);
    counters_.bytes_written.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
  }
  if (!f.failed->load()) f.cache.written(f.fd, f.written);
  f.pending.clear();   // keeps its capacity for the next lines
}

void store::park(capture_file& f) {
  // With fsync a barrier syncs the descriptor its records were written with.
  if (options_.fsync || f.fd < 0 || f.failed->load() || !f.pending.empty()) return;
  ::close(f.fd);
  f.fd = -1;
  f.parked = true;
}

void store::unpark(capture_file& f) {
  f.parked = false;
  if (f.failed->load()) return;
  f.fd = ::open(f.path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (f.fd >= 0) return;
  f.failed->store(true);
  ++counters_.write_failures;
  report_failure(f, std::string("cannot open ") + f.path.filename().string() + " again to append: " + std::strerror(errno));
}

void store::park_idle() {
  std::vector<std::shared_ptr<capture_file>> open;
  {
    std::lock_guard lock(mutex_);
    if (open_.size() <= options_.park_idle_above) return;
    open.reserve(open_.size());
    for (const auto& [id, f] : open_) open.push_back(f);
  }
  for (const auto& f : open) {
    std::lock_guard file_lock(f->mutex);   // after mutex_, never under it: record() takes them the other way
    if (!std::exchange(f->recorded, false)) park(*f);
  }
}

void store::mark_buffered(const std::shared_ptr<capture_file>& f) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    buffered_files_.push_back(f);
    wake = std::exchange(writer_asleep_, false);
  }
  if (wake) wake_.notify_one();
}

void store::buffered(std::size_t bytes) {
  const auto now = buffered_bytes_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  if (now < wake_at_buffered_bytes || backlog_wake_sent_.exchange(true)) return;
  {
    std::lock_guard lock(mutex_);
    wake_requested_ = true;
  }
  wake_.notify_one();
}

void store::enqueue(writer_job&& job) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
    wake_requested_ = true;
  }
  wake_.notify_one();
}

// The session's end: the rest of its lines written, the capture counted and no longer among
// the open files. Its descriptor stays open until release(): a barrier of the session's last
// batch (its last message's end, in the same batch as the end record) may still be queued for
// the writer, whose sync (store_options::fsync) must find it.
void store::close(capture_file& f, bool complete) {
  {
    std::lock_guard file_lock(f.mutex);
    write_out(f);
    if (complete && (f.fd >= 0 || f.parked) && !f.failed->load()) ++counters_.complete;
    else ++counters_.incomplete;
  }
  std::lock_guard lock(mutex_);
  if (auto it = open_.find(f.id); it != open_.end()) open_.erase(it);
}

// The descriptor, once the session is gone. Under f.mutex, so that a sync of the writer's never
// meets a closed descriptor.
void store::release(capture_file& f) {
  std::lock_guard file_lock(f.mutex);
  if (f.fd >= 0) ::close(f.fd);
  f.fd = -1;
  f.parked = false;
}

void store::when_caught_up(std::function<void()> resume) {
  {
    std::lock_guard lock(mutex_);   // the writer resumes waiters under it: no wake-up is lost
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

}  // namespace

void store::run() {
  std::vector<writer_job> jobs;
  std::vector<std::shared_ptr<capture_file>> files;
  // Captures whose buffer became non-empty before the last tick: written out at this one. One
  // that became non-empty since waits a tick more, so that a short session (a message per
  // connection) writes its first lines itself, with its barrier's or its close's, instead of
  // contending with this thread for its mutex and paying a write(2) more.
  std::vector<std::shared_ptr<capture_file>> aging;
  std::vector<session_summary> closed;
  std::vector<std::function<void()>> caught_up;
  for (bool last = false; !last;) {
    {
      std::unique_lock lock(mutex_);
      // Nothing buffered, closed, waiting for the index or to park: the writer sleeps until a
      // capture buffers or closes (or retention is due), instead of waking every tick.
      const bool idle = aging.empty() && buffered_files_.empty() && closed_.empty() && jobs_.empty() &&
                        index_pending_.empty() && open_.size() <= options_.park_idle_above;
      if (idle) {
        writer_asleep_ = true;
        const auto woken = [&] { return stopping_ || wake_requested_ || !writer_asleep_; };
        if (options_.retain.any()) wake_.wait_until(lock, next_prune_, woken);
        else wake_.wait(lock, woken);
        writer_asleep_ = false;
      } else {
        wake_.wait_for(lock, writer_tick, [&] { return stopping_ || wake_requested_; });
      }
      wake_requested_ = false;
      last = stopping_;   // sessions are gone: this round writes out what they left
      jobs.swap(jobs_);
      files.swap(buffered_files_);
      closed.swap(closed_);
    }
    prune_if_due();
    // A backlog, or the last round, writes out everything at once.
    const bool everything = backlog_wake_sent_.exchange(false) || last;
    for (auto* list : {&aging, &files}) {
      if (list == &files && !everything) break;
      for (auto& f : *list) {
        std::lock_guard file_lock(f->mutex);
        f->listed = false;
        write_out(*f);
        // What an idle session left: its buffer is given back, so that an idle session holds
        // none (a busy one writes at its barriers and keeps it between them).
        std::string().swap(f->pending);
      }
      list->clear();
    }
    aging.swap(files);
    park_idle();
    for (auto& job : jobs) {
      {
        std::lock_guard file_lock(job.file->mutex);
        write_out(*job.file);
        sync(*job.file);
      }
      job.done();
    }
    jobs.clear();
    {
      std::lock_guard lock(mutex_);
      if (!backlogged()) caught_up.swap(caught_up_waiters_);
    }
    for (auto& resume : caught_up) resume();
    caught_up.clear();
    for (auto& s : closed) index_closed(std::move(s));
    closed.clear();
    flush_index(last);
  }
}

bool store::is_open(std::string_view session_id) const {
  std::lock_guard lock(mutex_);
  return open_.find(session_id) != open_.end() || creating_.find(session_id) != creating_.end();
}

// Runs the retention limits when they are due (or at once after ENOSPC), never touching a
// capture this store has open.
void store::prune_if_due() {
  if (!options_.retain.any()) return;
  const auto steady = std::chrono::steady_clock::now();
  if (!out_of_space_.load() && steady < next_prune_) return;
  next_prune_ = steady + options_.prune_every;
  out_of_space_ = false;
  prune_result r;
  try {
    r = prune(dir_, options_.retain, std::chrono::system_clock::now(),
              [this](std::string_view id) { return is_open(id); },
              &capture_kinds_);
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

// A closed capture joins the index at the end of the writer's round. One whose file could
// not be written is left out (its session says so): its file is not what its records said
// (reindex reads what is there).
void store::index_closed(session_summary&& s) {
  if (index_pending_.empty()) index_pending_since_ = std::chrono::steady_clock::now();
  index_pending_.push_back(std::move(s));
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
  if (index_ && same_file) {
    mark_relay();
    return true;
  }
  index_.reset();
  relay_marked_ = false;
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
  mark_relay();
  return true;
}

// This relay's marker in the index; a relay before it that was killed (its marker left, its
// process gone) had captures open (the sessions most worth finding) that never got their rows:
// the next list or search rebuilds from the files. Tried again at each use of the index until
// it is written (another process may hold the index's lock), and again in a file a reindex put
// in place of the one it was written in.
void store::mark_relay() {
  std::string error;
  if (!relay_marked_) relay_marked_ = index_->note_relay_started(error);
}

// The batch's closed captures, in one transaction, once the oldest has waited
// index_batch_wait, index_batch_max are waiting, or `now`. A lock held elsewhere (a reindex)
// or a failed write keeps them for the next batch.
void store::flush_index(bool now) {
  if (index_pending_.empty()) return;
  if (!now && index_pending_.size() < index_batch_max &&
      std::chrono::steady_clock::now() - index_pending_since_ < index_batch_wait)
    return;
  if (!index_ready()) return;
  std::string error;
  if (!index_->put(index_pending_, error)) {
    index_failed(error);
    return;
  }
  const auto indexed = index_pending_.size();
  // `mailtap captures prune` removes a finished capture's file, then its row: one it removed
  // after the file was finished and before this batch had the row put back. Its row goes again.
  std::vector<std::string> gone;
  for (const auto& summary : index_pending_) {
    struct stat st {};
    if (::stat((dir_ / (summary.session + ".jsonl")).c_str(), &st) != 0 && errno == ENOENT)
      gone.push_back(summary.session);
  }
  index_pending_.clear();
  if (!gone.empty() && !index_->remove(gone, error)) index_failed(error);   // reindex repairs it
  counters_.indexed += indexed;   // after: whoever waits for the count finds the index settled
}

// The file's data, and the first time also the directory entry that names it, so that the
// file itself survives a power failure (fsync(2): syncing a file does not sync its entry).
void store::sync(capture_file& f) {
  if (!options_.fsync || f.fd < 0 || f.failed->load()) return;
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
  report_failure(f, reason);
}

// ---------------------------------------------------------------- session_capture

session_capture::session_capture(store& owner, std::shared_ptr<capture_file> file, const session_info& info)
    : store_(owner), file_(std::move(file)), file_failed_(file_->failed), id_(info.id), started_at_(info.started_at) {}

// Counted complete or incomplete as the file closes: a capture whose write failed is
// incomplete however its session ended.
session_capture::~session_capture() {
  close_file();
  store_.release(*file_);
}

void session_capture::close_file() {
  if (std::exchange(closed_, true)) return;
  store_.close(*file_, ended_ && dropped_ == 0);
  if (!summary_) return;
  // A capture whose file could not be written stays out of the index.
  if (file_failed_->load()) return;
  bool wake = false;
  {
    std::lock_guard lock(store_.mutex_);
    store_.closed_.push_back(std::move(*summary_).finish());
    wake = std::exchange(store_.writer_asleep_, false);
  }
  if (wake) store_.wake_.notify_one();
}

template <typename Append>
void session_capture::record(std::size_t size_hint, Append&& append) {
  if (closed_) return;
  capture_file& f = *file_;
  std::lock_guard lock(f.mutex);
  const std::size_t before = f.pending.size();
  if (before == 0 && f.pending.capacity() < size_hint) f.pending.reserve(std::max(size_hint, std::size_t{4096}));
  append(f.pending);
  f.recorded = true;
  store_.buffered(f.pending.size() - before);
  if (f.pending.size() >= write_out_now_at) {
    store_.write_out(f);
  } else if (!f.listed) {
    f.listed = true;
    store_.mark_buffered(file_);
  }
}

void session_capture::on_bytes(std::uint64_t t, protocol::leg l, protocol::direction d, std::string_view bytes) {
  // The relay's copy of the client's bytes (a message's body, mostly) is recorded once: the
  // upstream leg's record refers to the client's (FORMAT.md `bytes_ref`).
  if (l == protocol::leg::upstream && d == protocol::direction::out && bytes.size() >= bytes_ref_min) {
    if (auto at = client_in_.find(bytes)) {
      record(128, [&](std::string& out) { append_json_line(out, bytes_ref_rec{t, l, d, *at, bytes.size()}); });
      return;
    }
  }
  if (store_.buffered_bytes_.load(std::memory_order_relaxed) + bytes.size() > buffered_bytes_cap) {
    ++dropped_;
    ++store_.counters_.dropped_records;
    return;
  }
  record(bytes.size() * 4 / 3 + 96, [&](std::string& out) { append_json_line(out, bytes_rec{t, l, d, bytes}); });
  if (l == protocol::leg::client && d == protocol::direction::in) client_in_.recorded(bytes);
}

void session_capture::on_command(std::uint64_t t, std::string_view text) {
  record(text.size() + 96, [&](std::string& out) { append_json_line(out, text_rec{t, record::command, text}); });
}

void session_capture::on_relay_command(std::uint64_t t, std::string_view text) {
  record(text.size() + 96,
         [&](std::string& out) { append_json_line(out, text_rec{t, record::command, text, true}); });
}

void session_capture::on_reply(std::uint64_t t, protocol::leg l, protocol::direction d, const protocol::reply& r) {
  if (summary_) summary_->reply(r.code, r.enhanced);
  record(r.raw.size() + 128, [&](std::string& out) { append_json_line(out, reply_rec{t, l, d, r}); });
}

void session_capture::on_note(std::uint64_t t, std::string_view text) {
  record(text.size() + 64, [&](std::string& out) { append_json_line(out, text_rec{t, record::note, text}); });
}

void session_capture::on_tls(std::uint64_t t, protocol::leg l, const protocol::tls_summary& tls) {
  record(512, [&](std::string& out) { append_json_line(out, tls_rec{t, l, tls}); });
}

void session_capture::on_stage(const protocol::stage_record& s) {
  record(192, [&](std::string& out) { append_json_line(out, s); });
}

void session_capture::on_transaction(const protocol::transaction_record& t) {
  client_in_.let_go();   // its message's copies are recorded
  if (summary_) {
    indexed_transaction it{t.mail_from, t.rcpt_to, t.rcpt_codes, t.message_id.value_or(""),
                           std::string(to_string(t.result)), 0, "", t.without_mail};
    if (t.final_reply) {
      it.final_code = t.final_reply->code;
      it.final_enhanced = t.final_reply->enhanced;
    }
    summary_->transaction(std::move(it));
  }
  record(512, [&](std::string& out) { append_json_line(out, t); });
}

void session_capture::on_fault(std::uint64_t t, const protocol::fault_event& f) {
  if (summary_) summary_->fault(f.rule);
  record(256 + f.detail.size(), [&](std::string& out) { append_json_line(out, fault_rec{t, f}); });
}

void session_capture::on_end(std::uint64_t t, std::string_view reason, std::string_view detail) {
  if (ended_) return;
  ended_ = true;
  // t is the session's clock (µs since it started); started_at is the wall clock at that start.
  const auto ended_at = started_at_ + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                          std::chrono::microseconds(t));
  if (summary_) summary_->end(reason, unix_us(ended_at), dropped_ == 0);
  record(256, [&](std::string& out) { append_json_line(out, end_rec{t, reason, detail, dropped_, ended_at}); });
  close_file();
}

void session_capture::write_out_if_due() {
  capture_file& f = *file_;
  std::lock_guard lock(f.mutex);
  if (f.pending.size() >= write_out_at) store_.write_out(f);
}

bool session_capture::written_now() {
  if (store_.options_.fsync) return false;
  std::lock_guard lock(file_->mutex);
  store_.write_out(*file_);
  return true;
}

void session_capture::when_written(std::function<void()> done) {
  if (written_now()) {
    done();
    return;
  }
  store_.enqueue(writer_job{file_, std::move(done)});
}

}  // namespace mailtap::captures
