// cnnc tune measures every candidate in a child process: a candidate that aborts, segfaults,
// hangs or writes outside its output is rejected with its reason and tuning goes on; a killed
// tuner leaves no child running and resumes. The faults are made on purpose through the
// test-only CNNC_TUNE_TEST_FAULT (codegen/child_timing.h), applied in the child to chosen
// candidates of one kernel.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "codegen/child_timing.h"
#include "codegen/codegen.h"
#include "codegen/plan.h"
#include "test_support.h"
#include "tune/tuning_db.h"

using namespace cnnc;
namespace fs = std::filesystem;

namespace {

using test::Scratch;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// The kernel whose candidates are made to fail, its search space and its measurements.
// The kernel cnnc tune measures first (tuning_order over the plan's kernels, as tune_kernels).
KernelInfo first_tuned(const Graph& graph) {
  Plan plan = make_plan(graph, false);
  std::vector<KernelInfo> kernels = plan.kernels;
  for (const KernelInfo& kernel : plan.training)
    if (!kernel.reuses_inference_kernel) kernels.push_back(kernel);
  return tuning_order(graph, kernels).front().first;
}

struct Subject {
  Graph graph = compile_graph(parse_model_file(test::source_path("tests/models/ops_dense.yaml")));
  TargetInfo target = resolve_target("host");
  KernelInfo kernel = first_tuned(graph);
  std::string signature = kernel_signature(graph, kernel);
  std::vector<ScheduleKnobs> space = schedule_space(graph, kernel, target);

  // Candidate number `index` as cnnc tune counts them (1 = the default).
  std::string candidate(size_t index) const { return space.at(index - 1).str(); }
  std::vector<Measurement> measurements(const std::string& db_path) const {
    TuningDb db(db_path);
    return db.measurements(signature, target.halide, halide_version());
  }
};

const char* const kTuneFlags = " --autoschedulers none --repetitions 1 --threads 1 ";

// The processes of process group `group` (from /proc), other than `except`.
std::vector<int> group_members(int group, int except) {
  std::vector<int> found;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = read_text(entry.path() / "stat");
    size_t close = stat.rfind(')');  // pid (comm) state ppid pgrp ...
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0, pgrp = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d %d", &state, &ppid, &pgrp) != 3) continue;
    if (pgrp == group && std::stoi(name) != except && state != 'Z') found.push_back(std::stoi(name));
  }
  return found;
}

}  // namespace

TEST_CASE("tuning: candidates that abort, segfault, hang or write out of bounds are rejected and tuning goes on",
          "[tuning]") {
  Scratch scratch("tune-faults");
  Subject subject;
  REQUIRE(subject.space.size() >= 8);
  std::string k = subject.kernel.function;
  std::string faults = "abort@2@" + k + ",segv@3@" + k + ",hang@4@" + k + ",oob@5@" + k;
  fs::path log = scratch.path / "tune.log";
  std::string command = "CNNC_CACHE=" + scratch.path.string() + " CNNC_TUNE_TEST_FAULT=" + faults + " " +
                        CNNC_EXECUTABLE + " tune " + test::source_path("tests/models/ops_dense.yaml") + kTuneFlags +
                        "--budget 30 --candidate-timeout 6 > " + log.string() + " 2>&1";
  auto start = std::chrono::steady_clock::now();
  int status = std::system(command.c_str());
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::string output = read_text(log);
  INFO(output);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  // Within its budget, the hang cut at 6 s. (Limits with room to compile a candidate on a loaded
  // machine or under the sanitizers: about 0.5 s each here when idle, several seconds under load.)
  CHECK(seconds < 45);

  std::map<std::string, Measurement> by_candidate;
  int valid_after_faults = 0, rejected = 0;
  for (const Measurement& m : subject.measurements(TuningDb::default_path(scratch.path.string()))) {
    by_candidate[m.candidate] = m;
    if (!m.valid) ++rejected;
  }
  for (size_t index = 6; index <= subject.space.size(); ++index)
    if (by_candidate.count(subject.candidate(index)) && by_candidate[subject.candidate(index)].valid) ++valid_after_faults;
  struct Expected {
    size_t index;
    const char* reason;
  };
  for (Expected expected : {Expected{2, "crashed: killed by SIGABRT"}, Expected{3, "crashed: killed by SIGSEGV"},
                            Expected{4, "timed out"}, Expected{5, "wrote outside its output"}}) {
    std::string candidate = subject.candidate(expected.index);
    INFO("candidate " << expected.index << ": " << candidate);
    REQUIRE(by_candidate.count(candidate));
    CHECK_FALSE(by_candidate[candidate].valid);
    CHECK_THAT(by_candidate[candidate].note, Catch::Contains(expected.reason));
    // The final table names it with its reason.
    CHECK_THAT(output, Catch::Contains(candidate) && Catch::Contains(expected.reason));
  }
  CHECK(rejected == 4);               // and nothing else of this kernel
  CHECK(by_candidate["default"].valid);
  CHECK(valid_after_faults >= 1);     // tuning went on after them
  CHECK_THAT(output, Catch::Contains("Rejected candidates") && Catch::Contains("4 of "));
  // Not a terminal: a line per kernel, none per candidate, nothing rewritten in place; then the
  // table of every kernel, this one included.
  CHECK_THAT(output, Catch::Contains("] " + k + ": ") && !Catch::Contains(" candidate 2/") && !Catch::Contains("\r"));
  CHECK_THAT(output, Catch::Contains("default ms") && Catch::Contains("tuned ms") && Catch::Contains("\n" + k + " "));
  // The tuner ran no generated code, so it had no thread-pool workers when it forked.
  CHECK_THAT(output, !Catch::Contains("warning: timing kernels in child processes"));
}

