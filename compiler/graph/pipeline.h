// The compiler's pass pipeline, as one linear sequence (see pipeline.cpp).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "frontend/model_spec.h"
#include "graph/graph.h"

namespace cnnc {

struct PipelineOptions {
  // Print the graph to `dump` after the pass of this name ("" for none, "all" for every pass).
  std::string dump_after;
  std::ostream* dump = nullptr;
  // Run the code-generation passes (fusion) too; `cnnc check` stops before them.
  bool fuse = true;
};

// Names of the passes in the order they run; --dump-after accepts these.
const std::vector<std::string>& pass_names();

// Runs every pass from the parsed model to a checked graph. Throws UserError.
Graph compile_graph(const ModelSpec& model, const PipelineOptions& options = {});

}  // namespace cnnc
