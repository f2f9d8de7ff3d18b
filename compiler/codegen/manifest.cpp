// manifest.json of a package (see manifest.h); its schema is runtime/manifest_schema.h.
#include "codegen/manifest.h"

#include <fmt/format.h>

#include "codegen/codegen.h"
#include "manifest_schema.h"  // runtime/: the schema, shared with the runtime's reader

#ifndef CNNC_VERSION
#define CNNC_VERSION "unknown"
#endif

namespace cnnc {

// Changes whenever this file is recompiled: part of every package's cache key (package.cpp).
const char* manifest_build_stamp() { return __DATE__ " " __TIME__; }

namespace {

manifest::Schedule schedule_of(const KernelInfo& kernel, int64_t extra_flops = 0) {
  return {kernel.schedule_origin, kernel.knobs.str(), kernel.schedule,
          kernel.executed_flops > 0 ? kernel.executed_flops + extra_flops : 0};
}

}  // namespace

nlohmann::json generate_manifest(const Plan& plan, const TargetInfo& target, const std::string& fingerprint) {
  const Graph& graph = plan.graph;
  manifest::Manifest out;
  out.cnnc_version = CNNC_VERSION;
  out.halide_version = halide_version();
  out.model = graph.name;
  out.model_file = graph.file;
  out.model_hash = fingerprint;
  out.target = {target.name, target.halide, target.gpu, target.arch};
  out.layout = "NHWC float32; Halide dims (c, x, y, n), vectors (i, n); batch dynamic";
  out.input = {0, graph.nodes[0].shape};
  out.output = {graph.output, graph.nodes[graph.output].shape};
  for (const Node& node : graph.nodes) {
    manifest::Buffer buffer{node.id, node.name, node.op_name(), node.shape, node.inputs, {}, plan.storage_of[node.id],
                            node.is_view, node.flops};
    for (const Node::FusedOp& op : node.fused) buffer.fused.push_back({op.def->name, op.name});
    out.buffers.push_back(buffer);
  }
  for (size_t i = 0; i < plan.params.size(); ++i) {
    const Node& node = graph.nodes[plan.params[i].first];
    const ParamSpec& param = node.params[plan.params[i].second];
    out.params.push_back({param_full_name(node, param), node.name, param.shape, plan.param_offsets[i], param.trainable,
                          initializer_name(param.initializer)});
  }
  out.param_floats = plan.param_floats;
  for (const KernelInfo& kernel : plan.kernels) {
    std::vector<std::string> arguments;
    for (size_t i = 0; i < kernel.inputs.size(); ++i) arguments.push_back(fmt::format("input{}", i));
    for (const std::string& name : kernel.params) arguments.push_back(name);
    const Node& node = graph.nodes[kernel.node];
    std::vector<std::string> fused;
    for (const Node::FusedOp& op : node.fused) fused.push_back(op.def->name);
    int output = kernel.node;
    int64_t flops = node.flops, folded_flops = 0;
    if (kernel.fold >= 0) {  // a folded batchnorm: its parameters, its fused ops, its output
      const Node& affine = graph.nodes[size_t(kernel.fold)];
      for (const std::string& name : kernel.fold_params) arguments.push_back(affine.name + "." + name);
      fused.push_back(affine.op_name());
      for (const Node::FusedOp& op : affine.fused) fused.push_back(op.def->name);
      output = affine.id;
      flops += affine.flops;
      folded_flops = affine.flops;
    }
    if (kernel.residual >= 0) {  // a folded add: its other inputs (already in `arguments`), its fused ops, its output
      const Node& sum = graph.nodes[size_t(kernel.residual)];
      fused.push_back(sum.op_name());
      for (const Node::FusedOp& op : sum.fused) fused.push_back(op.def->name);
      output = sum.id;
      flops += sum.flops;
      folded_flops += sum.flops;
    }
    if (kernel.pool >= 0) {  // a folded pooling: its output
      const Node& pool = graph.nodes[size_t(kernel.pool)];
      fused.push_back(pool.op_name());
      output = pool.id;
      flops += pool.flops;
      folded_flops += pool.flops;
    }
    arguments.push_back("output");
    out.kernels.push_back({kernel.function, kernel.node, node.op_name(), fused, arguments, kernel.inputs, output, flops,
                           schedule_of(kernel, folded_flops)});
  }
  out.trainable = plan.untrainable.empty();
  out.untrainable_reason = plan.untrainable;
  for (const KernelInfo& kernel : plan.training)
    out.training_kernels.push_back({kernel.function, kernel_kind_name(kernel.kind), kernel.node,
                                    training_kernel_flops(graph, kernel), schedule_of(kernel)});
  for (const KernelInfo& kernel : plan.kernels) out.plan.push_back(kernel.function);
  return nlohmann::json(out);
}

}  // namespace cnnc
