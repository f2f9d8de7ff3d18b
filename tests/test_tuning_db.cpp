// The tuning database: what is recorded is read back after reopening, invalid candidates are
// never chosen, concurrent writers lose nothing, a killed writer leaves a sound file, and bad
// files are user errors naming the file.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "support/diagnostics.h"
#include "tune/tuning_db.h"

using namespace cnnc;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test case, removed afterwards.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "cnnc-tuning-test-XXXXXX").string();
    char* made = mkdtemp(pattern.data());
    REQUIRE(made != nullptr);
    path = made;
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

const std::string kSignature = "backward conv2d in=[13,13,32] out=[11,11,64] kernel=3x3";
const std::string kTarget = "x86-64-linux-avx2-fma";
const std::string kHalide = "14.0.0";

Measurement measurement(const std::string& candidate, double seconds, bool valid = true, const std::string& note = "") {
  Measurement m;
  m.signature = kSignature;
  m.target = kTarget;
  m.halide_version = kHalide;
  m.candidate = candidate;
  m.origin = candidate == "default" ? "default" : "tuned";
  m.seconds = seconds;
  m.valid = valid;
  m.note = note;
  return m;
}

// Runs `body` in a child process; the child's exit status is 0 if it returned, 1 if it threw.
pid_t spawn(const std::function<void()>& body) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid != 0) return pid;
  int status = 0;
  try {
    body();
  } catch (const std::exception& e) {
    fprintf(stderr, "child %d: %s\n", int(getpid()), e.what());
    status = 1;
  }
  _exit(status);  // not exit(): the child must not run the parent's atexit handlers (Catch2's)
}

int wait_exit_status(pid_t pid) {
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string integrity_check(const std::string& path) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* statement = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &statement, nullptr) == SQLITE_OK);
  std::string result;
  if (sqlite3_step(statement) == SQLITE_ROW) result = reinterpret_cast<const char*>(sqlite3_column_text(statement, 0));
  sqlite3_finalize(statement);
  sqlite3_close(db);
  return result;
}

void execute_sql(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, sql, nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
}

}  // namespace

TEST_CASE("tuning db: measurements, best and done survive reopening", "[tune]") {
  ScratchDir scratch;
  std::string path = TuningDb::default_path(scratch.file("cache/nested"));
  CHECK(path == scratch.file("cache/nested/tuning.sqlite"));
  {
    TuningDb db(path);  // creates the missing parent directories
    CHECK(db.measurements(kSignature, kTarget, kHalide).empty());
    CHECK_FALSE(db.best(kSignature, kTarget, kHalide).has_value());
    CHECK_FALSE(db.is_done(kSignature, kTarget, kHalide));
    db.record(measurement("default", 2.5e-3));
    db.record(measurement("channel_vectors=2 pixel_tile=6", 1.1e-3));
    db.record(measurement("channel_vectors=4 pixel_tile=2", 1.7e-3));
    Measurement autoscheduled = measurement("autoscheduler=Mullapudi2016", 9.8e-3);
    autoscheduled.origin = "autoscheduler";
    db.record(autoscheduled);
    // The same candidate again: both measurements are kept.
    db.record(measurement("channel_vectors=4 pixel_tile=2", 1.6e-3));
    // Another key: another target, another Halide.
    Measurement other_target = measurement("default", 1e-6);
    other_target.target = "arm-64-linux";
    db.record(other_target);
    Measurement other_halide = measurement("default", 1e-6);
    other_halide.halide_version = "15.0.0";
    db.record(other_halide);
    db.mark_done(kSignature, kTarget, kHalide);
    db.mark_done(kSignature, kTarget, kHalide);  // twice is harmless
  }
  TuningDb db(path);
  std::vector<Measurement> all = db.measurements(kSignature, kTarget, kHalide);
  REQUIRE(all.size() == 5);
  CHECK(all[0].candidate == "default");
  CHECK(all[0].origin == "default");
  CHECK(all[0].seconds == 2.5e-3);
  CHECK(all[3].origin == "autoscheduler");
  CHECK(all[3].candidate == "autoscheduler=Mullapudi2016");
  CHECK(all[4].seconds == 1.6e-3);
  for (const Measurement& m : all) {
    CHECK(m.signature == kSignature);
    CHECK(m.target == kTarget);
    CHECK(m.halide_version == kHalide);
    CHECK(m.valid);
    CHECK(m.note.empty());
  }
  std::optional<Measurement> best = db.best(kSignature, kTarget, kHalide);
  REQUIRE(best.has_value());
  CHECK(best->candidate == "channel_vectors=2 pixel_tile=6");
  CHECK(best->seconds == 1.1e-3);
  CHECK(db.is_done(kSignature, kTarget, kHalide));
  CHECK_FALSE(db.is_done(kSignature, "arm-64-linux", kHalide));
  CHECK_FALSE(db.is_done(kSignature, kTarget, "15.0.0"));
  CHECK_FALSE(db.is_done("forward dense", kTarget, kHalide));
  CHECK(db.measurements(kSignature, "arm-64-linux", kHalide).size() == 1);
  CHECK(db.measurements(kSignature, kTarget, "15.0.0").size() == 1);
  CHECK(integrity_check(path) == "ok");
}

