// Code generation: fused graph nodes to Halide pipelines, compiled ahead of time.
// This header is free of Halide; only codegen/*.cpp include Halide.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "codegen/target.h"
#include "graph/graph.h"

namespace cnnc {

// One compiled kernel: a Halide function `function(inputs..., params..., output)` over float32
// buffers in NHWC layout (Halide dims c, x, y, n; vectors: i, n), batch extent dynamic.
struct KernelInfo {
  std::string function;             // C symbol
  int node = 0;                     // graph node it computes
  std::vector<int> inputs;          // graph nodes whose outputs it reads (views included)
  std::vector<std::string> params;  // parameter tensors of the node, in argument order
  std::string schedule;             // human-readable schedule summary, recorded in the manifest
  std::string schedule_origin = "default";
};

// The kernels of a fused graph (one per non-view node except the input), in execution order.
std::vector<KernelInfo> plan_kernels(const Graph& graph);

// Compiles every kernel into one object file without a Halide runtime, and the target's
// standalone Halide runtime into another. Records each kernel's schedule in `kernels`.
void compile_kernels(const Graph& graph, std::vector<KernelInfo>& kernels, const TargetInfo& target,
                     const std::string& kernels_object, const std::string& runtime_object);

// The Halide version cnnc generates code with, e.g. "14.0.0".
std::string halide_version();
// Identifies this build of the code generator; part of every package's cache key.
std::string codegen_build_stamp();

}  // namespace cnnc
