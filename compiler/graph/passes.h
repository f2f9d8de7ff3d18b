// Graph passes. Each is a free function with its contract stated here; graph/pipeline.cpp runs
// them in one linear sequence.
#pragma once

#include "frontend/model_spec.h"
#include "graph/graph.h"

namespace cnnc {

// Builds the graph from a parsed model. Resolves `inputs:` names (default: the layer before),
// rejects duplicate names, references to missing layers, wrong input counts and cycles, and puts
// the nodes in topological order (keeping the written order where the edges allow).
// Shapes are left empty. Throws UserError.
Graph build_graph(const ModelSpec& model);

// Infers every node's output shape, parameters and FLOPs in topological order. Rejects inputs of
// the wrong rank, shapes that shrink to nothing and tensors over kMaxTensorElements, naming the
// layer and the shape that reached it. Adds a warning for layers whose output is never used.
// Throws UserError.
void infer_shapes(Graph& graph);

// Groups nodes into kernels. Moves conv2d/dense `activation:` into the fused list, then absorbs
// into a conv2d, dense, add or batchnorm node a following activation layer (relu, sigmoid, tanh)
// that is its only consumer, and into a conv2d a following maxpool2d/avgpool2d that is its only
// consumer (conv + bias + activation + pool becomes one kernel). Marks flatten and dropout as
// views (no kernel at inference). Renumbers the nodes; shapes and the output stay correct.
void fuse_kernels(Graph& graph);

}  // namespace cnnc