TEST_CASE("tuning: a killed cnnc tune leaves no candidate running and resumes", "[tuning]") {
  Scratch scratch("tune-kill");
  Subject subject;
  std::string db_path = TuningDb::default_path(scratch.path.string());
  std::string model = test::source_path("tests/models/ops_dense.yaml");
  // Candidate 3 of the first kernel hangs; kill the tuner while it does.
  pid_t tuner = fork();
  REQUIRE(tuner >= 0);
  if (tuner == 0) {
    setsid();  // its own process group: the test finds its children by it
    setenv("CNNC_CACHE", scratch.path.c_str(), 1);
    setenv("CNNC_TUNE_TEST_FAULT", ("hang@3@" + subject.kernel.function).c_str(), 1);
    std::string log = (scratch.path / "killed.log").string();
    if (!freopen(log.c_str(), "w", stdout)) _exit(126);
    dup2(1, 2);
    execl(CNNC_EXECUTABLE, CNNC_EXECUTABLE, "tune", model.c_str(), "--autoschedulers", "none", "--repetitions", "1",
          "--threads", "1", "--budget", "120", "--candidate-timeout", "120", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string candidate2 = subject.candidate(2), candidate3 = subject.candidate(3);
  auto measured = [&](const std::string& candidate) {
    if (!fs::exists(db_path)) return false;
    for (const Measurement& m : subject.measurements(db_path))
      if (m.candidate == candidate) return true;
    return false;
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  while (!measured(candidate2) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  bool reached = measured(candidate2);
  // The hanging candidate runs in a child of the tuner, in the tuner's process group.
  std::vector<int> children;
  while (reached && children.empty() && std::chrono::steady_clock::now() < deadline) {
    children = group_members(tuner, tuner);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(tuner, SIGKILL);
  int status = 0;
  waitpid(tuner, &status, 0);
  INFO(read_text(scratch.path / "killed.log"));
  REQUIRE(reached);
  CHECK(children.size() == 1);
  CHECK_FALSE(measured(candidate3));  // it was hanging when the tuner died
  // The child dies with the tuner.
  auto gone = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!group_members(tuner, tuner).empty() && std::chrono::steady_clock::now() < gone)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(group_members(tuner, tuner).empty());

  // The next run resumes: candidate 3 is measured now (the kill was not its fault), nothing twice
  // but the winners, timed again after the candidates (at most six per kernel); the default,
  // the reference, once.
  fs::path log = scratch.path / "resumed.log";
  int resumed = std::system(("CNNC_CACHE=" + scratch.path.string() + " " + CNNC_EXECUTABLE + " tune " + model + kTuneFlags +
                             "--budget 12 > " + log.string() + " 2>&1")
                                .c_str());
  INFO(read_text(log));
  CHECK(WIFEXITED(resumed));
  CHECK(WEXITSTATUS(resumed) == 0);
  std::map<std::string, int> times;
  bool candidate3_valid = false;
  for (const Measurement& m : subject.measurements(db_path)) {
    ++times[m.candidate];
    if (m.candidate == candidate3) candidate3_valid = m.valid;
  }
  CHECK(candidate3_valid);
  int twice = 0;
  for (auto& [candidate, n] : times) {
    INFO(candidate);
    CHECK(n <= (candidate == "default" ? 1 : 2));
    twice += n == 2;
  }
  CHECK(twice <= 6);
}

// A candidate may take at most half the budget: one that hangs is rejected, not stopped by the
// budget's end run after run (the default --candidate-timeout, 120 s, is far longer than this budget).
TEST_CASE("tuning: a hanging candidate is rejected even when the budget is shorter than its time limit", "[tuning]") {
  Scratch scratch("tune-short");
  Subject subject;
  fs::path log = scratch.path / "tune.log";
  int status = std::system(("CNNC_CACHE=" + scratch.path.string() + " CNNC_TUNE_TEST_FAULT=hang@2@" +
                            subject.kernel.function + " " + CNNC_EXECUTABLE + " tune " +
                            test::source_path("tests/models/ops_dense.yaml") + kTuneFlags + "--budget 12 > " +
                            log.string() + " 2>&1")
                               .c_str());
  INFO(read_text(log));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  bool rejected = false;
  for (const Measurement& m : subject.measurements(TuningDb::default_path(scratch.path.string())))
    if (m.candidate == subject.candidate(2)) rejected = !m.valid && m.note.find("timed out") != std::string::npos;
  CHECK(rejected);
}

// cnnc tune times each candidate in alternation with the default schedule, compiled once in the
// tuner and inherited by the candidate's child: the child reports both bests, the candidate's
// outputs are the ones checked and sent back, and compiling the default left the tuner with no
// thread a fork could copy in a locked state.
TEST_CASE("tuning: a candidate's child times it against the default compiled in the tuner", "[tuning]") {
  Subject subject;
  REQUIRE(subject.space.size() >= 3);
  KernelInfo reference = subject.kernel;
  reference.knobs = ScheduleKnobs{};
  std::shared_ptr<const CompiledBaseline> baseline = compile_baseline(subject.graph, reference, subject.target);
  size_t threads = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/self/task")) ++threads;
  CHECK(threads == 1);

  KernelInfo candidate = subject.kernel;
  candidate.knobs = ScheduleKnobs::parse(subject.candidate(3));
  ChildTiming alone = time_kernel_in_child(subject.graph, candidate, subject.target, 8, 2, {1, 7}, 60);
  ChildTiming paired =
      time_kernel_in_child(subject.graph, candidate, subject.target, 8, 2, {1, 7}, 60, {}, InjectedFault::None, baseline.get());
  INFO(alone.timing.error << " / " << paired.timing.error);
  REQUIRE(alone.timing.ok);
  REQUIRE(paired.timing.ok);
  CHECK(alone.timing.baseline_seconds == 0);
  CHECK(paired.timing.baseline_seconds > 0);
  CHECK(paired.timing.seconds > 0);
  CHECK(paired.timing.schedule == alone.timing.schedule);
  CHECK(paired.timing.outputs == alone.timing.outputs);  // the candidate's, at batches 8, 1 and 7

  // A candidate writing past its output is caught with the default's outputs beside it.
  ChildTiming overshoot = time_kernel_in_child(subject.graph, candidate, subject.target, 8, 2, {1, 7}, 60, {},
                                               InjectedFault::OutOfBounds, baseline.get());
  CHECK_FALSE(overshoot.timing.ok);
  CHECK_THAT(overshoot.timing.error, Catch::Contains("wrote outside its output"));
}

// The fastest candidate is timed again, and its second timing is what counts: a measurement
// that noise made too fast (here one planted in the database, 1 ns) does not stay the best.
TEST_CASE("tuning: the fastest candidate is timed again and that timing counts", "[tuning]") {
  Scratch scratch("tune-confirm");
  Subject subject;
  std::string db_path = TuningDb::default_path(scratch.path.string());
  std::string lucky = subject.candidate(2);
  {
    TuningDb db(db_path);
    db.record(Measurement{subject.signature, subject.target.halide, halide_version(), lucky, "tuned", 1e-9, true, ""});
    REQUIRE(db.best(subject.signature, subject.target.halide, halide_version())->seconds == 1e-9);
  }
  fs::path log = scratch.path / "tune.log";
  std::string command = "CNNC_CACHE=" + scratch.path.string() + " " + CNNC_EXECUTABLE + " tune " +
                        test::source_path("tests/models/ops_dense.yaml") + kTuneFlags + "--budget 30 > " + log.string() +
                        " 2>&1";
  REQUIRE(std::system(command.c_str()) == 0);
  INFO(read_text(log));
  TuningDb db(db_path);
  REQUIRE(db.is_done(subject.signature, subject.target.halide, halide_version()));
  std::vector<Measurement> timings;
  for (const Measurement& m : subject.measurements(db_path))
    if (m.candidate == lucky) timings.push_back(m);
  REQUIRE(timings.size() == 2);  // the planted one, then the second timing
  CHECK(timings[1].valid);
  CHECK(timings[1].seconds > 1e-7);
  std::optional<Measurement> best = db.best(subject.signature, subject.target.halide, halide_version());
  REQUIRE(best.has_value());
  CHECK(best->seconds > 1e-7);
  // The default was timed once: the reference the candidates are timed against.
  std::map<std::string, int> times;
  for (const Measurement& m : subject.measurements(db_path)) ++times[m.candidate];
  CHECK(times["default"] == 1);
}
