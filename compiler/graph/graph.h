// The layer graph IR: typed nodes in topological order, shapes inferred.
//
// nodes[0] is always the model's input. Every later node's inputs come before it. Passes
// (graph/passes.h) build, check and transform it; graph/pipeline.h runs them in order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "frontend/model_spec.h"
#include "ops/op.h"

namespace cnnc {

struct Node {
  int id = 0;                  // index in Graph::nodes
  std::string name;            // unique; "input" for the input node
  const OpDef* def = nullptr;  // the op (its traits and hooks); nullptr for the input node
  Attrs attrs;
  std::vector<int> inputs;     // ids of the producing nodes
  Shape shape;                 // output shape per example (batch excluded)
  std::vector<ParamSpec> params;
  int64_t flops = 0;           // forward FLOPs per example
  int layer_index = 0;         // 1-based position in `layers:`; 0 for the input
  SourceLoc loc;

  // Operations fused into this node by fuse_kernels, applied to its result in order: an
  // activation (traits.activation or traits.softmax) and/or a pooling (traits.pooling). Each keeps
  // the layer it came from (name, attributes) for messages and the manifest.
  struct FusedOp {
    const OpDef* def = nullptr;
    std::string name;
    Attrs attrs;
  };
  std::vector<FusedOp> fused;
  // Output shape before the fused operations (the shape the node's own op produces).
  Shape unfused_shape;
  // True for ops whose output is their input reinterpreted (flatten; dropout at inference):
  // no kernel, the buffer is shared.
  bool is_view = false;

  // The op's name as in YAML ("conv2d"), or "input". For messages, printing and the manifest:
  // the compiler decides by def's traits and hooks, never by this name.
  const std::string& op_name() const;
  // "layer 3 'conv2d_1' (conv2d)", or "the input".
  std::string describe() const;
  int64_t param_count() const;
};

struct Graph {
  std::string name;  // model name, a valid identifier
  std::string file;
  std::vector<Node> nodes;
  int output = 0;    // id of the node whose value is the model's output
  TrainSpec train;
  std::vector<std::string> warnings;  // formatted "file:line:col: warning: ..."

  int64_t total_params() const;
  int64_t trainable_params() const;
  int64_t total_flops() const;
  // Bytes of float32 activations per example (every node's output, input included).
  int64_t activation_bytes() const;
};

}  // namespace cnnc
