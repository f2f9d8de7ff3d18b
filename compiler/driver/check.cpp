// cnnc check MODEL.yaml: parse, build and validate a model, then print its summary.
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "codegen/plan.h"
#include "driver/commands.h"
#include "driver/load_model.h"
#include "frontend/parse_model.h"
#include "graph/passes.h"
#include "graph/pipeline.h"
#include "graph/print.h"

namespace cnnc {

void add_check_command(CLI::App& app, CommandAction& action) {
  struct Options {
    std::string model;
    std::string dump_after;
    bool quiet = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* check = app.add_subcommand("check", "Validate a model file and print its summary (layers, shapes, "
                                                "parameters, FLOPs, memory)");
  check->add_option("model", options->model, "Model file (YAML, or ONNX: .onnx), e.g. models/mnist_cnn.yaml")->required();
  // check stops before the code-generation passes; `cnnc build --dump-after` shows those. The
  // kernels planned are the exception: planning needs no Halide, so check can show them too.
  check->add_option("--dump-after", options->dump_after,
                    "Print the graph IR after this pass (build-graph, infer-shapes, or all), or the kernels a "
                    "package would run (plan-kernels: fuses a copy of the graph)")
      ->check(CLI::IsMember({"build-graph", "infer-shapes", "plan-kernels", "all"}));
  check->add_flag("-q,--quiet", options->quiet, "Print nothing on success; only errors and the exit status");
  check->callback([options, &action] {
    action = [options] {
      ModelSpec model = read_model_file(options->model);
      PipelineOptions pipeline;
      pipeline.dump_after = options->dump_after;
      pipeline.dump = &std::cout;
      pipeline.fuse = false;
      Graph graph = compile_graph(model, pipeline);
      for (const std::string& warning : graph.warnings) std::cerr << warning << "\n";
      if (options->dump_after == "plan-kernels") {
        Graph fused = graph;
        fuse_kernels(fused);
        std::cout << format_kernel_plan(make_plan(fused, /*gpu=*/false));
      }
      if (!options->quiet) std::cout << format_summary(graph);
      return 0;
    };
  });
}

}  // namespace cnnc
