// The package's plan: its kernels (inference and training, from plan_kernels.h), where every
// node's output lives (views share their producer's memory), and the layout of the parameter
// block. The plan's C, the header and the manifest are all written from it. No Halide here.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "codegen/plan_kernels.h"
#include "graph/graph.h"

namespace cnnc {

struct Plan {
  const Graph& graph;
  std::vector<KernelInfo> kernels;    // inference, in execution order
  std::string prefix;  // the model name: every exported symbol starts with it
  bool gpu;
  // For each node: the node owning its memory (itself, the input 0, or a view's source).
  std::vector<int> storage_of;
  // Parameters: (node, index in node.params) in checkpoint order, and flat offsets.
  std::vector<std::pair<int, int>> params;
  std::vector<int64_t> param_offsets;
  int64_t param_floats = 0;

  // Training ("" reason: trainable). In training only flatten is a view (dropout computes).
  std::string untrainable;
  std::vector<KernelInfo> training;
  std::vector<int> train_storage_of;  // memory owner of each node's output while training
  std::vector<bool> has_saved;        // nodes keeping a tensor for backward
  int logits_source = -1;             // node whose output (or saved tensor) holds the logits
  bool logits_saved = false;
};

// Plans the kernels of a fused graph (plan_kernels, and plan_training_kernels where it can be
// trained) and lays out its memory. `gpu`: the kernels run on a GPU (buffers are copied).
Plan make_plan(const Graph& graph, bool gpu);

// "conv2d.kernel": the name of a parameter tensor in the C API, the manifest and weight files.
std::string param_full_name(const Node& node, const ParamSpec& param);
// The global index (in the parameter block's order) of parameter `name` of node `node`.
int param_index(const Plan& plan, int node, const std::string& name);

// The plan-kernels step in text form (`--dump-after plan-kernels`): the inference kernels, then
// the training kernels (or why the graph cannot be trained), one line each (format_kernel).
std::string format_kernel_plan(const Plan& plan);

}  // namespace cnnc
