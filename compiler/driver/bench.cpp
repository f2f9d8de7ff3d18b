// cnnc bench MODEL.yaml: per-kernel time, GFLOP/s and % of this machine's measured FMA peak;
// training images/s at the batch size; inference latency at batch 1 and images/s at batch 256.
// Best of N repetitions after warm-up (the machines are shared and noisy). --chart draws each
// kernel's time and % of the peak as an SVG bar chart (support/chart.h).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "driver/commands.h"
#include "driver/load_model.h"
#include "peak_fma.h"
#include "support/chart.h"
#include "support/text.h"
#include "weights.h"

namespace cnnc {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct KernelTime {
  std::string name;
  double seconds = 1e30;  // best seen
  int64_t flops = 0;      // per call: the layer's multiply-adds as written (x2), what the direct algorithm does
  int64_t executed = 0;   // per call: what the kernel's algorithm does (Winograd: fewer)
};

// Calls `run` `calls` times in each of `repetitions`: the best repetition's seconds per call.
// After every call, each of the `count` kernels' time (`seconds_of`) updates its best in
// `kernels`, which gets their names (`name_of`) and FLOPs per call at `batch` examples.
double time_calls(int repetitions, int calls, const std::function<void()>& run, int count,
                  const std::function<double(int)>& seconds_of, const std::function<std::string(int)>& name_of,
                  const rt::Package& package, int64_t batch, std::vector<KernelTime>& kernels) {
  kernels.assign(static_cast<size_t>(count), KernelTime{});
  double best = 1e30;
  for (int r = 0; r < repetitions; ++r) {
    auto start = std::chrono::steady_clock::now();
    for (int c = 0; c < calls; ++c) {
      run();
      for (int k = 0; k < count; ++k) kernels[size_t(k)].seconds = std::min(kernels[size_t(k)].seconds, seconds_of(k));
    }
    best = std::min(best, seconds_since(start) / calls);
  }
  for (int k = 0; k < count; ++k) {
    kernels[size_t(k)].name = name_of(k);
    kernels[size_t(k)].flops = package.kernel_flops(kernels[size_t(k)].name) * batch;
    kernels[size_t(k)].executed = package.kernel_executed_flops(kernels[size_t(k)].name) * batch;
  }
  return best;
}

// GFLOP/s and % of the peak count the layer's multiply-adds as written ("effective": what the
// direct algorithm does); where the kernel's algorithm executes other work (Winograd), its own
// rate follows as "executed".
void print_kernels(const std::string& title, const std::vector<KernelTime>& kernels, double peak, nlohmann::json& out) {
  std::cout << fmt::format("\n{:<40} {:>9} {:>9} {:>8} {:>10}\n", title, "ms", "GFLOP/s", "% peak", "executed");
  for (const KernelTime& kernel : kernels) {
    double gflops = kernel.flops > 0 ? double(kernel.flops) / kernel.seconds / 1e9 : 0;
    double executed = kernel.executed > 0 ? double(kernel.executed) / kernel.seconds / 1e9 : 0;
    double percent = peak > 0 ? 100 * gflops / peak : 0.0, executed_percent = peak > 0 ? 100 * executed / peak : 0.0;
    std::string differs = kernel.executed != kernel.flops ? fmt::format("{:>9.1f}%", executed_percent) : "";
    std::cout << fmt::format("{:<40} {:>9.3f} {:>9.1f} {:>7.1f}% {}\n", kernel.name, kernel.seconds * 1e3, gflops, percent,
                             differs);
    out.push_back({{"name", kernel.name}, {"ms", kernel.seconds * 1e3}, {"gflops", gflops}, {"percent_of_peak", percent},
                   {"executed_gflops", executed}, {"executed_percent_of_peak", executed_percent}});
  }
}

// The rows of the chart: each kernel's time, its effective % of the peak, and its executed %
// as a marker where the algorithm does other work (Winograd). No % where a kernel has no FLOPs
// counted (the optimizer update, "the rest").
chart::BarSection chart_section(const std::string& title, const std::vector<KernelTime>& kernels, double peak) {
  chart::BarSection section{title, {}};
  const double none = std::nan("");
  for (const KernelTime& kernel : kernels) {
    double percent = kernel.flops > 0 && peak > 0 ? 100 * double(kernel.flops) / kernel.seconds / 1e9 / peak : none;
    double executed = kernel.executed > 0 && kernel.executed != kernel.flops && peak > 0
                          ? 100 * double(kernel.executed) / kernel.seconds / 1e9 / peak
                          : none;
    section.rows.push_back({kernel.name, {kernel.seconds * 1e3, percent}, {none, executed}});
  }
  return section;
}

}  // namespace

