// Capture writer: sessions queue typed records; one thread turns them into JSON lines,
// writes each batch with write(2) and so leaves complete lines behind at any crash.
#include "captures/writer.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <variant>
#include <vector>

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

std::string rfc3339(std::chrono::system_clock::time_point tp) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(tp.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(us / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%06lldZ", static_cast<long long>(us % 1'000'000));
  return buf;
}

boost::json::value reply_json(const protocol::reply& r) {
  return {{"code", r.code}, {"enhanced", r.enhanced}, {"text", r.text()}};
}

struct header_rec { session_info info; };
struct bytes_rec { std::uint64_t t; protocol::leg l; protocol::direction d; std::string bytes; };
// A command or a note. A command is the client's (leg client, dir in) or, since format
// version 3, the relay's own sent upstream (leg upstream, dir out).
struct text_rec { std::uint64_t t; const char* type; std::string text; bool relay_command = false; };
struct reply_rec { std::uint64_t t; protocol::leg l; protocol::direction d; protocol::reply r; };
struct tls_rec { std::uint64_t t; protocol::leg l; protocol::tls_summary tls; };
struct end_rec { std::uint64_t t; std::string reason; std::string detail; std::uint64_t dropped; };
struct fault_rec { std::uint64_t t; protocol::fault_event f; };
struct barrier_rec { std::function<void()> done; };
struct close_rec { bool ended; };
}  // namespace

