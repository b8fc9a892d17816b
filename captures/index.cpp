// The capture index in SQLite (index.hpp): its schema, put/remove in one transaction each,
// and search as one SELECT built from the filter, every value bound, never spliced in.
#include "captures/index.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <variant>
#include <vector>

#include "captures/relay_marker.hpp"

namespace mailtap::captures {

namespace {

namespace fs = std::filesystem;

// The tables (FORMAT.md "The index"). A session's rows in the other tables hang off its id;
// each of those tables has the session id first in its primary key, so removing or reading a
// session's rows is one index range. Addresses compare case-insensitively (RFC 5321 2.4: the
// domain is; the local part is in practice), domains are stored in lower case.
constexpr const char* schema_sql = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions(
  id INTEGER PRIMARY KEY, session TEXT NOT NULL UNIQUE, file TEXT NOT NULL,
  started_at INTEGER NOT NULL, ended_at INTEGER NOT NULL, client TEXT NOT NULL, client_ip TEXT NOT NULL,
  upstream TEXT NOT NULL, outcome TEXT NOT NULL, end_reason TEXT NOT NULL, complete INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_by_time ON sessions(started_at, session);
CREATE INDEX IF NOT EXISTS sessions_by_client ON sessions(client_ip, started_at);
CREATE INDEX IF NOT EXISTS sessions_by_outcome ON sessions(outcome, started_at);
CREATE TABLE IF NOT EXISTS transactions(
  session_id INTEGER NOT NULL, seq INTEGER NOT NULL, mail_from TEXT NOT NULL, mail_from_domain TEXT NOT NULL,
  message_id TEXT NOT NULL, outcome TEXT NOT NULL, final_code INTEGER NOT NULL, final_enhanced TEXT NOT NULL,
  without_mail INTEGER NOT NULL, PRIMARY KEY(session_id, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS transactions_by_sender ON transactions(mail_from COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS transactions_by_sender_domain ON transactions(mail_from_domain);
CREATE INDEX IF NOT EXISTS transactions_by_message_id ON transactions(message_id);
CREATE TABLE IF NOT EXISTS recipients(
  session_id INTEGER NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL, address TEXT NOT NULL,
  domain TEXT NOT NULL, code INTEGER NOT NULL, PRIMARY KEY(session_id, seq, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_by_address ON recipients(address COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS recipients_by_domain ON recipients(domain);
CREATE TABLE IF NOT EXISTS replies(
  session_id INTEGER NOT NULL, code INTEGER NOT NULL, enhanced TEXT NOT NULL,
  PRIMARY KEY(session_id, code, enhanced)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replies_by_code ON replies(code);
CREATE INDEX IF NOT EXISTS replies_by_enhanced ON replies(enhanced);
CREATE TABLE IF NOT EXISTS faults(session_id INTEGER NOT NULL, rule TEXT NOT NULL, PRIMARY KEY(session_id, rule)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS faults_by_rule ON faults(rule);
CREATE TABLE IF NOT EXISTS left_out(
  file TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, unreadable INTEGER NOT NULL,
  problem TEXT NOT NULL) WITHOUT ROWID;
)sql";
// Added within schema version 1: an index made before has no such table until a rebuild
// writes it (an older mailtap ignores it).
constexpr const char* left_out_sql = R"sql(
CREATE TABLE IF NOT EXISTS left_out(
  file TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, unreadable INTEGER NOT NULL,
  problem TEXT NOT NULL) WITHOUT ROWID;
)sql";

constexpr const char* child_tables[] = {"transactions", "recipients", "replies", "faults"};
// Every table an index of any version has had: an earlier version's are dropped when it is made anew.
constexpr std::string_view index_tables[] = {"meta", "sessions", "transactions", "recipients", "replies", "faults", "left_out"};
// How long the command line waits for a write lock another process holds (a relay's batch,
// another reindex's batch): far longer than one batch takes.
constexpr int cli_busy_timeout_ms = 30'000;
// Negative: KiB. 64 MiB.
constexpr const char* cli_cache_pragma = "PRAGMA cache_size=-65536";
// A recipient whose reply code was not recorded (the code list is cut at its cap).
constexpr int no_code = -1;

constexpr std::string_view covers_key = "covers_directory";

// A prepared statement, finalized on scope exit.
class statement {
 public:
  statement(sqlite3* db, std::string_view sql) { sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &s_, nullptr); }
  ~statement() { sqlite3_finalize(s_); }
  statement(const statement&) = delete;
  statement& operator=(const statement&) = delete;
  bool ok() const { return s_ != nullptr; }
  statement& bind(int i, std::int64_t v) { sqlite3_bind_int64(s_, i, v); return *this; }
  statement& bind(int i, std::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error.
  int step() { return sqlite3_step(s_); }
  // Runs a statement that returns no rows, then resets it for the next bindings.
  bool run() {
    const int rc = sqlite3_step(s_);
    sqlite3_reset(s_);
    return rc == SQLITE_DONE || rc == SQLITE_ROW;
  }
  void reset() { sqlite3_reset(s_); }
  std::int64_t integer(int col) const { return sqlite3_column_int64(s_, col); }
  std::string text(int col) const {
    const auto* p = sqlite3_column_text(s_, col);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s_, col)))
             : std::string();
  }

 private:
  sqlite3_stmt* s_ = nullptr;
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string domain_of(std::string_view address) {
  const auto at = address.rfind('@');
  return at == std::string_view::npos ? std::string() : lower(address.substr(at + 1));
}

bool is_outcome(std::string_view o) {
  constexpr std::array<std::string_view, 7> known{"none", "delivered", "blackholed", "rejected", "tempfailed", "aborted", "unknown"};
  return std::find(known.begin(), known.end(), o) != known.end();
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

// "5.1.1": class, subject and detail (RFC 3463 2: 1 digit, 1-3 digits, 1-3 digits).
bool is_enhanced_code(std::string_view s) {
  const auto a = s.find('.');
  const auto b = a == std::string_view::npos ? a : s.find('.', a + 1);
  if (b == std::string_view::npos) return false;
  const auto cls = s.substr(0, a), subject = s.substr(a + 1, b - a - 1), detail = s.substr(b + 1);
  return cls.size() == 1 && all_digits(cls) && all_digits(subject) && subject.size() <= 3 && all_digits(detail) &&
         detail.size() <= 3;
}

bool is_reply_code(std::string_view s) { return s.size() == 3 && all_digits(s) && s[0] >= '1' && s[0] <= '5'; }
bool is_reply_class(std::string_view s) {
  return s.size() == 3 && s[0] >= '1' && s[0] <= '5' && lower(s.substr(1)) == "xx";
}

// A '*' pattern as a LIKE pattern: '*' is any characters, LIKE's own '%' and '_' are literal.
std::string like_pattern(std::string_view glob) {
  std::string out;
  for (char c : glob) {
    if (c == '*') out += '%';
    else if (c == '%' || c == '_' || c == '\\') out += '\\', out += c;
    else out += c;
  }
  return out;
}

using value = std::variant<std::int64_t, std::string>;

// A condition on the rows of another table (transactions, recipients, replies, faults):
// "the session has such a row".
struct row_condition {
  std::string table;
  std::string predicate;   // over that table's columns, with ? placeholders
  std::vector<value> values;
  bool indexed = true;     // the predicate can use an index (a pattern cannot)
};

// What a filter asks, split into conditions on the session row and on its other rows.
struct conditions {
  std::vector<std::string> on_session;
  std::vector<value> session_values;
  std::vector<row_condition> on_rows;
};

// An address condition on a column pair (the address, its domain) of `table`.
row_condition address_condition(std::string table, std::string_view column, std::string_view domain_column,
                                 std::string_view wanted) {
  if (wanted == "<>") wanted = "";   // the null sender (RFC 5321 4.5.5)
  if (wanted.find('*') != std::string_view::npos)
    return {std::move(table), std::string(column) + " LIKE ? ESCAPE '\\'", {like_pattern(wanted)}, false};
  if (wanted.size() > 1 && wanted.front() == '@')
    return {std::move(table), std::string(domain_column) + " = ?", {lower(wanted.substr(1))}};
  return {std::move(table), std::string(column) + " = ? COLLATE NOCASE", {std::string(wanted)}};
}

conditions conditions_of(const search_filter& f) {
  conditions c;
  auto on_session = [&c](std::string sql, value v) {
    c.on_session.push_back(std::move(sql));
    c.session_values.push_back(std::move(v));
  };
  if (f.since_us) on_session("started_at >= ?", *f.since_us);
  if (f.until_us) on_session("started_at < ?", *f.until_us);
  if (!f.outcome.empty()) on_session("outcome = ?", f.outcome);
  if (!f.client.empty()) {
    if (address_of_endpoint(f.client) == f.client) on_session("client_ip = ?", f.client);
    else on_session("client = ?", f.client);
  }
  if (!f.sender.empty()) {
    // A transaction a BDAT began without MAIL has mail_from "" for want of a sender: neither
    // "<>" (the null sender, a bounce's) nor a pattern matches it.
    auto sender = address_condition("transactions", "mail_from", "mail_from_domain", f.sender);
    sender.predicate = "(" + sender.predicate + ") AND without_mail = 0";
    c.on_rows.push_back(std::move(sender));
  }
  if (!f.recipient.empty()) c.on_rows.push_back(address_condition("recipients", "address", "domain", f.recipient));
  if (is_reply_code(f.code)) {
    c.on_rows.push_back({"replies", "code = ?", {std::int64_t{std::stoi(f.code)}}});
  } else if (is_reply_class(f.code)) {
    const std::int64_t base = (f.code[0] - '0') * 100;
    c.on_rows.push_back({"replies", "code BETWEEN ? AND ?", {base, base + 99}});
  } else if (!f.code.empty()) {
    c.on_rows.push_back({"replies", "enhanced = ?", {f.code}});
  }
  if (!f.message_id.empty()) c.on_rows.push_back({"transactions", "message_id = ?", {bare_message_id(f.message_id)}});
  // A rule's name, or the name of a rule made of parts ("cisco-pix-fixup" for its
  // "cisco-pix-fixup/banner", ...: policies/firewall.cpp): a range, so the index serves it.
  if (!f.rule.empty())
    c.on_rows.push_back({"faults", "(rule = ? OR (rule >= ? AND rule < ?))", {f.rule, f.rule + "/", f.rule + "0"}});
  return c;
}

// Row conditions matching at most this many rows drive the search: their sessions are
// looked up and sorted. Past it, sessions are walked newest first and each is checked, which
// stops after one page: a condition that matches often finds its page soon.
constexpr std::int64_t driving_cap = 2000;

// How many rows `c` matches, counted up to driving_cap (an index range, so cheap).
std::int64_t matches_up_to_cap(sqlite3* db, const row_condition& c) {
  statement q(db, "SELECT count(*) FROM (SELECT 1 FROM " + c.table + " WHERE " + c.predicate + " LIMIT " +
                      std::to_string(driving_cap) + ")");
  int i = 1;
  for (const auto& v : c.values) std::visit([&](const auto& x) { q.bind(i++, x); }, v);
  return q.ok() && q.step() == SQLITE_ROW ? q.integer(0) : driving_cap;
}

struct where_clause {
  std::string sql;
  std::vector<value> values;
  void add(const std::string& condition, const std::vector<value>& v) {
    sql += sql.empty() ? " WHERE " : " AND ";
    sql += condition;
    values.insert(values.end(), v.begin(), v.end());
  }
};

// The WHERE clause: the most selective indexed row condition, when it matches few rows, as
// `id IN (...)`; every other row condition as a per-session EXISTS.
where_clause where_of(sqlite3* db, const search_filter& f) {
  conditions c = conditions_of(f);
  where_clause w;
  for (std::size_t i = 0; i < c.on_session.size(); ++i) w.add(c.on_session[i], {c.session_values[i]});
  std::size_t driver = c.on_rows.size();
  std::int64_t fewest = driving_cap;
  for (std::size_t i = 0; i < c.on_rows.size(); ++i) {
    if (!c.on_rows[i].indexed) continue;
    const auto n = matches_up_to_cap(db, c.on_rows[i]);
    if (n < fewest) fewest = n, driver = i;
  }
  for (std::size_t i = 0; i < c.on_rows.size(); ++i) {
    const auto& r = c.on_rows[i];
    if (i == driver) w.add("id IN (SELECT session_id FROM " + r.table + " WHERE " + r.predicate + ")", r.values);
    else w.add("EXISTS (SELECT 1 FROM " + r.table + " WHERE session_id = sessions.id AND " + r.predicate + ")", r.values);
  }
  return w;
}

}  // namespace

std::optional<std::string> filter_problem(const search_filter& f) {
  if (!f.outcome.empty() && !is_outcome(f.outcome))
    return "outcome '" + f.outcome + "': expected none, delivered, blackholed, rejected, tempfailed, aborted or unknown";
  if (!f.code.empty() && !is_reply_code(f.code) && !is_reply_class(f.code) && !is_enhanced_code(f.code))
    return "code '" + f.code + "': expected a reply code (550), a class (5xx) or an enhanced code (5.1.1)";
  if (f.since_us && f.until_us && *f.since_us >= *f.until_us) return "the time range is empty (since is not before until)";
  return std::nullopt;
}

std::string capture_index::problem(std::string_view what) const {
  return path_.string() + ": " + std::string(what) + ": " + sqlite3_errmsg(db_);
}

bool capture_index::exec(const char* sql, std::string& error) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) == SQLITE_OK) return true;
  error = path_.string() + ": " + (message ? message : sqlite3_errmsg(db_));
  sqlite3_free(message);
  return false;
}

std::unique_ptr<capture_index> capture_index::open(const fs::path& dir, busy on_busy, std::string& error) {
  const fs::path path = dir / index_file_name;
  // Created 0600 by us, not by SQLite (which uses the umask): it names senders and recipients,
  // like the captures. SQLite gives its -wal and -shm files the database's mode.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = path.string() + ": cannot open: " + std::strerror(errno);
    return nullptr;
  }
  ::close(fd);
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    error = path.string() + ": cannot open: " + (db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return nullptr;
  }
  std::unique_ptr<capture_index> index(new capture_index(path, db, false));
  sqlite3_busy_timeout(db, on_busy == busy::wait ? cli_busy_timeout_ms : 0);
  // Per connection: in WAL mode, NORMAL syncs at checkpoints only, not at every commit. A power
  // failure may lose the last inserts, never the index; reindex restores them from the files.
  sqlite3_exec(db, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
  // The command line (a reindex of many captures, searches over many rows) keeps more of the
  // index's pages in memory than SQLite's default 2 MiB; the relay's few inserts need no more.
  if (on_busy == busy::wait) sqlite3_exec(db, cli_cache_pragma, nullptr, nullptr, nullptr);
  statement version(db, "PRAGMA user_version");
  if (!version.ok() || version.step() != SQLITE_ROW) {
    error = index->problem("not a capture index");
    return nullptr;
  }
  const auto found = version.integer(0);
  version.reset();
  if (found == index_schema_version) return index;
  statement tables(db, "SELECT count(*) FROM sqlite_master");
  if (!tables.ok() || tables.step() != SQLITE_ROW) {
    error = index->problem("not a capture index");
    return nullptr;
  }
  const auto table_count = tables.integer(0);
  tables.reset();   // ends its read transaction: journal_mode cannot change inside one
  // An index of an earlier version is made anew, empty: it is a cache of the capture files, and
  // the next list or search fills it from them (covers_directory unset). Anything else with
  // tables (a newer mailtap's index, another database) is left alone.
  const bool older = found > 0 && found < index_schema_version;
  const std::string wrong_version = path.string() + ": not a capture index of version " +
                                    std::to_string(index_schema_version) + " (found version " + std::to_string(found) + ")";
  if ((found != 0 || table_count != 0) && !older) {
    error = wrong_version;
    return nullptr;
  }
  // A new index. WAL (kept in the file): searches never wait for the relay's inserts, nor it for them.
  if (!index->exec("PRAGMA journal_mode=WAL", error) || !index->exec("BEGIN IMMEDIATE", error)) return nullptr;
  const auto give_up = [&](std::string why) {
    std::string ignored;
    index->exec("ROLLBACK", ignored);
    error = std::move(why);
    return nullptr;
  };
  if (older) {
    // Another process may have made it anew (or changed it) since the version was read.
    statement again(db, "PRAGMA user_version");
    const std::int64_t now_found = again.ok() && again.step() == SQLITE_ROW ? again.integer(0) : -1;
    again.reset();
    if (now_found == index_schema_version) return index->exec("COMMIT", error) ? std::move(index) : nullptr;
    if (now_found != found) return give_up(wrong_version);
    // Only mailtap's own tables: a database that merely has this name and version is not wiped.
    std::vector<std::string> names;
    {
      statement list(db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'");
      while (list.ok() && list.step() == SQLITE_ROW) names.push_back(list.text(0));
    }
    const auto ours = [](const std::string& name) {
      return std::find(std::begin(index_tables), std::end(index_tables), name) != std::end(index_tables);
    };
    if (!std::all_of(names.begin(), names.end(), ours))
      return give_up(wrong_version + ", with tables mailtap does not make: left as it is");
    // A relay of the earlier version that is still recording here would go on writing rows of
    // the old shape into the new tables, and fail every batch: the command line leaves such an
    // index to the relay that replaces it (its start makes it anew) or to reindex.
    if (std::string unread; on_busy == busy::wait && index->meta_flag(legacy_running_key, unread))
      return give_up(wrong_version + ", which a relay of that version may still be recording into: restart the relay "
                                     "with this mailtap, or, if none runs, rebuild it: mailtap captures reindex");
    for (const std::string& name : names)
      if (!index->exec(("DROP TABLE \"" + name + "\"").c_str(), error)) return give_up(error);   // its indexes go with it
  }
  const std::string version_sql = "PRAGMA user_version=" + std::to_string(index_schema_version);
  if (!index->exec(schema_sql, error) || !index->exec(version_sql.c_str(), error) || !index->exec("COMMIT", error)) {
    std::string ignored;
    index->exec("ROLLBACK", ignored);
    return nullptr;
  }
  index->created_ = true;
  return index;
}

capture_index::~capture_index() { sqlite3_close(db_); }

namespace {

// Deletes one session's rows; its id, or 0 when it was not indexed.
std::int64_t delete_session(sqlite3* db, statement& find, std::string_view session) {
  find.bind(1, session);
  const std::int64_t id = find.step() == SQLITE_ROW ? find.integer(0) : 0;
  find.reset();
  if (id == 0) return 0;
  for (const char* table : child_tables) {
    statement del(db, std::string("DELETE FROM ") + table + " WHERE session_id = ?");
    del.bind(1, id).run();
  }
  statement del(db, "DELETE FROM sessions WHERE id = ?");
  del.bind(1, id).run();
  return id;
}

}  // namespace

bool capture_index::put(std::span<const session_summary> sessions, std::string& error) {
  if (sessions.empty()) return true;
  if (!exec("BEGIN IMMEDIATE", error)) return false;
  statement find(db_, "SELECT id FROM sessions WHERE session = ?");
  statement add_session(db_,
                        "INSERT INTO sessions(session, file, started_at, ended_at, client, client_ip, upstream, outcome, "
                        "end_reason, complete) VALUES(?,?,?,?,?,?,?,?,?,?)");
  statement add_transaction(db_, "INSERT INTO transactions VALUES(?,?,?,?,?,?,?,?,?)");
  statement add_recipient(db_, "INSERT INTO recipients VALUES(?,?,?,?,?,?)");
  statement add_reply(db_, "INSERT INTO replies VALUES(?,?,?)");
  statement add_fault(db_, "INSERT INTO faults VALUES(?,?)");
  bool ok = find.ok() && add_session.ok() && add_transaction.ok() && add_recipient.ok() && add_reply.ok() && add_fault.ok();
  for (const auto& s : sessions) {
    if (!ok) break;
    delete_session(db_, find, s.session);
    ok = add_session.bind(1, s.session).bind(2, s.file).bind(3, s.started_at_us).bind(4, s.ended_at_us)
             .bind(5, s.client).bind(6, s.client_ip).bind(7, s.upstream).bind(8, s.outcome).bind(9, s.end_reason)
             .bind(10, std::int64_t{s.complete}).run();
    const std::int64_t id = sqlite3_last_insert_rowid(db_);
    for (std::size_t t = 0; ok && t < s.transactions.size(); ++t) {
      const auto& tx = s.transactions[t];
      const auto seq = static_cast<std::int64_t>(t);
      ok = add_transaction.bind(1, id).bind(2, seq).bind(3, tx.mail_from).bind(4, domain_of(tx.mail_from))
               .bind(5, tx.message_id).bind(6, tx.outcome).bind(7, std::int64_t{tx.final_code})
               .bind(8, tx.final_enhanced).bind(9, std::int64_t{tx.without_mail}).run();
      for (std::size_t r = 0; ok && r < tx.rcpt_to.size(); ++r)
        ok = add_recipient.bind(1, id).bind(2, seq).bind(3, static_cast<std::int64_t>(r)).bind(4, tx.rcpt_to[r])
                 .bind(5, domain_of(tx.rcpt_to[r]))
                 .bind(6, std::int64_t{r < tx.rcpt_codes.size() ? tx.rcpt_codes[r] : no_code}).run();
    }
    for (std::size_t r = 0; ok && r < s.replies.size(); ++r)
      ok = add_reply.bind(1, id).bind(2, std::int64_t{s.replies[r].first}).bind(3, s.replies[r].second).run();
    for (std::size_t r = 0; ok && r < s.rules.size(); ++r) ok = add_fault.bind(1, id).bind(2, s.rules[r]).run();
  }
  if (ok && exec("COMMIT", error)) return true;
  if (error.empty()) error = problem("cannot add to the index");
  std::string ignored;
  exec("ROLLBACK", ignored);
  return false;
}

bool capture_index::remove(std::span<const std::string> sessions, std::string& error) {
  if (sessions.empty()) return true;
  if (!exec("BEGIN IMMEDIATE", error)) return false;
  statement find(db_, "SELECT id FROM sessions WHERE session = ?");
  for (const auto& s : sessions) delete_session(db_, find, s);
  if (exec("COMMIT", error)) return true;
  std::string ignored;
  exec("ROLLBACK", ignored);
  return false;
}

std::optional<std::vector<session_summary>> capture_index::search(const search_filter& f, std::string& error) {
  if (auto p = filter_problem(f)) {
    error = *p;
    return std::nullopt;
  }
  where_clause w = where_of(db_, f);
  statement q(db_, "SELECT id, session, file, started_at, ended_at, client, client_ip, upstream, outcome, end_reason, "
                   "complete FROM sessions" + w.sql + " ORDER BY started_at DESC, session DESC LIMIT ? OFFSET ?");
  if (!q.ok()) {
    error = problem("cannot search");
    return std::nullopt;
  }
  int i = 1;
  for (const auto& v : w.values) std::visit([&](const auto& x) { q.bind(i++, x); }, v);
  q.bind(i++, static_cast<std::int64_t>(std::min<std::size_t>(f.limit, INT64_MAX)));
  q.bind(i++, static_cast<std::int64_t>(std::min<std::size_t>(f.offset, INT64_MAX)));
  std::vector<std::pair<std::int64_t, session_summary>> rows;
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    session_summary s;
    s.session = q.text(1);
    s.file = q.text(2);
    s.started_at_us = q.integer(3);
    s.ended_at_us = q.integer(4);
    s.client = q.text(5);
    s.client_ip = q.text(6);
    s.upstream = q.text(7);
    s.outcome = q.text(8);
    s.end_reason = q.text(9);
    s.complete = q.integer(10) != 0;
    rows.emplace_back(q.integer(0), std::move(s));
  }
  if (rc != SQLITE_DONE) {
    error = problem("cannot search");
    return std::nullopt;
  }
  statement txs(db_, "SELECT mail_from, message_id, outcome, final_code, final_enhanced, without_mail FROM transactions "
                     "WHERE session_id = ? ORDER BY seq");
  statement rcpts(db_, "SELECT seq, address, code FROM recipients WHERE session_id = ? ORDER BY seq, n");
  statement replies(db_, "SELECT code, enhanced FROM replies WHERE session_id = ? ORDER BY code, enhanced");
  statement faults(db_, "SELECT rule FROM faults WHERE session_id = ? ORDER BY rule");
  std::vector<session_summary> out;
  for (auto& [id, s] : rows) {
    txs.bind(1, id);
    while (txs.step() == SQLITE_ROW)
      s.transactions.push_back({txs.text(0), {}, {}, txs.text(1), txs.text(2), static_cast<int>(txs.integer(3)), txs.text(4),
                                txs.integer(5) != 0});
    txs.reset();
    rcpts.bind(1, id);
    while (rcpts.step() == SQLITE_ROW) {
      const auto seq = static_cast<std::size_t>(rcpts.integer(0));
      if (seq >= s.transactions.size()) continue;
      s.transactions[seq].rcpt_to.push_back(rcpts.text(1));
      if (rcpts.integer(2) != no_code) s.transactions[seq].rcpt_codes.push_back(static_cast<int>(rcpts.integer(2)));
    }
    rcpts.reset();
    replies.bind(1, id);
    while (replies.step() == SQLITE_ROW) s.replies.emplace_back(static_cast<int>(replies.integer(0)), replies.text(1));
    replies.reset();
    faults.bind(1, id);
    while (faults.step() == SQLITE_ROW) s.rules.push_back(faults.text(0));
    faults.reset();
    out.push_back(std::move(s));
  }
  return out;
}

bool stamp_file(const fs::path& file, left_out_file& into) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return false;
  into.size = static_cast<std::uint64_t>(st.st_size);
  into.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  return true;
}

bool capture_index::set_left_out(std::span<const left_out_file> files, std::string& error) {
  if (!exec("BEGIN IMMEDIATE", error)) return false;
  bool ok = exec(left_out_sql, error) && exec("DELETE FROM left_out", error);
  statement add(db_, "INSERT OR REPLACE INTO left_out VALUES(?,?,?,?,?)");
  ok = ok && add.ok();
  for (std::size_t i = 0; ok && i < files.size(); ++i) {
    const auto& f = files[i];
    ok = add.bind(1, f.file).bind(2, static_cast<std::int64_t>(f.size)).bind(3, f.mtime_ns)
             .bind(4, std::int64_t{f.unreadable}).bind(5, f.problem).run();
  }
  if (ok && exec("COMMIT", error)) return true;
  if (error.empty()) error = problem("cannot write the index");
  std::string ignored;
  exec("ROLLBACK", ignored);
  return false;
}

std::optional<std::vector<left_out_file>> capture_index::left_out(std::string& error) {
  std::vector<left_out_file> out;
  statement table(db_, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'left_out'");
  if (!table.ok() || table.step() != SQLITE_ROW) {
    error = problem("cannot read the index");
    return std::nullopt;
  }
  if (table.integer(0) == 0) return out;
  statement q(db_, "SELECT file, size, mtime_ns, unreadable, problem FROM left_out ORDER BY file");
  int rc = SQLITE_ERROR;
  if (q.ok())
    while ((rc = q.step()) == SQLITE_ROW)
      out.push_back({q.text(0), static_cast<std::uint64_t>(q.integer(1)), q.integer(2), q.integer(3) != 0, q.text(4)});
  if (rc != SQLITE_DONE) {
    error = problem("cannot read the index");
    return std::nullopt;
  }
  return out;
}

std::optional<std::vector<left_out_file>> files_left_out(const fs::path& dir, capture_index& index, std::string& error) {
  auto recorded = index.left_out(error);
  if (!recorded) return std::nullopt;
  std::erase_if(*recorded, [&](const left_out_file& f) {
    left_out_file now;
    return !stamp_file(dir / f.file, now) || now.size != f.size || now.mtime_ns != f.mtime_ns;
  });
  return recorded;
}

std::optional<std::vector<std::pair<std::string, std::string>>> capture_index::files(std::string& error) {
  statement q(db_, "SELECT session, file FROM sessions");
  std::vector<std::pair<std::string, std::string>> out;
  int rc = SQLITE_ERROR;
  if (q.ok())
    while ((rc = q.step()) == SQLITE_ROW) out.emplace_back(q.text(0), q.text(1));
  if (rc != SQLITE_DONE) {
    error = problem("cannot list the index");
    return std::nullopt;
  }
  return out;
}

bool capture_index::meta_flag(std::string_view key, std::string& error) {
  statement q(db_, "SELECT value FROM meta WHERE key = ?");
  if (!q.ok()) {
    error = problem("cannot read the index");
    return false;
  }
  q.bind(1, key);
  return q.step() == SQLITE_ROW && q.text(0) == "1";
}

bool capture_index::set_meta_flag(std::string_view key, bool value, std::string& error) {
  statement q(db_, "INSERT OR REPLACE INTO meta VALUES(?, ?)");
  if (q.ok() && q.bind(1, key).bind(2, value ? "1" : "0").run()) return true;
  error = problem("cannot write the index");
  return false;
}

bool capture_index::covers_directory(std::string& error) { return meta_flag(covers_key, error); }

std::optional<std::uint64_t> capture_index::size(std::string& error) {
  statement q(db_, "SELECT COUNT(*) FROM sessions");
  if (!q.ok() || q.step() != SQLITE_ROW) {
    error = problem("cannot read the index");
    return std::nullopt;
  }
  return static_cast<std::uint64_t>(q.integer(0));
}
bool capture_index::set_covers_directory(bool covers, std::string& error) { return set_meta_flag(covers_key, covers, error); }
bool capture_index::note_relay_started(std::string& error) {
  if (!exec("BEGIN IMMEDIATE", error)) return false;
  std::vector<std::string> gone;
  bool ok = true;
  {
    statement q(db_, "SELECT key, value FROM meta WHERE key = ? OR key LIKE ? || '%'");
    ok = q.ok();
    if (ok) q.bind(1, legacy_running_key).bind(2, relay_marker_prefix);
    while (ok && q.step() == SQLITE_ROW) {
      const std::string key = q.text(0);
      if (key == legacy_running_key ? q.text(1) == "1" : !relay_marker_alive(key)) gone.push_back(key);
    }
  }
  for (const auto& key : gone) {
    statement del(db_, "DELETE FROM meta WHERE key = ?");
    ok = ok && del.ok() && del.bind(1, key).run();
  }
  if (ok && !gone.empty()) ok = set_meta_flag(covers_key, false, error);
  statement add(db_, "INSERT OR REPLACE INTO meta VALUES(?, '1')");
  ok = ok && add.ok() && add.bind(1, own_relay_marker()).run();
  if (ok && exec("COMMIT", error)) return true;
  if (error.empty()) error = problem("cannot write the index");
  std::string ignored;
  exec("ROLLBACK", ignored);
  return false;
}

bool capture_index::note_relay_stopped(std::string& error) {
  statement del(db_, "DELETE FROM meta WHERE key = ?");
  if (del.ok() && del.bind(1, own_relay_marker()).run()) return true;
  error = problem("cannot write the index");
  return false;
}


void remove_index_files(const fs::path& dir) {
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"})
    fs::remove(dir / (std::string(index_file_name) + suffix), ec);
}

}  // namespace mailtap::captures
