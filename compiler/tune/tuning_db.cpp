#include "tune/tuning_db.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <system_error>
#include <thread>

#include "support/diagnostics.h"

namespace fs = std::filesystem;

namespace cnnc {

namespace {

// Version 1: measurements, done. A cnnc that finds a higher number refuses the file rather than
// misreading it; a future version migrates lower numbers forward in open_schema().
constexpr int kSchemaVersion = 1;

// Two `cnnc tune` processes write one row at a time, each in well under a millisecond, so a
// writer that waits this long is facing a stuck process, not a busy one.
constexpr int kBusyTimeoutMs = 10000;

const char* const kCreateSchema = R"sql(
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE measurements (
  id INTEGER PRIMARY KEY,
  signature TEXT NOT NULL,
  target TEXT NOT NULL,
  halide_version TEXT NOT NULL,
  candidate TEXT NOT NULL,
  origin TEXT NOT NULL,
  seconds REAL NOT NULL,
  valid INTEGER NOT NULL CHECK (valid IN (0, 1)),
  note TEXT NOT NULL,
  recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX measurements_by_key ON measurements (signature, target, halide_version, valid, seconds);
CREATE TABLE done (
  signature TEXT NOT NULL,
  target TEXT NOT NULL,
  halide_version TEXT NOT NULL,
  finished_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  PRIMARY KEY (signature, target, halide_version)
);
)sql";

// Every SQLite failure is about the user's file (corrupt, locked, on a full or read-only disk):
// say which file and what to do.
[[noreturn]] void fail(sqlite3* db, const std::string& path, int code, const std::string& doing) {
  std::string message = std::string(db ? sqlite3_errmsg(db) : sqlite3_errstr(code));
  std::string text = "tuning database: " + doing + " failed: " + message;
  switch (code & 0xff) {
    case SQLITE_NOTADB:
      text = "this file is not an SQLite database, so not a cnnc tuning database (" + message +
             "); delete or move it, or point CNNC_CACHE elsewhere";
      break;
    case SQLITE_CORRUPT:
      text += "; the tuning database is corrupt: delete it to start afresh (its measurements are lost)";
      break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      text += "; another process held the database for more than " + std::to_string(kBusyTimeoutMs / 1000) + " s";
      break;
    default:
      break;
  }
  throw UserError(SourceLoc{path}, text);
}

// SQLite's busy handler waits for a lock a writer holds, but not for the moments when another
// process holds the file exclusively: switching it to WAL, recovering after a crashed writer, or
// cleaning up as the last connection closes. Those return SQLITE_BUSY at once. A statement outside
// an explicit transaction (and BEGIN and COMMIT themselves) can simply run again; this says
// whether to, after a short sleep, until kBusyTimeoutMs after `start`.
bool retry_when_busy(int code, std::chrono::steady_clock::time_point start, int& attempt) {
  if ((code & 0xff) != SQLITE_BUSY) return false;
  auto waited = std::chrono::steady_clock::now() - start;
  if (waited > std::chrono::milliseconds(kBusyTimeoutMs)) return false;
  std::this_thread::sleep_for(std::chrono::milliseconds(std::min(1 << std::min(attempt, 6), 50)));
  ++attempt;
  return true;
}

// One prepared statement with its parameters bound by position (1-based, as in SQLite).
class Statement {
 public:
  Statement(sqlite3* db, const std::string& path, const char* sql) : db_(db), path_(path) {
    int code = sqlite3_prepare_v2(db, sql, -1, &statement_, nullptr);
    if (code != SQLITE_OK) fail(db_, path_, code, "preparing a query");
  }
  ~Statement() { sqlite3_finalize(statement_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, const std::string& text) {
    check(sqlite3_bind_text(statement_, index, text.data(), int(text.size()), SQLITE_TRANSIENT));
    return *this;
  }
  Statement& bind(int index, double value) {
    check(sqlite3_bind_double(statement_, index, value));
    return *this;
  }
  Statement& bind(int index, int value) {
    check(sqlite3_bind_int(statement_, index, value));
    return *this;
  }
  Statement& bind_key(const std::string& signature, const std::string& target, const std::string& halide_version) {
    return bind(1, signature).bind(2, target).bind(3, halide_version);
  }

  // Runs to the next row: true if there is one, false when done.
  bool step() {
    auto start = std::chrono::steady_clock::now();
    for (int attempt = 0;;) {
      int code = sqlite3_step(statement_);
      if (code == SQLITE_ROW) return true;
      if (code == SQLITE_DONE) return false;
      if (!retry_when_busy(code, start, attempt)) fail(db_, path_, code, "a query");
      sqlite3_reset(statement_);
    }
  }

  std::string text(int column) const {
    const unsigned char* text = sqlite3_column_text(statement_, column);
    return text ? std::string(reinterpret_cast<const char*>(text), size_t(sqlite3_column_bytes(statement_, column)))
                : std::string();
  }
  double real(int column) const { return sqlite3_column_double(statement_, column); }
  int integer(int column) const { return sqlite3_column_int(statement_, column); }

 private:
  void check(int code) {
    if (code != SQLITE_OK) fail(db_, path_, code, "binding a query parameter");
  }

  sqlite3* db_;
  const std::string& path_;
  sqlite3_stmt* statement_ = nullptr;
};

void execute(sqlite3* db, const std::string& path, const char* sql, const std::string& doing) {
  auto start = std::chrono::steady_clock::now();
  for (int attempt = 0;;) {
    int code = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
    if (code == SQLITE_OK) return;
    if (!retry_when_busy(code, start, attempt)) fail(db, path, code, doing);
  }
}

// BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so that a
// transaction that reads and then writes cannot deadlock with another writer.
class WriteTransaction {
 public:
  WriteTransaction(sqlite3* db, const std::string& path) : db_(db), path_(path) {
    execute(db_, path_, "BEGIN IMMEDIATE", "starting a transaction");
  }
  ~WriteTransaction() {
    if (!committed_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    execute(db_, path_, "COMMIT", "committing");
    committed_ = true;
  }

 private:
  sqlite3* db_;
  const std::string& path_;
  bool committed_ = false;
};

// The schema version recorded in the file, 0 if it has no version table, -1 if it has other
// tables but no version table (some other program's database).
int stored_schema_version(sqlite3* db, const std::string& path) {
  Statement has_version(db, path,
                        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'");
  has_version.step();
  if (has_version.integer(0) == 0) {
    Statement tables(db, path, "SELECT count(*) FROM sqlite_master WHERE type = 'table'");
    tables.step();
    return tables.integer(0) == 0 ? 0 : -1;
  }
  Statement version(db, path, "SELECT max(version) FROM schema_version");
  version.step();
  return version.integer(0);
}

void open_schema(sqlite3* db, const std::string& path) {
  int version = stored_schema_version(db, path);
  if (version == 0) {
    // Two processes may create the database at once: check again under the write lock.
    WriteTransaction transaction(db, path);
    version = stored_schema_version(db, path);
    if (version == 0) {
      execute(db, path, kCreateSchema, "creating the tables");
      Statement insert(db, path, "INSERT INTO schema_version (version) VALUES (?)");
      insert.bind(1, kSchemaVersion).step();
      version = kSchemaVersion;
    }
    transaction.commit();
  }
  if (version < 0)
    throw UserError(SourceLoc{path},
                    "this SQLite database is not a cnnc tuning database (it has tables but no schema_version); "
                    "move it away or point CNNC_CACHE elsewhere");
  if (version > kSchemaVersion)
    throw UserError(SourceLoc{path}, "tuning database has schema version " + std::to_string(version) +
                                         ", newer than this cnnc understands (" + std::to_string(kSchemaVersion) +
                                         "); use a newer cnnc or point CNNC_CACHE elsewhere");
}

Measurement read_measurement(const Statement& row) {
  Measurement m;
  m.signature = row.text(0);
  m.target = row.text(1);
  m.halide_version = row.text(2);
  m.candidate = row.text(3);
  m.origin = row.text(4);
  m.seconds = row.real(5);
  m.valid = row.integer(6) != 0;
  m.note = row.text(7);
  return m;
}

constexpr const char* kSelectMeasurements =
    "SELECT signature, target, halide_version, candidate, origin, seconds, valid, note FROM measurements "
    "WHERE signature = ?1 AND target = ?2 AND halide_version = ?3";

}  // namespace

TuningDb::TuningDb(const std::string& path) : path_(path) {
  fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code error;
    fs::create_directories(parent, error);
    if (error)
      throw UserError(SourceLoc{path}, "cannot create the directory '" + parent.string() +
                                           "' for the tuning database: " + error.message());
  }
  int code = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  try {
    if (code != SQLITE_OK) fail(db_, path_, code, "opening");
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    // WAL lets readers and one writer work at once. Where the file system cannot do WAL (some
    // network mounts) SQLite keeps its rollback journal, which is slower but as safe.
    execute(db_, path_, "PRAGMA journal_mode = WAL", "reading");
    // In WAL mode NORMAL never corrupts the file; a power cut (not a killed process) may lose the
    // last few commits, which a tuning run measures again.
    execute(db_, path_, "PRAGMA synchronous = NORMAL", "configuring");
    open_schema(db_, path_);
  } catch (...) {
    sqlite3_close_v2(db_);
    throw;
  }
}

TuningDb::~TuningDb() { sqlite3_close_v2(db_); }

std::string TuningDb::default_path(const std::string& cache_dir) {
  return (fs::path(cache_dir) / "tuning.sqlite").string();
}

void TuningDb::record(const Measurement& m) {
  CNNC_ASSERT(!std::isnan(m.seconds), "measurement of '" + m.candidate + "' for '" + m.signature + "' has NaN seconds");
  // One statement in autocommit mode is its own transaction: committed when step() returns.
  Statement insert(
      db_, path_,
      "INSERT INTO measurements (signature, target, halide_version, candidate, origin, seconds, valid, note) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
  insert.bind_key(m.signature, m.target, m.halide_version)
      .bind(4, m.candidate)
      .bind(5, m.origin)
      .bind(6, m.seconds)
      .bind(7, m.valid ? 1 : 0)
      .bind(8, m.note)
      .step();
}

void TuningDb::mark_done(const std::string& signature, const std::string& target, const std::string& halide_version) {
  Statement insert(db_, path_, "INSERT OR IGNORE INTO done (signature, target, halide_version) VALUES (?1, ?2, ?3)");
  insert.bind_key(signature, target, halide_version).step();
}

bool TuningDb::is_done(const std::string& signature, const std::string& target,
                       const std::string& halide_version) const {
  Statement query(db_, path_, "SELECT 1 FROM done WHERE signature = ?1 AND target = ?2 AND halide_version = ?3");
  return query.bind_key(signature, target, halide_version).step();
}

std::vector<Measurement> TuningDb::measurements(const std::string& signature, const std::string& target,
                                                const std::string& halide_version) const {
  Statement query(db_, path_, (std::string(kSelectMeasurements) + " ORDER BY id").c_str());
  query.bind_key(signature, target, halide_version);
  std::vector<Measurement> found;
  while (query.step()) found.push_back(read_measurement(query));
  return found;
}

std::optional<Measurement> TuningDb::best(const std::string& signature, const std::string& target,
                                          const std::string& halide_version) const {
  Statement query(db_, path_,
                  (std::string(kSelectMeasurements) +
                   " AND valid = 1 AND id IN (SELECT max(id) FROM measurements WHERE signature = ?1 AND target = ?2 "
                   "AND halide_version = ?3 GROUP BY candidate) ORDER BY seconds, id LIMIT 1")
                      .c_str());
  if (!query.bind_key(signature, target, halide_version).step()) return std::nullopt;
  return read_measurement(query);
}

}  // namespace cnnc
