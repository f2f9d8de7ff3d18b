// infer_shapes: output shape, parameters and FLOPs of every node, checked for sanity.
#include <fmt/format.h>

#include "graph/passes.h"

namespace cnnc {

namespace {

// A parameter has no batch dimension, so it is shown as [3, 3, 1, 32], not (None, ...) "per example".
void check_size(const Node& node, const Shape& shape, const std::string& what, bool is_parameter = false) {
  if (shape_elements(shape) <= kMaxTensorElements) return;
  throw UserError(node.loc, fmt::format("{}: {} {} has {} elements{}, more than the limit of 2^31; make the {} smaller",
                                        node.describe(), what,
                                        is_parameter ? fmt::format("[{}]", fmt::join(shape, ", ")) : shape_str(shape),
                                        shape_elements(shape) == INT64_MAX ? std::string("over 2^63")
                                                                           : fmt::format("{}", shape_elements(shape)),
                                        is_parameter ? "" : " per example", node.id == 0 ? "input" : "layer"));
}

}  // namespace

void infer_shapes(Graph& graph) {
  check_size(graph.nodes[0], graph.nodes[0].shape, "its shape");
  std::vector<int> uses(graph.nodes.size(), 0);
  for (Node& node : graph.nodes) {
    if (node.id == 0) continue;
    std::vector<Shape> in;
    for (int from : node.inputs) {
      in.push_back(graph.nodes[from].shape);
      ++uses[from];
    }
    const OpDef& def = *node.def;
    for (size_t i = 0; i < in.size(); ++i) {
      if (def.input_rank == 0 || int(in[i].size()) == def.input_rank) continue;
      const Node& producer = graph.nodes[node.inputs[i]];
      std::string hint;
      if (def.input_rank == 1) hint = "; add a flatten layer before it";
      if (def.input_rank == 3) hint = "; it needs an image [height, width, channels]";
      throw UserError(node.loc, fmt::format("{}: expected an input of rank {}, but {} gives shape {} (rank {}){}",
                                            node.describe(), def.input_rank, producer.describe(),
                                            shape_str(in[i]), in[i].size(), hint));
    }
    try {
      node.shape = def.infer_shape(in, node.attrs);
    } catch (const ShapeError& error) {
      const SourceLoc* where = error.attr.empty() ? nullptr : node.attrs.loc(error.attr);
      throw UserError(where ? *where : node.loc,
                      fmt::format("{}: {} (input shape {})", node.describe(), error.message, shape_str(in[0])));
    }
    for (int64_t dim : node.shape)
      if (dim <= 0)
        throw UserError(node.loc, fmt::format("{}: the output shape {} is empty; the input {} has shrunk to nothing. "
                                              "Remove a layer or use padding: same",
                                              node.describe(), shape_str(node.shape), shape_str(in[0])));
    check_size(node, node.shape, "the output");
    node.params = def.params(in, node.attrs);
    for (const ParamSpec& param : node.params) check_size(node, param.shape, "the parameter '" + param.name + "'", true);
    node.flops = def.flops(in, node.shape, node.attrs);
  }
  ++uses[graph.output];
  for (const Node& node : graph.nodes)
    if (uses[node.id] == 0)
      graph.warnings.push_back(fmt::format("{}: warning: {}: its output is never used (the model's output is the last layer)",
                                           node.loc.str(), node.describe()));
}

}  // namespace cnnc
