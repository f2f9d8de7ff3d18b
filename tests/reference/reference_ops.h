// Plain C++ reference of every kernel: loops in double precision, no tricks, written from the
// Keras definitions. The tests compare each compiled kernel against it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace cnnc::reference {

// A batch of NHWC (or N x features) values.
struct Tensor {
  int batch = 0;
  Shape shape;  // per example
  std::vector<double> data;
  int64_t per_example() const { return shape_elements(shape); }
  double& at(int n, int64_t y, int64_t x, int64_t c) { return data[size_t(((n * shape[0] + y) * shape[1] + x) * shape[2] + c)]; }
  double at(int n, int64_t y, int64_t x, int64_t c) const {
    return data[size_t(((n * shape[0] + y) * shape[1] + x) * shape[2] + c)];
  }
};

// Dropout's and the step's state in a training forward pass (as set on the package's model).
struct Training {
  uint32_t seed = 0;
  int64_t step = 0;
};

// A parameter of the node by name ("kernel"), in Keras layout; nullptr if it has none.
using ParamLookup = std::function<const double*(const std::string&)>;

// What one op's reference computes from: its inputs (batch included), attributes, the shape of
// its result (per example), its parameters and, in a training forward pass, the training state
// (nullptr at inference). Fused ops are applied by the caller, each with its own reference.
struct ReferenceArgs {
  const std::vector<Tensor>& in;
  const Attrs& attrs;
  const Shape& out_shape;
  const ParamLookup& param;
  const Training* training;
};
using ReferenceOp = std::function<Tensor(const ReferenceArgs&)>;

// Every op of the language has one, registered under its name (the built-in ones in
// reference_ops.cpp; a test's toy op beside it). An op without one is an error, never an identity.
void register_reference_op(const std::string& name, ReferenceOp op);
bool has_reference_op(const std::string& name);

// Computes `node` (after fusion: its op, then every fused op) for `batch` examples.
// inputs[i] holds batch x elements(input i's shape) floats, NHWC; params maps a parameter name
// ("kernel", "bias", ...) to its data in Keras layout.
std::vector<double> run_node(const Graph& graph, const Node& node, const std::vector<const float*>& inputs,
                             const std::map<std::string, const float*>& params, int batch);

// The whole network's training forward pass, as a training step computes it: batchnorm with the
// batch's statistics, dropout with the package's masks. params maps "node.param" (e.g.
// "conv2d.kernel") to its values in Keras layout; input holds batch x input elements. Returns
// the output node's values (batch x output elements).
std::vector<double> training_forward(const Graph& graph, const std::map<std::string, std::vector<double>>& params,
                                     const float* input, int batch, const Training& training);

// Mean categorical cross-entropy of softmax outputs (batch x classes) against integer labels.
double cross_entropy(const std::vector<double>& probabilities, const std::vector<int32_t>& labels);

}  // namespace cnnc::reference
