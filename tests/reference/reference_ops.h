// Plain C++ reference of every kernel: loops in double precision, no tricks, written from the
// Keras definitions. The tests compare each compiled kernel against it.
#pragma once

#include <cstdint>
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

// Dropout's and the step's state in a training forward pass (as set on the package's model).
struct Training {
  uint32_t seed = 0;
  int64_t step = 0;
};

// The whole network's training forward pass, as a training step computes it: batchnorm with the
// batch's statistics, dropout with the package's masks. params maps "node.param" (e.g.
// "conv2d.kernel") to its values in Keras layout; input holds batch x input elements. Returns
// the output node's values (batch x output elements).
std::vector<double> training_forward(const Graph& graph, const std::map<std::string, std::vector<double>>& params,
                                     const float* input, int batch, const Training& training);

// Mean categorical cross-entropy of softmax outputs (batch x classes) against integer labels.
double cross_entropy(const std::vector<double>& probabilities, const std::vector<int32_t>& labels);

}  // namespace cnnc::reference
