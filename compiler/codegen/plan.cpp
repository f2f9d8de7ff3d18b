// The package's plan (see plan.h).
#include "codegen/plan.h"

#include <fmt/format.h>

namespace cnnc {

namespace {

// Parameter tensors start at multiples of this many floats (128 bytes) in the parameter block.
constexpr int64_t kParamAlignFloats = 32;

}  // namespace

// Changes whenever this file is recompiled: part of every package's cache key (package.cpp).
const char* plan_build_stamp() { return __DATE__ " " __TIME__; }

Plan make_plan(const Graph& graph, bool gpu) {
  Plan plan{graph, plan_kernels(graph), graph.name, gpu, {}, {}, {}, 0, "", {}, training_storage_owners(graph), {}, -1, false};
  for (const Node& node : graph.nodes) {
    int owner = node.id;
    if (node.is_view) owner = plan.storage_of[node.inputs[0]];
    plan.storage_of.push_back(owner);
    plan.has_saved.push_back(node_keeps_saved(node, node.id == graph.output));
    for (size_t p = 0; p < node.params.size(); ++p) {
      // Every tensor starts on a 128-byte boundary of the block (zeros between tensors). The
      // parameter gradients share the layout, and Halide 14 stores some kernel outputs with
      // aligned vector instructions (batchnorm's beta gradient at an odd offset faulted).
      plan.param_floats = (plan.param_floats + kParamAlignFloats - 1) / kParamAlignFloats * kParamAlignFloats;
      plan.params.emplace_back(node.id, int(p));
      plan.param_offsets.push_back(plan.param_floats);
      plan.param_floats += shape_elements(node.params[p].shape);
    }
  }
  plan.untrainable = training_unsupported_reason(graph);
  if (plan.untrainable.empty()) {
    plan.training = plan_training_kernels(graph, plan.param_floats);
    const Node& out = graph.nodes[graph.output];
    plan.logits_saved = plan.has_saved[out.id];
    plan.logits_source = plan.logits_saved ? out.id : out.inputs[0];
  }
  return plan;
}

std::string param_full_name(const Node& node, const ParamSpec& param) { return node.name + "." + param.name; }

int param_index(const Plan& plan, int node, const std::string& name) {
  for (size_t i = 0; i < plan.params.size(); ++i)
    if (plan.params[i].first == node && plan.graph.nodes[node].params[plan.params[i].second].name == name) return int(i);
  CNNC_ASSERT(false, "no parameter " + name);
}

std::string format_kernel_plan(const Plan& plan) {
  const Graph& graph = plan.graph;
  std::string out = fmt::format("// after plan-kernels\n{}: {} inference kernels\n", graph.name, plan.kernels.size());
  for (const KernelInfo& kernel : plan.kernels) out += format_kernel(graph, kernel);
  if (!plan.untrainable.empty()) return out + fmt::format("{}: not trainable: {}\n", graph.name, plan.untrainable);
  out += fmt::format("{}: {} training kernels\n", graph.name, plan.training.size());
  for (const KernelInfo& kernel : plan.training) out += format_kernel(graph, kernel);
  return out;
}

}  // namespace cnnc