// cnnc tune times its winner again; that timing replaces the first (a lucky first timing no
// longer wins), and a candidate that failed when timed again is not used at all.
TEST_CASE("tuning db: each candidate counts by its latest measurement", "[tune]") {
  ScratchDir scratch;
  TuningDb db(scratch.file("tuning.sqlite"));
  db.record(measurement("default", 3e-3));
  db.record(measurement("pixel_tile=4", 2e-3));
  db.record(measurement("pixel_tile=8", 2.5e-3));
  REQUIRE(db.best(kSignature, kTarget, kHalide).has_value());
  CHECK(db.best(kSignature, kTarget, kHalide)->candidate == "pixel_tile=4");
  db.record(measurement("pixel_tile=4", 2.8e-3));  // timed again: slower than pixel_tile=8
  CHECK(db.best(kSignature, kTarget, kHalide)->candidate == "pixel_tile=8");
  CHECK(db.best(kSignature, kTarget, kHalide)->seconds == 2.5e-3);
  db.record(measurement("pixel_tile=8", 0.0, false, "failed when timed again: crashed"));
  CHECK(db.best(kSignature, kTarget, kHalide)->candidate == "pixel_tile=4");
  CHECK(db.best(kSignature, kTarget, kHalide)->seconds == 2.8e-3);
  db.record(measurement("pixel_tile=4", 3.5e-3));
  CHECK(db.best(kSignature, kTarget, kHalide)->candidate == "default");
  CHECK(db.measurements(kSignature, kTarget, kHalide).size() == 6);  // every measurement kept
}

TEST_CASE("tuning db: an invalid measurement is never the best, however fast", "[tune]") {
  ScratchDir scratch;
  TuningDb db(scratch.file("tuning.sqlite"));
  db.record(measurement("pixel_tile=8", 1e-4, false, "output differs from the reference at [3,4,0]: 0.5 vs 0.25"));
  db.record(measurement("pixel_tile=12", 0.0, false, "failed to compile: too many registers"));
  CHECK_FALSE(db.best(kSignature, kTarget, kHalide).has_value());
  db.record(measurement("default", 3e-3));
  db.record(measurement("pixel_tile=4", 2e-3));
  std::optional<Measurement> best = db.best(kSignature, kTarget, kHalide);
  REQUIRE(best.has_value());
  CHECK(best->candidate == "pixel_tile=4");
  std::vector<Measurement> all = db.measurements(kSignature, kTarget, kHalide);
  REQUIRE(all.size() == 4);
  CHECK_FALSE(all[0].valid);
  CHECK(all[0].note == "output differs from the reference at [3,4,0]: 0.5 vs 0.25");
  CHECK(all[1].note == "failed to compile: too many registers");
}

TEST_CASE("tuning db: two processes recording at once lose nothing", "[tune]") {
  ScratchDir scratch;
  std::string path = scratch.file("tuning.sqlite");
  constexpr int kPerProcess = 200;
  // Both children create the database (neither finds it there) and start together: they wait
  // until the parent closes the gate's write end.
  int gate[2];
  REQUIRE(pipe(gate) == 0);
  std::vector<pid_t> children;
  for (int child = 0; child < 2; ++child) {
    children.push_back(spawn([&, child] {
      close(gate[1]);
      char ignored;
      if (read(gate[0], &ignored, 1) != 0) _exit(2);
      TuningDb db(path);
      for (int i = 0; i < kPerProcess; ++i) {
        db.record(measurement("process=" + std::to_string(child) + " i=" + std::to_string(i), 1e-3 * (i + 1)));
        // A pause, as between real measurements, so that the writers take turns rather than one
        // holding the lock while the other sleeps in SQLite's busy handler.
        usleep(200);
      }
      db.mark_done(kSignature, kTarget, kHalide);
    }));
  }
  close(gate[0]);
  close(gate[1]);
  for (pid_t pid : children) CHECK(wait_exit_status(pid) == 0);

  TuningDb db(path);
  std::vector<Measurement> all = db.measurements(kSignature, kTarget, kHalide);
  CHECK(all.size() == 2 * kPerProcess);
  std::set<std::string> candidates;
  for (const Measurement& m : all) candidates.insert(m.candidate);
  CHECK(candidates.size() == 2 * kPerProcess);
  CHECK(db.is_done(kSignature, kTarget, kHalide));
  CHECK(integrity_check(path) == "ok");
}

