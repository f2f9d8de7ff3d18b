#include "driver/load_model.h"

#include <iostream>

#include "codegen/package.h"
#include "frontend/parse_model.h"
#include "graph/pipeline.h"

namespace cnnc {

LoadedModel load_model(const std::string& model_path, const std::string& target, bool quiet, bool use_tuning) {
  LoadedModel loaded;
  loaded.graph = compile_graph(parse_model_file(model_path));
  if (!quiet)
    for (const std::string& warning : loaded.graph.warnings) std::cerr << warning << "\n";
  BuildOptions options;
  options.target = target;
  options.log = quiet ? nullptr : &std::cerr;
  options.use_tuning = use_tuning;
  PackageResult result = build_package(loaded.graph, options);
  loaded.package = rt::Package::open(result.dir, model_fingerprint(loaded.graph));
  return loaded;
}

}  // namespace cnnc
