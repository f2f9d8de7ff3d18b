// The tuning database: every schedule candidate ever measured for a kernel, kept on disk.
//
// `cnnc tune` records one Measurement per (kernel, candidate) as soon as it is timed and marks a
// kernel done when all its candidates are measured, so that an interrupted run resumes where it
// stopped. `cnnc build` asks for the fastest valid measurement of each kernel.
//
// A measurement is keyed by (signature, target, halide_version): a schedule tuned for one target
// or one Halide release says nothing about another. Measurements are only ever added, never
// overwritten; each is committed on its own, so a process killed at any moment leaves every
// measurement recorded before it. Several processes may use one database at once (SQLite in WAL
// mode; writers wait for each other up to a timeout).
//
// Every failure (the file cannot be opened, is not a database, is corrupt, or was written by a
// newer cnnc) throws a UserError naming the file.
#pragma once

#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace cnnc {

struct Measurement {
  std::string signature;       // kernel signature (opaque text, e.g. "backward conv2d in=[13,13,32] ...")
  std::string target;          // Halide target string
  std::string halide_version;  // e.g. "14.0.0"
  std::string candidate;       // schedule knobs as text: "default", "channel_vectors=2 pixel_tile=6", ...
  std::string origin;          // "default" | "tuned" | "autoscheduler"
  double seconds = 0;          // best of N
  bool valid = true;           // false if the output differed from the reference or it failed to compile
  std::string note;            // why invalid, or ""
};

class TuningDb {
 public:
  // Opens the database at `path`, creating it and its parent directories if needed.
  explicit TuningDb(const std::string& path);
  ~TuningDb();
  TuningDb(const TuningDb&) = delete;
  TuningDb& operator=(const TuningDb&) = delete;

  // Adds one measurement, committed before returning. `m.seconds` must not be NaN.
  void record(const Measurement& m);

  // Marks a key as completely tuned (committed before returning); marking it again is harmless.
  void mark_done(const std::string& signature, const std::string& target, const std::string& halide_version);
  bool is_done(const std::string& signature, const std::string& target, const std::string& halide_version) const;

  // Every measurement recorded for the key, valid or not, oldest first.
  std::vector<Measurement> measurements(const std::string& signature, const std::string& target,
                                        const std::string& halide_version) const;

  // The fastest valid measurement for the key (the earliest among equals), if any, each candidate
  // counted by its latest measurement only (a candidate whose latest is invalid not at all):
  // cnnc tune times its winner again, and that second timing replaces the first (the fastest of
  // many candidates timed once is, by chance, faster than it is).
  std::optional<Measurement> best(const std::string& signature, const std::string& target,
                                  const std::string& halide_version) const;

  const std::string& path() const { return path_; }

  // Where the database lives inside the cnnc cache directory: `cache_dir`/tuning.sqlite.
  static std::string default_path(const std::string& cache_dir);

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace cnnc
