// cnnc import MODEL.onnx [-o MODEL.yaml] [--weights W.safetensors]: an ONNX network as a cnnc
// model (YAML) and its weights (safetensors, as cnnc train writes them).
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "driver/commands.h"
#include "driver/load_model.h"
#include "graph/pipeline.h"
#include "graph/print.h"
#include "onnx/onnx_import.h"
#include "support/text.h"
#include "weights.h"

namespace cnnc {

void add_import_command(CLI::App& app, CommandAction& action) {
  struct Options {
    std::string model, output, weights;
    bool verbose = false, quiet = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* import = app.add_subcommand(
      "import", "Convert an ONNX network (opsets 1-17, from torch.onnx.export or tf2onnx) to a cnnc model and "
                "weights (docs/onnx.md)");
  import->add_option("model", options->model, "ONNX file (.onnx)")->required();
  import->add_option("-o,--output", options->output, "YAML file to write (default: print the model to stdout)");
  import->add_option("-w,--weights", options->weights,
                     "Also write the network's weights to this safetensors file (cnnc's layouts, for --weights)");
  import->add_flag("-v,--verbose", options->verbose, "List every fold the importer made (Pad into padding, ...)");
  import->add_flag("-q,--quiet", options->quiet, "No summary on stderr");
  import->callback([options, &action] {
    action = [options] {
      OnnxImport imported = import_onnx_file(options->model);
      Graph graph = compile_graph(imported.spec);  // the same checks as any model
      if (options->output.empty()) {
        std::cout << imported.yaml;
      } else {
        std::ofstream out(options->output, std::ios::binary);
        out << imported.yaml;
        out.close();
        if (!out) throw UserError(SourceLoc{options->output, 0, 0}, "cannot write the model file");
      }
      if (!options->weights.empty()) {
        std::map<std::string, rt::Tensor> tensors = as_tensors(imported.weights);
        std::map<std::string, const rt::Tensor*> pointers;
        for (const auto& [name, tensor] : tensors) pointers[name] = &tensor;
        rt::save_safetensors(options->weights, pointers, {{"format", "cnnc-weights-1"}, {"model", graph.name}});
      }
      if (options->verbose)
        for (const std::string& note : imported.notes) std::cerr << "  " << note << "\n";
      if (!options->quiet)
        std::cerr << fmt::format("Imported {} (opset {}): {}, {} {}{}{}\n", options->model, imported.opset,
                                 plural(int64_t(imported.spec.layers.size()), "layer"),
                                 with_commas(graph.total_params()), plural_noun(graph.total_params(), "parameter"),
                                 options->output.empty() ? "" : "; model in " + options->output,
                                 options->weights.empty() ? "" : "; weights in " + options->weights);
      return 0;
    };
  });
}

}  // namespace cnnc
