// manifest.json of a package (see manifest.h).
#include "codegen/manifest.h"

#include <fmt/format.h>

#include "codegen/codegen.h"

#ifndef CNNC_VERSION
#define CNNC_VERSION "unknown"
#endif

namespace cnnc {

// Changes whenever this file is recompiled: part of every package's cache key (package.cpp).
const char* manifest_build_stamp() { return __DATE__ " " __TIME__; }

namespace {

nlohmann::json shape_json(const Shape& shape) { return nlohmann::json(shape); }

}  // namespace

nlohmann::json generate_manifest(const Plan& plan, const TargetInfo& target, const std::string& fingerprint) {
  const Graph& graph = plan.graph;
  nlohmann::json manifest;
  manifest["format"] = "cnnc-package-1";
  manifest["cnnc_version"] = CNNC_VERSION;
  manifest["halide_version"] = halide_version();
  manifest["model"] = graph.name;
  manifest["model_file"] = graph.file;
  manifest["model_hash"] = fingerprint;
  manifest["target"] = {{"name", target.name}, {"halide", target.halide}, {"gpu", target.gpu}, {"arch", target.arch}};
  manifest["layout"] = "NHWC float32; Halide dims (c, x, y, n), vectors (i, n); batch dynamic";
  manifest["input"] = {{"node", 0}, {"shape", shape_json(graph.nodes[0].shape)}};
  manifest["output"] = {{"node", graph.output}, {"shape", shape_json(graph.nodes[graph.output].shape)}};
  nlohmann::json nodes = nlohmann::json::array();
  for (const Node& node : graph.nodes) {
    nlohmann::json fused = nlohmann::json::array();
    for (const Node::FusedOp& op : node.fused) fused.push_back({{"op", op.op}, {"layer", op.name}});
    nodes.push_back({{"id", node.id},
                     {"name", node.name},
                     {"op", node.op},
                     {"shape", shape_json(node.shape)},
                     {"inputs", node.inputs},
                     {"fused", fused},
                     {"storage", plan.storage_of[node.id]},
                     {"view", node.is_view},
                     {"flops", node.flops}});
  }
  manifest["buffers"] = nodes;
  nlohmann::json params = nlohmann::json::array();
  for (size_t i = 0; i < plan.params.size(); ++i) {
    const Node& node = graph.nodes[plan.params[i].first];
    const ParamSpec& param = node.params[plan.params[i].second];
    params.push_back({{"name", param_full_name(node, param)},
                      {"layer", node.name},
                      {"shape", shape_json(param.shape)},
                      {"offset", plan.param_offsets[i]},
                      {"trainable", param.trainable},
                      {"initializer", initializer_name(param.initializer)}});
  }
  manifest["params"] = params;
  manifest["param_floats"] = plan.param_floats;
  nlohmann::json kernels = nlohmann::json::array();
  for (const KernelInfo& kernel : plan.kernels) {
    std::vector<std::string> arguments;
    for (size_t i = 0; i < kernel.inputs.size(); ++i) arguments.push_back(fmt::format("input{}", i));
    for (const std::string& name : kernel.params) arguments.push_back(name);
    arguments.push_back("output");
    const Node& node = graph.nodes[kernel.node];
    nlohmann::json fused = nlohmann::json::array();
    for (const Node::FusedOp& op : node.fused) fused.push_back(op.op);
    kernels.push_back({{"function", kernel.function},
                       {"node", kernel.node},
                       {"op", node.op},
                       {"fused", fused},
                       {"arguments", arguments},
                       {"inputs", kernel.inputs},
                       {"output", kernel.node},
                       {"flops_per_example", node.flops},
                       {"schedule", {{"origin", kernel.schedule_origin}, {"knobs", kernel.knobs.str()},
                                     {"description", kernel.schedule}}}});
  }
  manifest["kernels"] = kernels;
  manifest["trainable"] = plan.untrainable.empty();
  if (!plan.untrainable.empty()) manifest["untrainable_reason"] = plan.untrainable;
  nlohmann::json training = nlohmann::json::array();
  for (const KernelInfo& kernel : plan.training)
    training.push_back({{"function", kernel.function},
                        {"kind", kernel_kind_name(kernel.kind)},
                        {"node", kernel.node},
                        {"flops_per_example", training_kernel_flops(graph, kernel)},
                        {"schedule", {{"origin", kernel.schedule_origin}, {"knobs", kernel.knobs.str()},
                                      {"description", kernel.schedule}}}});
  manifest["training_kernels"] = training;
  std::vector<std::string> order;
  for (const KernelInfo& kernel : plan.kernels) order.push_back(kernel.function);
  manifest["plan"] = order;
  return manifest;
}

}  // namespace cnnc
