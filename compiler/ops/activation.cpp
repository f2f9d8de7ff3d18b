// Element-wise activations as layers (relu, sigmoid, tanh) and softmax over the last axis.
#include "ops/op.h"

namespace cnnc {

namespace {

OpDef activation_op(const std::string& name, const std::string& summary, int64_t flops_per_element) {
  OpDef op;
  op.name = name;
  op.summary = summary;
  op.infer_shape = [](const std::vector<Shape>& in, const Attrs&) { return in[0]; };
  op.params = [](const std::vector<Shape>&, const Attrs&) { return std::vector<ParamSpec>{}; };
  op.flops = [flops_per_element](const std::vector<Shape>&, const Shape& out, const Attrs&) {
    return saturating_mul(shape_elements(out), flops_per_element);
  };
  return op;
}

}  // namespace

void register_activation_ops(std::vector<OpDef>& ops) {
  for (OpDef op : {activation_op("relu", "max(x, 0)", 1), activation_op("sigmoid", "1 / (1 + exp(-x))", 4),
                   activation_op("tanh", "hyperbolic tangent", 4)}) {
    op.traits.activation = true;
    ops.push_back(op);
  }
  OpDef softmax = activation_op("softmax", "exp(x) / sum(exp(x)) over the last axis", 4);
  softmax.traits.softmax = true;
  ops.push_back(softmax);
}

}  // namespace cnnc
