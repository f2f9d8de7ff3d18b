// cnnc tune MODEL.yaml: measures each kernel's schedule candidates on this machine (the explicit
// search space of schedule_space, plus Halide's autoschedulers), checks each against the
// default schedule's output, and keeps every measurement in the tuning database. cnnc build then
// uses the fastest valid schedule of each kernel. Interrupted runs resume where they stopped.
//
// The options and the model are read here; the loop is tune_kernels (compiler/tune/tune_kernels.h).
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "codegen/target.h"
#include "driver/commands.h"
#include "driver/load_model.h"
#include "frontend/parse_model.h"
#include "graph/pipeline.h"
#include "support/text.h"
#include "tune/tune_kernels.h"

namespace cnnc {

void add_tune_command(CLI::App& app, CommandAction& action) {
  struct Options {
    std::string model, target = "host", json;
    double budget = 600;
    int64_t batch_size = 0;
    int repetitions = 20, threads = 0;
    double candidate_timeout = 120;
    std::vector<std::string> autoschedulers = {"Mullapudi2016", "Li2018", "Adams2019"};
  };
  auto options = std::make_shared<Options>();
  CLI::App* tune = app.add_subcommand("tune", "Measure schedule candidates per kernel on this machine (the kernels with "
                                              "the most work first) and keep the best in the tuning database "
                                              "($CNNC_CACHE/tuning.sqlite)");
  tune->add_option("model", options->model, "Model file (YAML, or ONNX: .onnx)")->required();
  tune->add_option("--target", options->target, "Target (must run on this machine)")->capture_default_str();
  tune->add_option("--budget", options->budget, "Seconds to spend at most; an unfinished run resumes next time")
      ->capture_default_str()->check(CLI::Range(1.0, 1e7));
  tune->add_option("--batch-size", options->batch_size, "Batch size to tune at (default: the model's train: batch_size)")
      ->check(CLI::Range(int64_t(1), int64_t(65536)));
  tune->add_option("--repetitions", options->repetitions,
                   "Timed runs per candidate, alternating with the default schedule's, after a warm-up; the best of "
                   "each counts")
      ->capture_default_str()->check(CLI::Range(1, 1000));
  tune->add_option("--threads", options->threads, "Threads (0: one per core)")->capture_default_str()->check(CLI::Range(0, 1024));
  tune->add_option("--autoschedulers", options->autoschedulers,
                   "Halide autoschedulers to try as candidates (Mullapudi2016, Li2018, Adams2019; 'none' for none)")
      ->capture_default_str()->delimiter(',');
  tune->add_option("--candidate-timeout", options->candidate_timeout,
                   "Seconds one candidate may take (compiling, autoscheduling and timing it, in a child process; at "
                   "most half the budget) before it is killed and rejected as timed out")
      ->capture_default_str()->check(CLI::Range(0.1, 1e6));
  tune->add_option("--json", options->json, "Write per-kernel results (for bench/plot_kernels.py) to this file");
  tune->callback([options, &action] {
    action = [options] {
      auto start = std::chrono::steady_clock::now();
      Graph graph = compile_graph(read_model_file(options->model));
      TargetInfo target = resolve_target(options->target);
      if (!target.runs_here)
        throw UserError(SourceLoc{"--target", 0, 0},
                        fmt::format("target '{}' does not run on this machine; tune where it runs", options->target));
      std::vector<std::string> autoschedulers;
      for (const std::string& name : options->autoschedulers) {
        if (name == "none") continue;
        if (name != "Mullapudi2016" && name != "Li2018" && name != "Adams2019")
          throw UserError(SourceLoc{"--autoschedulers", 0, 0},
                          fmt::format("unknown autoscheduler '{}'; expected Mullapudi2016, Li2018, Adams2019 or none", name));
        autoschedulers.push_back(name);
      }
      if (options->threads > 0) setenv("HL_NUM_THREADS", std::to_string(options->threads).c_str(), 1);
      // Adams2019 searches with a beam; a beam of 1 bounds its time to seconds per kernel.
      setenv("HL_BEAM_SIZE", "1", 0);
      int batch = int(options->batch_size > 0 ? options->batch_size : graph.train.batch_size);
      TuneOptions tune;
      tune.start = start;
      tune.budget = options->budget;
      tune.batch = batch;
      tune.repetitions = options->repetitions;
      tune.candidate_timeout = options->candidate_timeout;
      tune.autoschedulers = autoschedulers;
      tune.json = options->json;
      tune.progress_in_place = isatty(STDOUT_FILENO) != 0;  // a terminal: one line, rewritten
      tune.progress_columns = terminal_columns(STDOUT_FILENO, 150);
      return tune_kernels(graph, target, tune, std::cout, std::cerr);
    };
  });
}

}  // namespace cnnc
