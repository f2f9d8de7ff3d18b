// Inference benchmark: per-kernel time, GFLOP/s and % of this machine's measured FMA peak, and
// end-to-end images/s at batch 256 and latency at batch 1. Best of N after warm-up.
//   bench_inference [--model models/mnist_cnn.yaml] [--threads 2] [--json FILE]
// bench/compare_pytorch.py runs it next to PyTorch and prints the ratios.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "codegen/package.h"
#include "frontend/parse_model.h"
#include "graph/pipeline.h"
#include "package.h"
#include "peak_fma.h"
#include "weights.h"

using namespace cnnc;

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cnnc inference benchmark"};
  std::string model_path = "models/mnist_cnn.yaml", json_path, target = "host";
  int threads = 2, repetitions = 5, latency_runs = 1000, batches = 20;
  app.add_option("--model", model_path, "Model file")->capture_default_str();
  app.add_option("--target", target, "Target (must run here)")->capture_default_str();
  app.add_option("--threads", threads, "Threads")->capture_default_str();
  app.add_option("--repetitions", repetitions, "Repetitions of each measurement (best is reported)")->capture_default_str();
  app.add_option("--latency-runs", latency_runs, "Batch-1 runs per repetition (median is taken)")->capture_default_str();
  app.add_option("--batches", batches, "Batch-256 forward calls per repetition")->capture_default_str();
  app.add_option("--json", json_path, "Also write the results as JSON");
  CLI11_PARSE(app, argc, argv);

  try {
    Graph graph = compile_graph(parse_model_file(model_path));
    BuildOptions options;
    options.target = target;
    PackageResult built = build_package(graph, options);
    auto package = rt::Package::open(built.dir, model_fingerprint(graph));
    package->set_threads(threads);
    rt::Network network(package);
    rt::init_params(network, 1);

    // The machine is shared: measure the peak before and after the kernels and keep the best.
    double peak = measure_fma_peak_gflops(threads);

    // Batch 256: per kernel (best of every call) and end to end (best repetition).
    const int big = 256;
    std::vector<float> input(size_t(big * package->input_elements()), 0.5f);
    for (size_t i = 0; i < input.size(); ++i) input[i] = float((i * 2654435761u) % 1000) / 1000.0f;
    std::vector<float> output(static_cast<size_t>(big * package->output_elements()));
    for (int i = 0; i < 3; ++i) network.forward(input.data(), big, output.data());  // warm-up
    std::vector<double> kernel_best(size_t(network.kernel_count()), 1e30);
    double batch_best = 1e30;
    for (int r = 0; r < repetitions; ++r) {
      auto start = std::chrono::steady_clock::now();
      for (int b = 0; b < batches; ++b) {
        network.forward(input.data(), big, output.data());
        for (int k = 0; k < network.kernel_count(); ++k)
          kernel_best[size_t(k)] = std::min(kernel_best[size_t(k)], network.kernel_seconds(k));
      }
      batch_best = std::min(batch_best, seconds_since(start) / batches);
    }

    // Batch 1 latency: median of each repetition, best repetition.
    for (int i = 0; i < 100; ++i) network.forward(input.data(), 1, output.data());
    double latency_best = 1e30;
    for (int r = 0; r < repetitions; ++r) {
      std::vector<double> times;
      for (int i = 0; i < latency_runs; ++i) {
        auto start = std::chrono::steady_clock::now();
        network.forward(input.data() + (i % big) * package->input_elements(), 1, output.data());
        times.push_back(seconds_since(start));
      }
      std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
      latency_best = std::min(latency_best, times[times.size() / 2]);
    }

    peak = std::max(peak, measure_fma_peak_gflops(threads));
    std::cout << fmt::format("model {} ({}), target {}, {} threads, FMA peak measured {:.1f} GFLOP/s\n", graph.name,
                             model_path, target, threads, peak);
    nlohmann::json result;
    result["model"] = graph.name;
    result["target"] = target;
    result["threads"] = threads;
    result["fma_peak_gflops"] = peak;
    std::cout << fmt::format("\n{:<34} {:>10} {:>10} {:>9}\n", "kernel (batch 256)", "ms", "GFLOP/s", "% peak");
    double total_flops = 0;
    for (int k = 0; k < network.kernel_count(); ++k) {
      std::string name = network.kernel_name(k);
      const auto& nodes = package->nodes();
      int64_t flops = 0;
      for (const auto& node : nodes)
        if (name.size() > node.name.size() && name.compare(name.size() - node.name.size(), node.name.size(), node.name) == 0 &&
            name[name.size() - node.name.size() - 1] == '_')
          flops = std::max(flops, node.flops);
      // The kernel's FLOPs: its node's own op; fused ops are counted on their original layers.
      double kernel_flops = double(flops) * big;
      total_flops += kernel_flops;
      double seconds = kernel_best[size_t(k)];
      double gflops = kernel_flops / seconds / 1e9;
      std::cout << fmt::format("{:<34} {:>10.3f} {:>10.1f} {:>8.1f}%\n", name, seconds * 1e3, gflops,
                               peak > 0 ? 100 * gflops / peak : 0.0);
      result["kernels"].push_back({{"name", name}, {"ms", seconds * 1e3}, {"gflops", gflops},
                                   {"percent_of_peak", peak > 0 ? 100 * gflops / peak : 0.0}});
    }
    double images_per_second = big / batch_best;
    std::cout << fmt::format("\ninference batch 256: {:.0f} images/s ({:.2f} ms per batch, {:.1f} GFLOP/s, {:.1f}% of peak)\n",
                             images_per_second, batch_best * 1e3, total_flops / batch_best / 1e9,
                             peak > 0 ? 100 * total_flops / batch_best / 1e9 / peak : 0.0);
    std::cout << fmt::format("inference batch 1: median latency {:.4f} ms (best of {} repetitions of {} runs)\n",
                             latency_best * 1e3, repetitions, latency_runs);
    result["infer_images_per_second_batch256"] = images_per_second;
    result["infer_latency_ms_batch1"] = latency_best * 1e3;
    if (!json_path.empty()) std::ofstream(json_path) << result.dump(2) << "\n";
    return 0;
  } catch (const UserError& error) {
    std::cerr << error.formatted() << "\n";
    return 1;
  }
}
