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

void set_params(rt::Network& network, const std::map<std::string, ImportedTensor>& weights, const std::string& source) {
  for (const rt::TensorInfo& info : network.package().params()) {
    auto it = weights.find(info.name);
    if (it == weights.end())
      throw UserError(SourceLoc{source, 0, 0}, fmt::format("no weights for parameter '{}'", info.name));
    if (it->second.shape != info.shape || int64_t(it->second.data.size()) != info.elements())
      throw UserError(SourceLoc{source, 0, 0},
                      fmt::format("parameter '{}' has shape [{}], but the model needs [{}]", info.name,
                                  fmt::join(it->second.shape, ", "), fmt::join(info.shape, ", ")));
    std::copy(it->second.data.begin(), it->second.data.end(), network.params() + info.offset);
  }
  network.params_changed();
}

InitialWeights initial_weights(rt::Network& network, const LoadedModel& model, const std::string& weights_file,
                               uint64_t seed) {
  if (!weights_file.empty()) {
    rt::load_weights(network, weights_file);
    return InitialWeights::File;
  }
  if (model.onnx) {
    set_params(network, model.onnx->weights, model.graph.file);
    return InitialWeights::Onnx;
  }
  rt::init_params(network, seed);
  return InitialWeights::Seed;
}

std::vector<std::string> class_names(const LoadedModel& model, const std::string& weights_file) {
  std::vector<std::string> names;
  if (!weights_file.empty()) names = rt::load_class_names(weights_file);
  if (names.empty()) names = model.graph.train.classes;
  if (int64_t(names.size()) != model.package->output_elements()) return {};
  return names;
}

}  // namespace cnnc