void add_bench_command(CLI::App& app, CommandAction& action) {
  struct Options {
    std::string model, target = "host", json, chart;
    int64_t batch_size = 0;
    int threads = 2, repetitions = 5, steps = 100, latency_runs = 1000, batches = 20;
    bool no_tuning = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* bench = app.add_subcommand("bench", "Measure kernels, training and inference speed on this machine");
  bench->add_option("model", options->model, "Model file (YAML, or ONNX: .onnx)")->required();
  bench->add_option("--batch-size", options->batch_size, "Training batch size (default: the model's train: batch_size)")
      ->check(CLI::Range(int64_t(1), int64_t(65536)));
  bench->add_option("--threads", options->threads, "Threads (0: one per core)")->capture_default_str()->check(CLI::Range(0, 1024));
  bench->add_option("--target", options->target, "Target (must run on this machine)")->capture_default_str();
  bench->add_option("--repetitions", options->repetitions, "Repetitions of each measurement; the best is reported")
      ->capture_default_str()->check(CLI::Range(1, 1000));
  bench->add_option("--steps", options->steps, "Training steps per repetition")->capture_default_str()->check(CLI::Range(1, 1000000));
  bench->add_option("--latency-runs", options->latency_runs, "Batch-1 runs per repetition (their median is taken)")
      ->capture_default_str()->check(CLI::Range(1, 1000000));
  bench->add_option("--batches", options->batches, "Batch-256 forward calls per repetition")->capture_default_str()->check(CLI::Range(1, 100000));
  bench->add_flag("--no-tuning", options->no_tuning, "Use the default schedules, ignoring the tuning database");
  bench->add_option("--json", options->json,
                    "Write the results as JSON (train_images_per_second, infer_latency_ms_batch1, "
                    "infer_images_per_second_batch256, fma_peak_gflops, inference_kernels and training_kernels "
                    "with ms, percent_of_peak and executed_percent_of_peak, ...)");
  bench->add_option("--chart", options->chart,
                    "Draw each kernel's time and % of the FMA peak (inference and training kernels) as a bar chart "
                    "in this SVG file");
  bench->callback([options, &action] {
    action = [options] {
      if (!options->chart.empty()) chart::check_svg_path(options->chart);
      LoadedModel loaded = load_model(options->model, options->target, false, !options->no_tuning);
      rt::Package& package = *loaded.package;
      package.set_threads(options->threads);
      int threads = options->threads > 0 ? options->threads : int(std::thread::hardware_concurrency());
      rt::Network network(loaded.package);
      rt::init_params(network, 1);
      int64_t batch_size = options->batch_size > 0 ? options->batch_size : loaded.graph.train.batch_size;
      const int repetitions = options->repetitions;

      // The peak is measured before and after the kernels; the best is kept.
      double peak = measure_fma_peak_gflops(threads);
      std::mt19937 random(1);
      std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
      const int big = 256;
      std::vector<float> input(static_cast<size_t>(std::max<int64_t>(big, batch_size) * package.input_elements()));
      for (float& value : input) value = pixel(random);
      std::vector<float> output(static_cast<size_t>(big * package.output_elements()));

      // Inference at batch 256, per kernel and end to end.
      for (int i = 0; i < 3; ++i) network.forward(input.data(), big, output.data());
      std::vector<KernelTime> inference;
      double batch_best = time_calls(
          repetitions, options->batches, [&] { network.forward(input.data(), big, output.data()); },
          network.kernel_count(), [&](int k) { return network.kernel_seconds(k); },
          [&](int k) { return network.kernel_name(k); }, package, big, inference);

      // Inference at batch 1: median latency per repetition, best repetition.
      for (int i = 0; i < 100; ++i) network.forward(input.data(), 1, output.data());
      double latency_best = 1e30;
      for (int r = 0; r < repetitions; ++r) {
        std::vector<double> times;
        for (int i = 0; i < options->latency_runs; ++i) {
          auto start = std::chrono::steady_clock::now();
          network.forward(input.data() + (i % big) * package.input_elements(), 1, output.data());
          times.push_back(seconds_since(start));
        }
        std::nth_element(times.begin(), times.begin() + long(times.size() / 2), times.end());
        latency_best = std::min(latency_best, times[times.size() / 2]);
      }

      // Training at the batch size: steps on random data (the speed does not depend on it).
      double train_best = 0;
      std::vector<KernelTime> training;
      if (package.trainable()) {
        std::vector<int32_t> labels(static_cast<size_t>(batch_size));
        for (int32_t& label : labels) label = int32_t(random() % uint32_t(package.output_elements()));
        for (int i = 0; i < 10; ++i) network.train_step(input.data(), labels.data(), int(batch_size));
        // The optimizer update is timed as one more kernel (the last), then "the rest": what the
        // best step took beyond the kernels' best times (calls between kernels, and the spread
        // of each kernel's time, since the best step need not hold every kernel's best).
        int kernels = network.train_kernel_count();
        double step_best = time_calls(
            repetitions, options->steps, [&] { network.train_step(input.data(), labels.data(), int(batch_size)); },
            kernels + 1, [&](int k) { return k < kernels ? network.train_kernel_seconds(k) : network.optimizer_seconds(); },
            [&](int k) { return k < kernels ? std::string(network.train_kernel_name(k)) : std::string("(optimizer update)"); },
            package, batch_size, training);
        double in_kernels = 0;
        for (const KernelTime& kernel : training) in_kernels += kernel.seconds;
        training.push_back({"(the rest)", std::max(0.0, step_best - in_kernels), 0});
        train_best = double(batch_size) / step_best;
      }
      peak = std::max(peak, measure_fma_peak_gflops(threads));

      nlohmann::json result;
      result["model"] = loaded.graph.name;
      result["target"] = package.target();
      result["threads"] = threads;
      result["fma_peak_gflops"] = peak;
      result["train_batch_size"] = batch_size;
      result["schedules"] = options->no_tuning ? "default" : "tuned where the database has entries";
      std::cout << fmt::format("{} on {} with {}; FMA peak measured {:.1f} GFLOP/s\n", loaded.graph.name,
                               package.target(), plural(threads, "thread"), peak);
      print_kernels("inference kernel (batch 256)", inference, peak, result["inference_kernels"]);
      if (package.trainable())
        print_kernels(fmt::format("training kernel (batch {})", batch_size), training, peak, result["training_kernels"]);
      std::cout << "\n";
      if (package.trainable()) {
        std::cout << fmt::format("training, batch {}: {:.0f} images/s ({:.3f} ms per step)\n", batch_size, train_best,
                                 1e3 * double(batch_size) / train_best);
        result["train_images_per_second"] = train_best;
      } else {
        std::cout << fmt::format("training: not measured ({})\n", package.untrainable_reason());
        result["train_images_per_second"] = nullptr;
      }
      std::cout << fmt::format("inference, batch 256: {:.0f} images/s ({:.3f} ms per batch)\n", big / batch_best,
                               batch_best * 1e3);
      std::cout << fmt::format("inference, batch 1: median latency {:.4f} ms\n", latency_best * 1e3);
      std::cout << fmt::format("(best of {}: {}, {} of 256, {} each)\n", plural(repetitions, "repetition"),
                               plural(options->steps, "training step"), plural(options->batches, "batch", "batches"),
                               plural(options->latency_runs, "single image"));
      result["infer_images_per_second_batch256"] = big / batch_best;
      result["infer_latency_ms_batch1"] = latency_best * 1e3;
      if (!options->json.empty()) {
        std::ofstream out(options->json);
        out << result.dump(2) << "\n";
        if (!out) throw UserError(SourceLoc{options->json, 0, 0}, "cannot write the JSON file");
      }
      if (!options->chart.empty()) {
        std::vector<chart::BarSection> sections = {chart_section("inference kernels (batch 256)", inference, peak)};
        if (package.trainable())
          sections.push_back(chart_section(fmt::format("training kernels (batch {})", batch_size), training, peak));
        std::vector<chart::BarColumn> columns = {
            {"time (ms)", "#1f77b4", 3, "", ""},
            {"% of FMA peak (effective)", "#2f9e44", 1, "%",
             "executed % of peak (where the algorithm differs: Winograd)"}};
        std::string subtitle = fmt::format("{}, FMA peak {:.1f} GFLOP/s, best of {}; schedules: {}",
                                           plural(threads, "thread"), peak, plural(repetitions, "repetition"),
                                           result["schedules"].get<std::string>());
        chart::write_svg(options->chart,
                         chart::bar_chart_svg(fmt::format("{}: kernels on {}", loaded.graph.name, package.target()),
                                              subtitle, columns, sections));
        std::cout << fmt::format("Wrote the kernel chart to {}\n", options->chart);
      }
      return 0;
    };
  });
}

}  // namespace cnnc
