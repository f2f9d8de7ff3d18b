// The pass pipeline: the whole middle of the compiler, top to bottom.
#include "graph/pipeline.h"

#include <ostream>

#include <fmt/format.h>

#include "graph/passes.h"
#include "graph/print.h"

namespace cnnc {

const std::vector<std::string>& pass_names() {
  static const std::vector<std::string> names = {"build-graph", "infer-shapes", "fuse-kernels"};
  return names;
}

Graph compile_graph(const ModelSpec& model, const PipelineOptions& options) {
  auto after = [&](const std::string& pass, const Graph& graph) {
    if (!options.dump || (options.dump_after != pass && options.dump_after != "all")) return;
    *options.dump << fmt::format("// after {}\n", pass) << format_graph(graph);
  };
  Graph graph = build_graph(model);
  after("build-graph", graph);
  infer_shapes(graph);
  after("infer-shapes", graph);
  if (!options.fuse) return graph;
  fuse_kernels(graph);
  after("fuse-kernels", graph);
  return graph;
}

}  // namespace cnnc
