// cnnc export MODEL.yaml [--weights W] [--seed N] -o model.onnx: the model and its weights as ONNX.
#include <iostream>
#include <map>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "driver/commands.h"
#include "driver/load_model.h"
#include "onnx/onnx_export.h"
#include "support/text.h"
#include "weights.h"

namespace cnnc {

void add_export_command(CLI::App& app, CommandAction& action) {
  struct Options {
    std::string model;
    std::string weights;
    std::string output;
    uint64_t seed = 0;
    bool seed_given = false;
    bool quiet = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand(
      "export", "Write the model and its weights as an ONNX model (opset 14, NCHW input and output)");
  command->add_option("model", options->model, "Model file (YAML, or ONNX: re-exported with its own weights)")->required();
  command->add_option("-o,--output", options->output, "ONNX file to write (e.g. model.onnx)")->required();
  command->add_option("-w,--weights", options->weights,
                      "Weights (safetensors, from cnnc train); without it, Keras-default initial weights from --seed");
  command->add_option("--seed", options->seed, "Seed of the initial weights when no --weights is given (default: "
                                               "the model's train: seed)");
  command->add_flag("-q,--quiet", options->quiet, "No progress messages");
  command->callback([options, command, &action] {
    options->seed_given = command->count("--seed") > 0;
    action = [options] {
      LoadedModel loaded = load_model(options->model, "host", options->quiet);
      rt::Network network(loaded.package);
      // --weights, else an ONNX model's own weights, else Keras-default initial ones from the seed.
      InitialWeights source = initial_weights(network, loaded, options->weights,
                                              options->seed_given ? options->seed : uint64_t(loaded.graph.train.seed));
      if (source == InitialWeights::Seed && !options->quiet)
        std::cerr << "cnnc: no --weights: exporting untrained initial weights\n";
      std::map<std::string, ImportedTensor> weights;
      for (const rt::TensorInfo& info : loaded.package->params()) {
        const float* data = network.param(info.name);
        ImportedTensor& tensor = weights[info.name];
        tensor.shape = info.shape;
        tensor.data.assign(data, data + info.elements());
      }
      int64_t nodes = export_onnx_file(loaded.graph, weights, options->output);
      std::cout << fmt::format("Wrote {} ({}, opset 14)\n", options->output, plural(nodes, "node"));
      return 0;
    };
  });
}

}  // namespace cnnc
