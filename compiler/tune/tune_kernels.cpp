// The tuning loop of `cnnc tune` (see tune_kernels.h).
#include "tune/tune_kernels.h"

#include "codegen/plan.h"

#include <algorithm>
#include <cmath>
#include <csignal>
#include <fstream>
#include <map>
#include <optional>
#include <ostream>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "codegen/child_timing.h"
#include "codegen/codegen.h"
#include "codegen/package.h"
#include "support/text.h"
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

int tune_kernels(const Graph& graph, const TargetInfo& target, const TuneOptions& options, std::ostream& out,
                 std::ostream& err) {
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - options.start).count(); };
  const std::vector<std::string>& autoschedulers = options.autoschedulers;
  int batch = options.batch;

  // Every kernel of the package, as cnnc build plans it (make_plan: the optimizers' size is the
  // parameter block's, padding between tensors included): inference, then training; one entry
  // per signature.
  Plan plan = make_plan(graph, target.gpu);
  std::vector<KernelInfo> kernels = plan.kernels;
  for (const KernelInfo& kernel : plan.training)
    if (!kernel.reuses_inference_kernel) kernels.push_back(kernel);
  std::vector<std::pair<KernelInfo, std::string>> work = tuning_order(graph, kernels);  // the most work first

  TuningDb db(TuningDb::default_path(cache_directory()));
  std::string halide = halide_version();
  out << fmt::format("Tuning {} of {} for {} at batch {} (budget {:.0f} s; database {})\n",
                     plural(int64_t(work.size()), "kernel"), graph.name, target.name, batch, options.budget, db.path())
      << std::flush;
  std::signal(SIGINT, on_interrupt);
  auto stop = [] { return interrupted != 0; };
  // A candidate may take --candidate-timeout, at most half the budget, and no more than what is
  // left of the budget. Stopped by the budget (not its own limit), it is not rejected: the
  // next run measures it, early enough (after its kernel's default) to have its whole limit.
  double candidate_cap = std::min(options.candidate_timeout, options.budget / 2);
  auto time_limit = [&] { return std::min(candidate_cap, options.budget - elapsed()); };
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
    // Each candidate's latest measurement, as TuningDb::best counts them.
    for (const Measurement& m : db.measurements(signature, target.halide, halide)) measured[m.candidate] = m;
    bool done = db.is_done(signature, target.halide, halide);
    // On a terminal, one line rewritten in place: the kernel, what is being measured, the best
    // so far against the default, the time spent and what is left of the budget.
    auto fastest_valid = [&]() -> const Measurement* {
      const Measurement* fastest = nullptr;
      for (const auto& [text, m] : measured)
        if (m.valid && (!fastest || m.seconds < fastest->seconds)) fastest = &m;
      return fastest;
    };
    auto show = [&](const std::string& step, const std::string& candidate) {
      if (!options.progress_in_place) return;
      std::string best = "best: none yet";
      auto reference_it = measured.find("default");
      const Measurement* fastest = fastest_valid();
      if (fastest && reference_it != measured.end() && reference_it->second.valid)
        best = fmt::format("best {:.3f} ms, {:.2f}x the default", fastest->seconds * 1e3,
                           reference_it->second.seconds / std::max(1e-12, fastest->seconds));
      double spent = elapsed();
      std::string line = fmt::format("{} {} | {} | {} spent, {} left | {}", label, step, best, clock_duration(spent),
                                     clock_duration(options.budget - spent), candidate);
      out << "\r\033[K" << fit_line(line, options.progress_columns) << std::flush;
    };
    // The default's outputs are the reference every candidate is checked against.
    KernelTiming reference;
    if (!done) {
      if (interrupted || elapsed() > options.budget) {
        complete = false;
        break;
      }
      kernel.knobs = ScheduleKnobs{};
      show(fmt::format("candidate 1/{}", candidates.size()), "default (the reference)");
      double limit = time_limit();
      ChildTiming child = time_kernel_in_child(graph, kernel, target, batch, options.repetitions, kCheckBatches, limit,
                                               stop, test_fault_for(kernel.function, 1));
      if (child.interrupted || (child.timed_out && limit < candidate_cap)) {
        complete = false;
        break;
      }
      if (child.timed_out) {
        // Not a fault of the default schedule: the limit (half the budget at most) is too
        // short to compile and time it here. Nothing is recorded; a longer run tunes it.
        if (options.progress_in_place) out << "\r\033[K" << std::flush;  // (the same terminal, likely)
        err << fmt::format("{}: the default schedule needs more than the {:.1f} s a candidate may take; "
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
    // Each candidate is timed in alternation with the default schedule, in the same child process
    // (time_kernel's paired timing): what is recorded is their ratio, on the scale of the default's
    // recorded time. Timed in processes of their own, seconds apart, the same kernel's times moved
    // by up to 1.6x here with other tenants' load (a candidate once measured 1.79x the default that
    // was 1.08x in alternation and in the network); alternating, the default against itself
    // agreed within 3% (20-25 repetitions). The default is compiled once in this process, without
    // running it, and every candidate's child inherits it.
    std::shared_ptr<const CompiledBaseline> baseline;
    auto compile_default = [&](const std::string& step) {
      if (baseline) return;
      KernelInfo reference_kernel = kernel;
      reference_kernel.knobs = ScheduleKnobs{};
      show(step, "compiling the default to time candidates against");
      baseline = compile_baseline(graph, reference_kernel, target);
    };
    // `knobs` timed in its child against the default; nullopt where the run must stop (Ctrl-C, or
    // a limit cut short by the budget: not the candidate's fault, nothing is recorded).
    auto time_against_default = [&](const ScheduleKnobs& knobs, InjectedFault fault) -> std::optional<ChildTiming> {
      kernel.knobs = knobs;
      double limit = time_limit();
      ChildTiming child = time_kernel_in_child(graph, kernel, target, batch, options.repetitions, kCheckBatches, limit,
                                               stop, fault, baseline.get());
      if (child.interrupted || (child.timed_out && limit < candidate_cap)) return std::nullopt;
      return child;
    };
    // A candidate's time on the scale of the default's recorded one.
    auto on_default_scale = [&](const KernelTiming& timing) {
      return timing.seconds / timing.baseline_seconds * measured.at("default").seconds;
    };
    size_t index = 0;
    for (const ScheduleKnobs& knobs : candidates) {
      ++index;
      std::string text = knobs.str();
      if (done || measured.count(text)) continue;
      if (interrupted || elapsed() > options.budget) {
        complete = false;
        break;
      }
      compile_default(fmt::format("candidate {}/{}", index, candidates.size()));
      Measurement m{signature, target.halide, halide, text, knobs.autoscheduler.empty() ? "tuned" : "autoscheduler", 0,
                    false, ""};
      show(fmt::format("candidate {}/{}", index, candidates.size()), text);
      std::optional<ChildTiming> child = time_against_default(knobs, test_fault_for(kernel.function, index));
      if (!child) {
        complete = false;  // the next run measures it
        break;
      }
      const KernelTiming& timing = child->timing;
      if (!timing.ok) {
        // A child that crashed or ran out of time says so itself ("crashed: killed by SIGILL ...").
        bool child_failed = timing.error.rfind("crashed: ", 0) == 0 || child->timed_out;
        m.note = (child_failed ? "" : "failed: ") + timing.error.substr(0, 300);
      } else if (std::string difference = compare_outputs(reference, timing); !difference.empty()) {
        m.note = difference;
        m.seconds = on_default_scale(timing);
      } else {
        m.valid = true;
        m.note = "";
        m.seconds = on_default_scale(timing);
      }
      db.record(m);
      measured[text] = m;
    }
    // The winner timed again, and that timing replaces its first (TuningDb::best counts each
    // candidate's latest): the fastest of dozens of candidates timed once each is the one whose
    // timing the noise favoured most, so it looked faster than it is (dilated_swish's forward
    // Winograd kernels: 1.04-1.09x, then 0.99-1.03x). Then whichever is fastest, until the
    // fastest has been timed twice, at most six times per kernel (dilated_swish's b3_conv2d_1:
    // three winners in a row fell from 1.15x to 0.94-0.98x the default when timed again).
    std::set<std::string> confirmed;
    while (!done && complete && confirmed.size() < 6) {
      const Measurement* fastest = fastest_valid();
      if (!fastest || fastest->candidate == "default" || confirmed.count(fastest->candidate)) break;
      if (interrupted || elapsed() > options.budget) {
        complete = false;
        break;
      }
      std::string text = fastest->candidate;
      Measurement m = *fastest;
      confirmed.insert(text);
      compile_default("confirming the best");
      show("timing the best again", text);
      std::optional<ChildTiming> again = time_against_default(ScheduleKnobs::parse(text), InjectedFault::None);
      if (!again) {
        complete = false;
        break;
      }
      const KernelTiming& timing = again->timing;
      std::string problem = timing.ok ? compare_outputs(reference, timing) : timing.error;
      m.valid = timing.ok && problem.empty() && timing.baseline_seconds > 0;
      m.seconds = m.valid ? on_default_scale(timing) : 0;
      m.note = m.valid ? "" : "failed when timed again: " + problem.substr(0, 280);
      db.record(m);
      measured[text] = m;
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
    if (!options.progress_in_place)
      out << fmt::format("{}: {}{} ({:.3f} ms, {:.2f}x the default)\n", label, done ? "tuned before; " : "",
                         entry["tuned_candidate"].get<std::string>(), entry["tuned_ms"].get<double>(),
                         entry["default_ms"].get<double>() / std::max(1e-12, entry["tuned_ms"].get<double>()))
          << std::flush;
    if (!complete) break;
  }
  std::signal(SIGINT, SIG_DFL);
  if (options.progress_in_place) out << "\r\033[K" << std::flush;
  // The table: every kernel seen in this run, default against the best found.
  if (!report["kernels"].empty()) {
    out << fmt::format("{:<44} {:>10} {:>10} {:>8}  {}\n", "kernel", "default ms", "tuned ms", "speedup", "schedule");
    for (const auto& entry : report["kernels"]) {
      double default_ms = entry["default_ms"].get<double>(), tuned_ms = entry["tuned_ms"].get<double>();
      out << fmt::format("{:<44} {:>10.4f} {:>10.4f} {:>7.2f}x  {}\n", entry["name"].get<std::string>(), default_ms,
                         tuned_ms, tuned_ms > 0 ? default_ms / tuned_ms : 1.0, entry["tuned_candidate"].get<std::string>());
    }
  }
  if (!options.json.empty()) std::ofstream(options.json) << report.dump(2) << "\n";
  // Every rejected candidate of the kernels seen in this run, this run's and earlier runs'.
  if (!rejected_rows.empty())
    out << fmt::format("Rejected candidates (not used by cnnc build):\n  {:<28} {:<40} {}\n", "kernel", "candidate",
                       "reason")
        << fmt::format("{}\n", fmt::join(rejected_rows, "\n"));
  std::string rejected = fmt::format("{} of {} candidates measured rejected", rejected_total, measured_total);
  if (!complete) {
    out << fmt::format("Stopped after {:.0f} s ({}; {}); run cnnc tune again to continue where it stopped\n",
                       elapsed(), interrupted ? "interrupted" : "budget spent", rejected);
    return interrupted ? 130 : 0;
  }
  double total_default = 0, total_tuned = 0;
  for (const auto& entry : report["kernels"]) {
    total_default += entry["default_ms"].get<double>();
    total_tuned += entry["tuned_ms"].get<double>();
  }
  out << fmt::format("Done in {:.0f} s: all kernels together {:.3f} ms tuned vs {:.3f} ms default ({:.2f}x); {}; "
                     "cnnc build now uses the tuned schedules\n",
                     elapsed(), total_tuned, total_default, total_tuned > 0 ? total_default / total_tuned : 1.0,
                     rejected);
  return 0;
}

}  // namespace cnnc
