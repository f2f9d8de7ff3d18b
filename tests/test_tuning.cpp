// Tuning: the schedule knobs, every candidate computing what the default schedule computes,
// cnnc tune resuming where it stopped, and cnnc build using the database.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "codegen/codegen.h"
#include "test_support.h"
#include "tune/tuning_db.h"

using namespace cnnc;
namespace fs = std::filesystem;

namespace {

double max_difference(const KernelTiming& a, const KernelTiming& b) {
  double worst = 0;
  for (size_t o = 0; o < a.outputs.size(); ++o)
    for (size_t i = 0; i < a.outputs[o].size(); ++i) {
      double error = std::fabs(double(a.outputs[o][i]) - double(b.outputs[o][i]));
      if (!(error <= worst)) worst = std::isnan(error) ? INFINITY : error;
    }
  return worst;
}

int run(const std::string& command) {
  int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("knobs: text round trip and errors", "[tuning]") {
  ScheduleKnobs knobs;
  CHECK(knobs.str() == "default");
  knobs.channel_vectors = 2;
  knobs.pixel_tile = 6;
  knobs.batch_chunks = 8;
  CHECK(knobs.str() == "channel_vectors=2 pixel_tile=6 batch_chunks=8");
  CHECK(ScheduleKnobs::parse(knobs.str()) == knobs);
  CHECK(ScheduleKnobs::parse("autoscheduler=Li2018").autoscheduler == "Li2018");
  // Every candidate of every kernel's space reads back as itself (cnnc build parses the
  // database's best), every value of the algorithm knob included.
  for (const char* model : {"tests/models/winograd.yaml", "tests/models/train_small.yaml", "tests/models/big_taps.yaml",
                            "tests/models/winograd5.yaml"}) {
    Graph graph = compile_graph(parse_model_file(test::source_path(model)));
    std::set<std::string> algorithms;
    for (const KernelInfo& kernel : test::all_kernels(graph))
      for (const ScheduleKnobs& candidate : schedule_space(graph, kernel, resolve_target("host"))) {
        INFO(kernel.function << ": " << candidate.str());
        CHECK(ScheduleKnobs::parse(candidate.str()) == candidate);
        algorithms.insert(candidate.algorithm);
      }
    if (std::string(model) == "tests/models/winograd.yaml")
      CHECK(algorithms == std::set<std::string>{"", "direct", "winograd", "winograd4"});
    if (std::string(model) == "tests/models/big_taps.yaml")  // the input gradient's other algorithm
      CHECK(algorithms.count("columns") == 1);
    if (std::string(model) == "tests/models/winograd5.yaml")  // F(2x2, 5x5) only: no winograd4
      CHECK(algorithms == std::set<std::string>{"", "direct", "winograd", "columns"});
  }
  CHECK_THROWS_WITH(ScheduleKnobs::parse("pixel_tile=0"), Catch::Contains("bad value"));
  CHECK_THROWS_WITH(ScheduleKnobs::parse("tile=3"), Catch::Contains("unknown schedule knob"));
}

TEST_CASE("tuning: schedule candidates compute what the default schedule computes", "[tuning]") {
  Graph graph = compile_graph(parse_model_file(test::source_path("tests/models/train_small.yaml")));
  TargetInfo target = resolve_target("host");
  int checked = 0;
  for (KernelInfo kernel : test::all_kernels(graph)) {
    std::vector<ScheduleKnobs> space = schedule_space(graph, kernel, target);
    REQUIRE(space.front().str() == "default");
    KernelTiming reference = time_kernel(graph, kernel, target, 5, 1);
    REQUIRE(reference.ok);
    // The first, middle and last candidates of the space, and one autoscheduler.
    std::vector<ScheduleKnobs> sample = {space[space.size() / 2], space.back()};
    ScheduleKnobs autoscheduled;
    autoscheduled.autoscheduler = "Mullapudi2016";
    sample.push_back(autoscheduled);
    for (const ScheduleKnobs& knobs : sample) {
      kernel.knobs = knobs;
      KernelTiming timing = time_kernel(graph, kernel, target, 5, 1);
      INFO(kernel.function << " with " << knobs.str() << ": " << timing.error);
      REQUIRE(timing.ok);
      CHECK(max_difference(reference, timing) <= 1e-4);
      ++checked;
    }
  }
  CHECK(checked >= 20);
}

// A package serves any batch, so candidates also run at batches 1 and 7. Halide 14's
// autoschedulers given the tuning batch as their estimate split the batch so that smaller
// batches failed, and Li2018's schedule of this model's conv wrote out of bounds at batch 7
// (heap corruption, a crash): they are given batch 1 as their estimate.
TEST_CASE("tuning: autoscheduled candidates run at batches smaller than the tuning batch", "[tuning]") {
  Graph graph = compile_graph(parse_model_file(test::source_path("tests/models/train_small.yaml")));
  TargetInfo target = resolve_target("host");
  int checked = 0;
  for (KernelInfo kernel : test::all_kernels(graph)) {
    if (kernel.kind != KernelKind::ForwardTrain && kernel.kind != KernelKind::Loss) continue;
    KernelTiming reference = time_kernel(graph, kernel, target, 8, 1, {1, 7});
    REQUIRE(reference.ok);
    REQUIRE(reference.outputs.size() % 3 == 0);  // the timed batch's outputs, then batch 1's and 7's
    for (const char* name : {"Li2018", "Mullapudi2016"}) {
      kernel.knobs.autoscheduler = name;
      KernelTiming timing = time_kernel(graph, kernel, target, 8, 1, {1, 7});
      INFO(kernel.function << " with " << name << ": " << timing.error);
      CHECK(timing.ok);
      if (timing.ok) CHECK(max_difference(reference, timing) <= 1e-4);
      ++checked;
    }
    kernel.knobs = ScheduleKnobs{};
  }
  CHECK(checked >= 6);
}

TEST_CASE("tuning: cnnc tune resumes where it stopped and cnnc build uses the database", "[tuning]") {
  test::Scratch scratch("tune-test");
  const fs::path& cache = scratch.path;
  std::string environment = "CNNC_CACHE=" + cache.string() + " ";
  std::string model = test::source_path("tests/models/train_small.yaml");
  std::string tune = environment + CNNC_EXECUTABLE + " tune " + model + " --autoschedulers none --repetitions 1 --threads 2 ";
  std::string db_path = TuningDb::default_path(cache.string());

  // A short budget stops part way; the next run continues without measuring anything twice.
  // (8 s: a candidate may take half of it, room to compile one on a loaded machine.)
  REQUIRE(run(tune + "--budget 8 > " + (cache / "first.log").string() + " 2>&1") == 0);
  Graph graph = compile_graph(parse_model_file(model));
  TargetInfo target = resolve_target("host");
  auto count = [&] {
    TuningDb db(db_path);
    std::map<std::string, int> valid;
    int total = 0;
    for (const KernelInfo& kernel : test::all_kernels(graph))
      for (const Measurement& m : db.measurements(kernel_signature(graph, kernel), target.halide, halide_version())) {
        ++total;
        if (m.valid) ++valid[m.signature + "|" + m.candidate];
      }
    // The default once (the reference); a candidate once, or twice where it won (timed again,
    // that timing counting instead of the first), at most six of them per kernel.
    std::map<std::string, int> twice;
    for (auto& [key, n] : valid) {
      INFO(key);
      bool is_default = key.size() >= 8 && key.compare(key.size() - 8, 8, "|default") == 0;
      CHECK(n <= (is_default ? 1 : 2));
      if (n == 2) ++twice[key.substr(0, key.rfind('|'))];
    }
    for (auto& [signature, n] : twice) CHECK(n <= 6);
    // Where a kernel is done and a candidate beat the default, that candidate was timed twice.
    for (const KernelInfo& kernel : test::all_kernels(graph)) {
      std::string signature = kernel_signature(graph, kernel);
      std::optional<Measurement> best = db.best(signature, target.halide, halide_version());
      if (!db.is_done(signature, target.halide, halide_version()) || !best || best->candidate == "default") continue;
      INFO(signature << ": " << best->candidate);
      CHECK(valid[signature + "|" + best->candidate] == 2);
    }
    return total;
  };
  int after_first = count();
  CHECK(after_first > 0);
  std::ifstream first_log(cache / "first.log");
  std::string first((std::istreambuf_iterator<char>(first_log)), {});
  CHECK_THAT(first, Catch::Contains("run cnnc tune again to continue"));
  REQUIRE(run(tune + "--budget 8 > /dev/null 2>&1") == 0);
  CHECK(count() > after_first);

  // cnnc build applies the database's best schedule and records where it came from; a rejected
  // candidate, however fast it was (a schedule that skips work is), is never chosen.
  KernelInfo dense;
  for (const KernelInfo& kernel : plan_kernels(graph))
    if (graph.nodes[kernel.node].def == find_op("dense")) dense = kernel;
  {
    TuningDb db(db_path);
    db.record(Measurement{kernel_signature(graph, dense), target.halide, halide_version(), "channel_vectors=1 pixel_tile=2",
                          "tuned", 1e-9, true, ""});
    db.record(Measurement{kernel_signature(graph, dense), target.halide, halide_version(), "channel_vectors=2 pixel_tile=3",
                          "tuned", 1e-12, false, "output 0 differs from the default schedule's"});
    db.record(Measurement{kernel_signature(graph, dense), target.halide, halide_version(), "autoscheduler=Li2018",
                          "autoscheduler", 0, false, "crashed: killed by SIGILL (Illegal instruction)"});
  }
  fs::path out = cache / "package";
  REQUIRE(run(environment + CNNC_EXECUTABLE + " build -q " + model + " -o " + out.string()) == 0);
  std::ifstream in(out / "manifest.json");
  nlohmann::json manifest = nlohmann::json::parse(in);
  bool found = false;
  for (const auto& kernel : manifest["kernels"])
    if (kernel["function"] == dense.function) {
      CHECK(kernel["schedule"]["origin"] == "tuned");
      CHECK(kernel["schedule"]["knobs"] == "channel_vectors=1 pixel_tile=2");
      found = true;
    }
  CHECK(found);
  // ... and the tuned package computes what the untuned one does.
  auto tuned = rt::Package::open(out.string(), model_fingerprint(graph));
  test::BuiltModel plain = test::build_model("tests/models/train_small.yaml");
  rt::Network a(tuned), b(plain.package);
  test::randomize_params(b, 3);
  std::copy(b.params(), b.params() + plain.package->param_floats(), a.params());
  a.params_changed();
  std::vector<float> input = test::random_input(7 * plain.package->input_elements(), 4);
  std::vector<float> x = a.forward(input, 7), y = b.forward(input, 7);
  for (size_t i = 0; i < x.size(); ++i) CHECK(std::fabs(x[i] - y[i]) <= 1e-5);
}

// The signature ends with the revision of cnnc's default schedules: what an older cnnc measured
// (its defaults, its candidates) is not trusted by a cnnc whose schedules changed. Entries of
// revision r(N-1) -- fast, valid, every kernel marked done -- are never applied by cnnc build,
// and cnnc tune measures the kernels afresh under the new revision.
TEST_CASE("tuning: measurements of an older schedule revision are measured again, not trusted", "[tuning]") {
  test::Scratch scratch("tune-revision");
  const fs::path& cache = scratch.path;
  std::string environment = "CNNC_CACHE=" + cache.string() + " ";
  std::string model = test::source_path("tests/models/train_small.yaml");
  Graph graph = compile_graph(parse_model_file(model));
  TargetInfo target = resolve_target("host");
  std::string db_path = TuningDb::default_path(cache.string());
  std::vector<KernelInfo> kernels = test::all_kernels(graph);
  auto older = [](std::string signature) {
    size_t at = signature.rfind(" schedules=r");
    REQUIRE(at != std::string::npos);
    int revision = std::stoi(signature.substr(at + 12));
    REQUIRE(revision >= 2);
    return signature.substr(0, at) + " schedules=r" + std::to_string(revision - 1);
  };
  {
    TuningDb db(db_path);
    for (const KernelInfo& kernel : kernels) {
      std::string old = older(kernel_signature(graph, kernel));
      db.record(Measurement{old, target.halide, halide_version(), "channel_vectors=1 pixel_tile=2", "tuned", 1e-9, true, ""});
      db.mark_done(old, target.halide, halide_version());
    }
  }
  fs::path out = cache / "package";
  REQUIRE(run(environment + CNNC_EXECUTABLE + " build -q " + model + " -o " + out.string()) == 0);
  std::ifstream in(out / "manifest.json");
  nlohmann::json manifest = nlohmann::json::parse(in);
  int kernels_seen = 0;
  for (const char* list : {"kernels", "training_kernels"})
    for (const auto& kernel : manifest[list]) {
      CHECK(kernel["schedule"]["origin"] == "default");
      ++kernels_seen;
    }
  CHECK(kernels_seen > 5);
  REQUIRE(run(environment + CNNC_EXECUTABLE + " tune " + model +
              " --autoschedulers none --repetitions 1 --threads 2 --budget 8 > /dev/null 2>&1") == 0);
  TuningDb db(db_path);
  int measured_again = 0;
  for (const KernelInfo& kernel : kernels)
    measured_again += int(db.measurements(kernel_signature(graph, kernel), target.halide, halide_version()).size());
  CHECK(measured_again > 0);
}

// A gradient added to another consumer's is updated in place by the package: no autoscheduler
// candidate for those kernels (an overlapping last vector would add values twice), the hand
// schedules' space only; other kernels get every autoscheduler asked for.
TEST_CASE("tuning: kernels that add a gradient in place get no autoscheduler candidates", "[tuning]") {
  Graph graph = compile_graph(parse_model_file(test::source_path("tests/models/regress_accumulate_38.yaml")));
  TargetInfo target = resolve_target("host");
  int in_place = 0, others = 0;
  for (const KernelInfo& kernel : plan_training_kernels(graph, 100)) {
    std::vector<ScheduleKnobs> candidates = tuning_candidates(graph, kernel, target, {"Mullapudi2016", "Li2018"});
    int autoscheduled = 0;
    for (const ScheduleKnobs& knobs : candidates) autoscheduled += knobs.autoscheduler.empty() ? 0 : 1;
    if (adds_in_place(kernel)) {
      ++in_place;
      CHECK(autoscheduled == 0);
      CHECK(!candidates.empty());
    } else {
      ++others;
      CHECK(autoscheduled == 2);
    }
  }
  CHECK(in_place == 1);
  CHECK(others > 3);
}