struct capture_file {
  std::filesystem::path path;
  int fd = -1;
  std::string pending;
  std::shared_ptr<std::atomic<bool>> failed = std::make_shared<std::atomic<bool>>(false);
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
void append_bytes_line(std::string& out, const bytes_rec& b) {
  out += R"({"type":"bytes","t_us":)";
  out += std::to_string(b.t);
  out += R"(,"leg":")";
  out += to_string(b.l);
  out += R"(","dir":")";
  out += to_string(b.d);
  out += R"(","b64":")";
  out += protocol::base64_encode(b.bytes);
  out += "\"}\n";
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
      o["type"] = "header";
      o["format"] = format_name;
      o["version"] = format_version;
      o["session"] = h.info.id;
      o["seed"] = h.info.seed;
      o["client"] = h.info.client;
      o["listen"] = h.info.listen;
      o["upstream"] = h.info.upstream;
      o["started_at"] = rfc3339(h.info.started_at);
      o["started_mono_us"] = h.info.started_mono_us;
      o["relay"] = "mailtap " MAILTAP_VERSION;
      o["bare_eol"] = h.info.bare_eol;
    }
    void operator()(const bytes_rec& b) {
      o["type"] = "bytes";
      o["t_us"] = b.t;
      o["leg"] = to_string(b.l);
      o["dir"] = to_string(b.d);
      o["b64"] = protocol::base64_encode(b.bytes);
    }
    void operator()(const text_rec& t) {
      o["type"] = t.type;
      o["t_us"] = t.t;
      if (std::string_view(t.type) == "command") {
        o["leg"] = t.relay_command ? "upstream" : "client";
        o["dir"] = t.relay_command ? "out" : "in";
      }
      o["text"] = t.text;
    }
    void operator()(const reply_rec& r) {
      o["type"] = "reply";
      o["t_us"] = r.t;
      o["leg"] = to_string(r.l);
      o["dir"] = to_string(r.d);
      o["code"] = r.r.code;
      o["enhanced"] = r.r.enhanced;
      boost::json::array lines;
      for (const auto& l : r.r.lines) lines.emplace_back(l);
      o["lines"] = std::move(lines);
    }
    void operator()(const tls_rec& t) {
      o["type"] = "tls";
      o["t_us"] = t.t;
      o["leg"] = to_string(t.l);
      o["version"] = t.tls.version;
      o["cipher"] = t.tls.cipher;
      o["sni"] = t.tls.sni;
      o["peer_subject"] = t.tls.peer_subject;
      o["peer_sha256"] = t.tls.peer_sha256;
      o["verified"] = t.tls.verified;
      o["insecure"] = t.tls.insecure;
      o["handshake_us"] = t.tls.handshake_us;
      if (t.l == protocol::leg::upstream) o["verification"] = t.tls.verification;
    }
    void operator()(const protocol::stage_record& s) {
      o["type"] = "stage";
      o["name"] = to_string(s.ph);
      o["start_us"] = s.start_us;
      o["duration_us"] = s.duration_us;
      o["upstream_us"] = s.upstream_us;
      std::uint64_t accounted = std::min(s.duration_us, s.upstream_us + s.client_us);
      o["relay_us"] = s.duration_us - accounted;
      o["client_us"] = s.client_us;
      o["think_us"] = s.think_us;
    }
    void operator()(const protocol::transaction_record& t) {
      o["type"] = "transaction";
      o["mail_from"] = t.mail_from;
      boost::json::array to, codes;
      for (const auto& r : t.rcpt_to) to.emplace_back(r);
      for (int c : t.rcpt_codes) codes.emplace_back(c);
      o["rcpt_to"] = std::move(to);
      o["rcpt_codes"] = std::move(codes);
      o["message_id"] = t.message_id ? boost::json::value(*t.message_id) : boost::json::value(nullptr);
      o["size"] = t.size;
      o["final_reply"] = t.final_reply ? reply_json(*t.final_reply) : boost::json::value(nullptr);
      o["outcome"] = to_string(t.result);
      o["synthesized"] = t.synthesized;
      o["start_us"] = t.start_us;
      o["end_us"] = t.end_us;
    }
    void operator()(const fault_rec& f) {
      o["type"] = "fault";
      o["t_us"] = f.t;
      o["rule"] = f.f.rule;
      o["fault_type"] = f.f.type;   // "type" names the record
      o["decision"] = f.f.decision;
      o["phase"] = to_string(f.f.ph);
      o["planned_delay_us"] = f.f.planned_delay_us;
      o["actual_delay_us"] = f.f.actual_delay_us;
      o["detail"] = f.f.detail;
    }
    void operator()(const end_rec& e) {
      o["type"] = "end";
      o["t_us"] = e.t;
      o["reason"] = e.reason;
      o["detail"] = e.detail;
      o["ended_at"] = rfc3339(std::chrono::system_clock::now());
      o["complete"] = e.dropped == 0;
      o["dropped_records"] = e.dropped;
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

std::unique_ptr<store> store::open(const std::filesystem::path& dir, std::string& error) {
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
  return std::unique_ptr<store>(new store(dir));
}

store::store(std::filesystem::path dir) : dir_(std::move(dir)), thread_([this] { run(); }) {}

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
  std::unique_ptr<session_capture> cap(new session_capture(*this, file, info.id));
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

void store::run() {
  std::deque<queued_record> batch;
  std::vector<capture_file*> touched;
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
        f.failed->store(true);
        ++counters_.write_failures;
        report_failure(f, n < 0 ? std::strerror(errno) : "nothing written");
        break;
      }
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    f.pending.clear();   // keeps its capacity for the next lines
  };
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, writer_tick, [&] { return stopping_ || wake_requested_; });
      wake_requested_ = false;
      if (queue_.empty() && stopping_) break;
      if (queue_.empty()) continue;
      batch.swap(queue_);
      queued_bytes_.store(0, std::memory_order_relaxed);
    }
    for (auto& q : batch) {
      capture_file& f = *q.file;
      if (std::holds_alternative<std::unique_ptr<header_rec>>(q.body)) {
        f.fd = ::open(f.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (f.fd < 0) {
          f.failed->store(true);
          ++counters_.write_failures;
          report_failure(f, std::string("cannot create ") + f.path.filename().string() + ": " + std::strerror(errno));
        }
      }
      if (auto* b = std::get_if<barrier_rec>(&q.body)) {
        for (auto* t : touched) write_out(*t);
        touched.clear();
        b->done();
        continue;
      }
      if (std::holds_alternative<close_rec>(q.body)) {
        write_out(f);
        if (f.fd >= 0) ::close(f.fd);
        f.fd = -1;
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
  }
}

// ---------------------------------------------------------------- session_capture

session_capture::session_capture(store& owner, std::shared_ptr<capture_file> file, std::string id)
    : store_(owner), file_(std::move(file)), file_failed_(file_->failed), id_(std::move(id)) {}

session_capture::~session_capture() {
  bool complete = ended_ && dropped_ == 0;
  if (complete) ++store_.counters_.complete;
  else ++store_.counters_.incomplete;
  push({file_, close_rec{ended_}});
}

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
  push({file_, text_rec{t, "command", std::string(text)}});
}

void session_capture::on_relay_command(std::uint64_t t, std::string_view text) {
  push({file_, text_rec{t, "command", std::string(text), true}});
}

void session_capture::on_reply(std::uint64_t t, protocol::leg l, protocol::direction d, const protocol::reply& r) {
  push({file_, reply_rec{t, l, d, r}});
}

void session_capture::on_note(std::uint64_t t, std::string_view text) {
  push({file_, text_rec{t, "note", std::string(text)}});
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
  push({file_, std::make_unique<end_rec>(end_rec{t, std::string(reason), std::string(detail), dropped_})});
}

void session_capture::when_durable(std::function<void()> done) {
  push({file_, barrier_rec{std::move(done)}});
}

}  // namespace mailtap::captures
