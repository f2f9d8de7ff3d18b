// cnnc build MODEL.yaml --target T -o DIR: compile a model into a package.
#include <unistd.h>

#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "codegen/package.h"
#include "codegen/target.h"
#include "driver/commands.h"
#include "driver/load_model.h"
#include "frontend/parse_model.h"
#include "graph/pipeline.h"

namespace cnnc {

void add_build_command(CLI::App& app, CommandAction& action) {
  struct Options {
    std::string model;
    std::string target = "host";
    std::string output;
    std::string dump_after;
    std::string name;
    bool no_cache = false;
    bool no_tuning = false;
    bool quiet = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* build = app.add_subcommand(
      "build", "Compile a model into a package: kernels.a, kernels.so, <name>.h (C API) and manifest.json");
  build->add_option("model", options->model, "Model file (YAML, or ONNX: .onnx)")->required();
  build->add_option("-t,--target", options->target,
                    fmt::format("Target: {}, or a Halide target string", fmt::join(known_target_names(), ", ")))
      ->capture_default_str();
  build->add_option("-o,--output", options->output,
                    "Output directory (default: generated/<model>/<target>)");
  build->add_option("--name", options->name,
                    "C prefix of the package's symbols and header (default: the model's name:)");
  std::vector<std::string> passes = pass_names();
  passes.push_back("plan-kernels");  // the package build's first step (codegen/plan_kernels.h)
  passes.push_back("all");
  build->add_option("--dump-after", options->dump_after,
                    fmt::format("Print the graph IR after this pass, or the kernels planned ({})", fmt::join(passes, ", ")))
      ->check(CLI::IsMember(passes));
  build->add_flag("--no-cache", options->no_cache,
                  "Compile even if the cache ($CNNC_CACHE, default ~/.cache/cnnc) has this package");
  build->add_flag("--no-tuning", options->no_tuning,
                  "Use the default schedules, ignoring the tuning database ($CNNC_CACHE/tuning.sqlite, from cnnc tune)");
  build->add_flag("-q,--quiet", options->quiet, "Print only errors");
  build->callback([options, &action] {
    action = [options] {
      ModelSpec model = read_model_file(options->model);
      if (!options->name.empty()) {
        if (!is_valid_identifier(options->name) || is_reserved_model_name(options->name))
          throw UserError(SourceLoc{"--name", 0, 0},
                          fmt::format("'{}' is not a valid name; use letters, digits and '_' (not first a digit), "
                                      "not starting with 'halide'",
                                      options->name));
        model.name = options->name;
      }
      PipelineOptions pipeline;
      pipeline.dump_after = options->dump_after;
      pipeline.dump = &std::cout;
      Graph graph = compile_graph(model, pipeline);
      for (const std::string& warning : graph.warnings) std::cerr << warning << "\n";
      BuildOptions build;
      build.target = options->target;
      build.output_dir = options->output.empty() ? fmt::format("generated/{}/{}", graph.name, options->target)
                                                 : options->output;
      build.use_cache = !options->no_cache;
      build.use_tuning = !options->no_tuning;
      build.log = options->quiet ? nullptr : &std::cerr;
      build.log_in_place = isatty(STDERR_FILENO) != 0;  // the kernel being compiled, on one line
      if (options->dump_after == "plan-kernels" || options->dump_after == "all") build.dump_kernel_plan = &std::cout;
      PackageResult result = build_package(graph, build);
      if (!options->quiet)
        std::cout << fmt::format("{}: package for {} in {} ({}, {:.2f} s)\n", options->model, options->target,
                                 result.dir, result.from_cache ? "cached" : "compiled", result.seconds);
      return 0;
    };
  });
}

}  // namespace cnnc