TEST_CASE("tuning db: a writer killed mid-loop leaves every committed record", "[tune]") {
  ScratchDir scratch;
  std::string path = scratch.file("tuning.sqlite");
  int confirmed_total = 0;
  // Three kills at different moments into the same file, each after some records are committed.
  for (int round = 0; round < 3; ++round) {
    int pipe_ends[2];
    REQUIRE(pipe(pipe_ends) == 0);
    pid_t pid = spawn([&] {
      close(pipe_ends[0]);
      TuningDb db(path);
      for (int i = 0;; ++i) {
        db.record(measurement("round=" + std::to_string(round) + " i=" + std::to_string(i), 1e-3));
        // Tell the parent that record i is committed.
        if (write(pipe_ends[1], &i, sizeof i) != sizeof i) _exit(2);
      }
    });
    close(pipe_ends[1]);
    // Read confirmations for a while (so that the child never blocks on a full pipe), then kill.
    int confirmed = 0, index = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(100 + 70 * round);
    while (std::chrono::steady_clock::now() < deadline || confirmed == 0) {
      pollfd readable{pipe_ends[0], POLLIN, 0};
      if (poll(&readable, 1, 10) > 0 && read(pipe_ends[0], &index, sizeof index) == sizeof index) confirmed = index + 1;
    }
    REQUIRE(kill(pid, SIGKILL) == 0);
    CHECK(wait_exit_status(pid) == 128 + SIGKILL);
    while (read(pipe_ends[0], &index, sizeof index) == sizeof index) confirmed = index + 1;
    close(pipe_ends[0]);

    CHECK(integrity_check(path) == "ok");
    TuningDb db(path);
    std::vector<Measurement> all = db.measurements(kSignature, kTarget, kHalide);
    std::set<std::string> candidates;
    for (const Measurement& m : all) candidates.insert(m.candidate);
    INFO("round " << round << ": " << confirmed << " records confirmed before the kill");
    // Every confirmed record is there; at most one more was committed before its confirmation.
    for (int i = 0; i < confirmed; ++i)
      CHECK(candidates.count("round=" + std::to_string(round) + " i=" + std::to_string(i)) == 1);
    int this_round = int(all.size()) - confirmed_total;
    CHECK(this_round >= confirmed);
    CHECK(this_round <= confirmed + 1);
    CHECK(confirmed > 0);
    confirmed_total = int(all.size());
  }
  TuningDb db(path);
  db.record(measurement("after the kills", 1e-3));
  CHECK(db.measurements(kSignature, kTarget, kHalide).size() == size_t(confirmed_total) + 1);
}

TEST_CASE("tuning db: bad files are user errors that name the file", "[tune][errors]") {
  ScratchDir scratch;

  SECTION("a file that is not a database") {
    std::string path = scratch.file("tuning.sqlite");
    std::ofstream(path)
        << "model: mnist_cnn\nlayers: []\n this is YAML, not SQLite, and long enough to have a header\n";
    CHECK_THROWS_WITH(TuningDb(path),
                      Catch::StartsWith(path + ": error: ") && Catch::Contains("not an SQLite database"));
  }
  SECTION("an SQLite header followed by garbage") {
    std::string path = scratch.file("tuning.sqlite");
    { TuningDb db(path); }
    std::string bytes(16, '\0');
    std::ifstream(path, std::ios::binary).read(bytes.data(), 16);
    std::string garbage(8192, '\x5a');
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes << garbage;
    CHECK_THROWS_WITH(TuningDb(path), Catch::StartsWith(path + ": error: "));
  }
  SECTION("a database whose pages after the schema are overwritten") {
    std::string path = scratch.file("tuning.sqlite");
    {
      TuningDb db(path);
      for (int i = 0; i < 300; ++i) db.record(measurement("pixel_tile=" + std::to_string(i), 1e-3));
    }  // the last connection to close moves the WAL into the file
    std::fstream file(path, std::ios::binary | std::ios::in | std::ios::out);
    file.seekp(2 * 4096);
    file << std::string(size_t(fs::file_size(path)) - 2 * 4096, '\x5a');
    file.close();
    // The schema is intact, so it opens; reading the damaged pages is the error.
    TuningDb db(path);
    CHECK_THROWS_WITH(db.measurements(kSignature, kTarget, kHalide),
                      Catch::StartsWith(path + ": error: ") && Catch::Contains("corrupt"));
  }
  SECTION("a database written by a newer cnnc") {
    std::string path = scratch.file("tuning.sqlite");
    { TuningDb db(path); }
    execute_sql(path, "UPDATE schema_version SET version = 99");
    CHECK_THROWS_WITH(TuningDb(path), Catch::StartsWith(path + ": error: ") && Catch::Contains("schema version 99") &&
                                          Catch::Contains("newer"));
  }
  SECTION("another program's SQLite database") {
    std::string path = scratch.file("photos.db");
    execute_sql(path, "CREATE TABLE photos (name TEXT)");
    CHECK_THROWS_WITH(TuningDb(path),
                      Catch::StartsWith(path + ": error: ") && Catch::Contains("not a cnnc tuning database"));
  }
  SECTION("a parent directory that cannot be made") {
    std::ofstream(scratch.file("cache")) << "a file, not a directory";
    std::string path = scratch.file("cache/tuning.sqlite");
    CHECK_THROWS_WITH(TuningDb(path),
                      Catch::StartsWith(path + ": error: ") && Catch::Contains("cannot create the directory"));
  }
  SECTION("the exception is a UserError") {
    std::string path = scratch.file("not-a-db");
    std::ofstream(path) << std::string(4096, 'x');
    CHECK_THROWS_AS(TuningDb(path), UserError);
  }
}
