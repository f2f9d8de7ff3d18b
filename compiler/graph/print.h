// Text forms of a graph: the Keras-like summary of `cnnc check` and the IR dump of --dump-after.
#pragma once

#include <string>

#include "graph/graph.h"

namespace cnnc {

// Like Keras model.summary(): layer, op, output shape, parameters, FLOPs; then totals and memory.
std::string format_summary(const Graph& graph);
// One line per node: "%3 conv2d_1 = conv2d(%2) {filters: 64, ...} -> (None, 11, 11, 64)".
std::string format_graph(const Graph& graph);
// "1,234,567"
std::string with_commas(int64_t value);
// "879.04 KB"
std::string human_bytes(int64_t bytes);

}  // namespace cnnc
