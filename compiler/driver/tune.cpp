// cnnc tune MODEL.yaml: measures each kernel's schedule candidates on this machine (the explicit
// search space of schedule_space, plus Halide's autoschedulers), checks each against the
// default schedule's output, and keeps every measurement in the tuning database. cnnc build then
// uses the fastest valid schedule of each kernel. Interrupted runs resume where they stopped.
//
// Generated code never runs in this process: every candidate, and the default schedule whose
// outputs are the reference, is compiled and timed in a child process (child_timing.h) with a
// time limit, so that a schedule that traps, crashes, writes outside its output or loops is
// recorded as rejected with its reason and tuning goes on.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "codegen/child_timing.h"
#include "codegen/codegen.h"
#include "codegen/package.h"
#include "driver/commands.h"
#include "frontend/parse_model.h"
#include "graph/pipeline.h"
#include "tune/tuning_db.h"

namespace cnnc {

namespace {

volatile std::sig_atomic_t interrupted = 0;
void on_interrupt(int) {
  interrupted = 1;
  std::signal(SIGINT, SIG_DFL);
}

// Besides the tuning batch, every candidate runs at these batch sizes (a package serves any),
// and its outputs there are checked too: an autoscheduler's schedule, made for the estimated
// batch, may split the batch dimension so that it needs at least the split factor.
const std::vector<int> kCheckBatches = {1, 7};

// Do a candidate's outputs agree with the default schedule's? Reductions may run in another
// order, so allow float rounding relative to the outputs' magnitude.
std::string compare_outputs(const KernelTiming& reference, const KernelTiming& candidate) {
  if (reference.outputs.size() != candidate.outputs.size()) return "a different number of outputs";
  for (size_t o = 0; o < reference.outputs.size(); ++o) {
    const std::vector<float>& a = reference.outputs[o];
    const std::vector<float>& b = candidate.outputs[o];
    if (a.size() != b.size()) return "outputs of another size";
    double scale = 1e-30;
    for (float v : a) scale = std::max(scale, double(std::fabs(v)));
    for (size_t i = 0; i < a.size(); ++i) {
      double error = std::fabs(double(a[i]) - double(b[i]));
      if (!(error <= 1e-5 + 1e-4 * scale))
        return fmt::format("output {} differs from the default schedule's at {}: {} vs {}", o, i, b[i], a[i]);
    }
  }
  return "";
}

}  // namespace

void add_tune_command(CLI::App& app, CommandAction& action) {
  struct Options {
    std::string model, target = "host", json;
    double budget = 600;
    int64_t batch_size = 0;
    int repetitions = 5, threads = 0;
    double candidate_timeout = 120;
    std::vector<std::string> autoschedulers = {"Mullapudi2016", "Li2018", "Adams2019"};
  };
  auto options = std::make_shared<Options>();
  CLI::App* tune = app.add_subcommand("tune", "Measure schedule candidates per kernel on this machine and keep the best "
                                              "in the tuning database ($CNNC_CACHE/tuning.sqlite)");
  tune->add_option("model", options->model, "Model file (YAML)")->required();
  tune->add_option("--target", options->target, "Target (must run on this machine)")->capture_default_str();
  tune->add_option("--budget", options->budget, "Seconds to spend at most; an unfinished run resumes next time")
      ->capture_default_str()->check(CLI::Range(1.0, 1e7));
  tune->add_option("--batch-size", options->batch_size, "Batch size to tune at (default: the model's train: batch_size)")
      ->check(CLI::Range(int64_t(1), int64_t(65536)));
  tune->add_option("--repetitions", options->repetitions, "Timed runs per candidate after a warm-up; the best counts")
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
      auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
      Graph graph = compile_graph(parse_model_file(options->model));
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

      // Every kernel of the package: inference, then training; one entry per signature.
      std::vector<KernelInfo> kernels = plan_kernels(graph);
      if (training_unsupported_reason(graph).empty())
        for (const KernelInfo& kernel : plan_training_kernels(graph, [&] {
               int64_t floats = 0;
               for (const Node& node : graph.nodes) floats += node.param_count();
               return floats;
             }()))
          if (!kernel.reuses_inference_kernel) kernels.push_back(kernel);
      std::map<std::string, bool> seen;
      std::vector<std::pair<KernelInfo, std::string>> work;
      for (const KernelInfo& kernel : kernels) {
        std::string signature = kernel_signature(graph, kernel);
        if (!seen[signature]) work.emplace_back(kernel, signature);
        seen[signature] = true;
      }

      TuningDb db(TuningDb::default_path(cache_directory()));
      std::string halide = halide_version();
      std::cout << fmt::format("Tuning {} kernels of {} for {} at batch {} (budget {:.0f} s; database {})\n", work.size(),
                               graph.name, target.name, batch, options->budget, db.path())
                << std::flush;
      std::signal(SIGINT, on_interrupt);
      auto stop = [] { return interrupted != 0; };
      // A candidate may take --candidate-timeout, at most half the budget, and no more than what is
      // left of the budget. Stopped by the budget (not its own limit), it is not rejected: the
      // next run measures it, early enough (after its kernel's default) to have its whole limit.
      double candidate_cap = std::min(options->candidate_timeout, options->budget / 2);
      auto time_limit = [&] { return std::min(candidate_cap, options->budget - elapsed()); };
      int rejected_total = 0, measured_total = 0;
      std::vector<std::string> rejected_rows;  // kernel, candidate, reason: the final table
      nlohmann::json report = {{"model", graph.name}, {"target", target.halide}, {"batch_size", batch}};
      report["kernels"] = nlohmann::json::array();
      bool complete = true;
      for (size_t w = 0; w < work.size(); ++w) {
        KernelInfo kernel = work[w].first;
        const std::string& signature = work[w].second;
        std::string label = fmt::format("[{}/{}] {}", w + 1, work.size(), kernel.function);
        nlohmann::json entry = {{"name", kernel.function}, {"signature", signature}};
        entry["candidates"] = nlohmann::json::array();
        std::vector<ScheduleKnobs> candidates = tuning_candidates(graph, kernel, target, autoschedulers);
        std::map<std::string, Measurement> measured;
        for (const Measurement& m : db.measurements(signature, target.halide, halide)) {
          auto it = measured.find(m.candidate);
          if (it == measured.end() || (m.valid && (!it->second.valid || m.seconds < it->second.seconds))) measured[m.candidate] = m;
        }
        bool done = db.is_done(signature, target.halide, halide);
        // The default's outputs are the reference every candidate is checked against.
        KernelTiming reference;
        if (!done) {
          if (interrupted || elapsed() > options->budget) {
            complete = false;
            break;
          }
          kernel.knobs = ScheduleKnobs{};
          double limit = time_limit();
          ChildTiming child = time_kernel_in_child(graph, kernel, target, batch, options->repetitions, kCheckBatches, limit,
                                                   stop, test_fault_for(kernel.function, 1));
          if (child.interrupted || (child.timed_out && limit < candidate_cap)) {
            complete = false;
            break;
          }
          if (child.timed_out) {
            // Not a fault of the default schedule: the limit (half the budget at most) is too
            // short to compile and time it here. Nothing is recorded; a longer run tunes it.
            std::cerr << fmt::format("{}: the default schedule needs more than the {:.1f} s a candidate may take; "
                                     "run with a larger --budget or --candidate-timeout\n",
                                     kernel.function, limit);
            complete = false;
            break;
          }
          reference = std::move(child.timing);
          if (!reference.ok)
            throw InternalError(fmt::format("{}: the default schedule fails: {}", kernel.function, reference.error));
          if (!measured.count("default")) {
            Measurement m{signature, target.halide, halide, "default", "default", reference.seconds, true, ""};
            db.record(m);
            measured["default"] = m;
          }
        }
        size_t index = 0;
        for (const ScheduleKnobs& knobs : candidates) {
          ++index;
          std::string text = knobs.str();
          if (done || measured.count(text)) continue;
          if (interrupted || elapsed() > options->budget) {
            complete = false;
            break;
          }
          Measurement m{signature, target.halide, halide, text, knobs.autoscheduler.empty() ? "tuned" : "autoscheduler", 0,
                        false, ""};
          kernel.knobs = knobs;
          double limit = time_limit();
          ChildTiming child = time_kernel_in_child(graph, kernel, target, batch, options->repetitions, kCheckBatches, limit,
                                                   stop, test_fault_for(kernel.function, index));
          if (child.interrupted || (child.timed_out && limit < candidate_cap)) {
            // Not the candidate's fault: nothing recorded, the next run measures it.
            complete = false;
            break;
          }
          const KernelTiming& timing = child.timing;
          if (!timing.ok) {
            // A child that crashed or ran out of time says so itself ("crashed: killed by SIGILL ...").
            bool child_failed = timing.error.rfind("crashed: ", 0) == 0 || child.timed_out;
            m.note = (child_failed ? "" : "failed: ") + timing.error.substr(0, 300);
          } else if (std::string difference = compare_outputs(reference, timing); !difference.empty()) {
            m.note = difference;
            m.seconds = timing.seconds;
          } else {
            m.valid = true;
            m.note = "";
            m.seconds = timing.seconds;
          }
          db.record(m);
          measured[text] = m;
          Measurement best = db.best(signature, target.halide, halide).value();
          std::cout << fmt::format("{} candidate {}/{} {}: {}; best {:.3f} ms ({}), {:.2f}x the default\n", label, index,
                                   candidates.size(), text,
                                   m.valid ? fmt::format("{:.3f} ms", m.seconds * 1e3) : "rejected: " + m.note,
                                   best.seconds * 1e3, best.candidate, measured["default"].seconds / best.seconds)
                    << std::flush;
        }
        if (!done && complete) db.mark_done(signature, target.halide, halide);
        std::optional<Measurement> best = db.best(signature, target.halide, halide);
        double default_seconds = measured.count("default") ? measured["default"].seconds : 0;
        entry["default_ms"] = default_seconds * 1e3;
        entry["tuned_ms"] = best ? best->seconds * 1e3 : default_seconds * 1e3;
        entry["tuned_candidate"] = best ? best->candidate : "default";
        for (auto& [text, m] : measured)
          if (text.rfind("autoscheduler=", 0) == 0)
            entry["candidates"].push_back({{"candidate", text}, {"ms", m.seconds * 1e3}, {"valid", m.valid}, {"note", m.note}});
        // The rejected ones in the order of the search space (then any the space no longer has).
        entry["rejected"] = nlohmann::json::array();
        std::vector<std::string> order;
        for (const ScheduleKnobs& knobs : candidates) order.push_back(knobs.str());
        for (auto& [text, m] : measured)
          if (std::find(order.begin(), order.end(), text) == order.end()) order.push_back(text);
        for (const std::string& text : order) {
          auto it = measured.find(text);
          if (it == measured.end()) continue;
          ++measured_total;
          if (it->second.valid) continue;
          ++rejected_total;
          entry["rejected"].push_back({{"candidate", text}, {"reason", it->second.note}});
          rejected_rows.push_back(fmt::format("  {:<28} {:<40} {}", kernel.function, text, it->second.note));
        }
        report["kernels"].push_back(entry);
        if (done) std::cout << fmt::format("{}: tuned before; best {} ({:.3f} ms)\n", label, entry["tuned_candidate"].get<std::string>(),
                                           entry["tuned_ms"].get<double>());
        if (!complete) break;
      }
      std::signal(SIGINT, SIG_DFL);
      if (!options->json.empty()) std::ofstream(options->json) << report.dump(2) << "\n";
      // Every rejected candidate of the kernels seen in this run, this run's and earlier runs'.
      if (!rejected_rows.empty())
        std::cout << fmt::format("Rejected candidates (not used by cnnc build):\n  {:<28} {:<40} {}\n", "kernel", "candidate",
                                 "reason")
                  << fmt::format("{}\n", fmt::join(rejected_rows, "\n"));
      std::string rejected = fmt::format("{} of {} candidates measured rejected", rejected_total, measured_total);
      if (!complete) {
        std::cout << fmt::format("Stopped after {:.0f} s ({}; {}); run cnnc tune again to continue where it stopped\n",
                                 elapsed(), interrupted ? "interrupted" : "budget spent", rejected);
        return interrupted ? 130 : 0;
      }
      double total_default = 0, total_tuned = 0;
      for (const auto& entry : report["kernels"]) {
        total_default += entry["default_ms"].get<double>();
        total_tuned += entry["tuned_ms"].get<double>();
      }
      std::cout << fmt::format("Done in {:.0f} s: all kernels together {:.3f} ms tuned vs {:.3f} ms default ({:.2f}x); {}; "
                               "cnnc build now uses the tuned schedules\n",
                               elapsed(), total_tuned, total_default, total_tuned > 0 ? total_default / total_tuned : 1.0,
                               rejected);
      return 0;
    };
  });
}

}  // namespace cnnc
