#include "driver/load_model.h"

#include <unistd.h>

#include <iostream>

#include <fmt/format.h>

#include "codegen/package.h"
#include "frontend/parse_model.h"
#include "graph/pipeline.h"
#include "weights.h"

namespace cnnc {

ModelSpec read_model_file(const std::string& path, std::shared_ptr<const OnnxImport>* imported) {
  if (!is_onnx_path(path)) return parse_model_file(path);
  auto result = std::make_shared<OnnxImport>(import_onnx_file(path));
  if (imported) *imported = result;
  return result->spec;
}

LoadedModel load_model(const std::string& model_path, const std::string& target, bool quiet, bool use_tuning) {
  LoadedModel loaded;
  loaded.graph = compile_graph(read_model_file(model_path, &loaded.onnx));
  if (!quiet)
    for (const std::string& warning : loaded.graph.warnings) std::cerr << warning << "\n";
  BuildOptions options;
  options.target = target;
  options.log = quiet ? nullptr : &std::cerr;
  options.log_in_place = isatty(STDERR_FILENO) != 0;
  options.use_tuning = use_tuning;
  PackageResult result = build_package(loaded.graph, options);
  loaded.package = rt::Package::open(result.dir, model_fingerprint(loaded.graph));
  return loaded;
}

std::map<std::string, rt::Tensor> as_tensors(const std::map<std::string, ImportedTensor>& weights) {
  std::map<std::string, rt::Tensor> tensors;
  for (const auto& [name, tensor] : weights) tensors[name] = rt::Tensor{tensor.shape, tensor.data};
  return tensors;
}

InitialWeights initial_weights(rt::Network& network, const LoadedModel& model, const std::string& weights_file,
                               uint64_t seed, std::vector<std::string>* classes) {
  std::vector<std::string> names;
  InitialWeights source = InitialWeights::Seed;
  if (!weights_file.empty()) {
    rt::load_weights(network, weights_file, &names);
    source = InitialWeights::File;
  } else if (model.onnx) {
    rt::set_params(network, as_tensors(model.onnx->weights), model.graph.file);
    source = InitialWeights::Onnx;
  } else {
    rt::init_params(network, seed);
  }
  if (classes) {
    if (names.empty()) names = model.graph.train.classes;
    if (int64_t(names.size()) != model.package->output_elements()) names.clear();
    *classes = names;
  }
  return source;
}

}  // namespace cnnc
