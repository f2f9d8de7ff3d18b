// Plain C++ reference of every kernel: loops in double precision, no tricks, written from the
// Keras definitions. The tests compare each compiled kernel against it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace cnnc::reference {

// Computes `node` (after fusion: its op, then every fused op) for `batch` examples.
// inputs[i] holds batch x elements(input i's shape) floats, NHWC; params maps a parameter name
// ("kernel", "bias", ...) to its data in Keras layout.
std::vector<double> run_node(const Graph& graph, const Node& node, const std::vector<const float*>& inputs,
                             const std::map<std::string, const float*>& params, int batch);

}  // namespace cnnc::reference
