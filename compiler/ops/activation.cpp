// Element-wise activations as layers (relu, sigmoid, tanh, relu6, leaky_relu, elu, hard_sigmoid,
// swish and its alias silu, gelu, hard_swish) and softmax over the last axis.
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
  // alpha of leaky_relu and elu: Keras's defaults as layers (LeakyReLU: 0.3, ELU: 1). As a value
  // of `activation:` they have no attributes and use Keras's defaults for that (0.2 and 1).
  auto alpha = [](double default_value, const std::string& help) {
    AttrSpec spec{"alpha", AttrKind::Float};
    spec.default_value = default_value;
    spec.min = 0;
    spec.max = 1000;
    spec.help = help;
    return spec;
  };
  OpDef leaky_relu = activation_op("leaky_relu", "x where x > 0, else alpha * x", 2);
  leaky_relu.attrs = {alpha(0.3, "slope below zero, >= 0 (as `activation: leaky_relu`: 0.2)")};
  OpDef elu = activation_op("elu", "x where x > 0, else alpha * (exp(x) - 1)", 4);
  elu.attrs = {alpha(1.0, "scale below zero, >= 0")};
  for (OpDef op : {activation_op("relu", "max(x, 0)", 1), activation_op("sigmoid", "1 / (1 + exp(-x))", 4),
                   activation_op("tanh", "hyperbolic tangent", 4), activation_op("relu6", "min(max(x, 0), 6)", 2),
                   leaky_relu, elu, activation_op("hard_sigmoid", "relu6(x + 3) / 6", 3)}) {
    op.traits.activation = true;
    ops.push_back(op);
  }
  // Their derivatives need the input: layers of their own (see OpTraits::derivative_needs_input).
  for (OpDef op : {activation_op("swish", "x * sigmoid(x)", 5), activation_op("silu", "x * sigmoid(x) (swish)", 5),
                   activation_op("gelu", "x * (1 + erf(x / sqrt(2))) / 2, exact", 8),
                   activation_op("hard_swish", "x * relu6(x + 3) / 6", 4)}) {
    op.traits.activation = true;
    op.traits.derivative_needs_input = true;
    ops.push_back(op);
  }
  OpDef softmax = activation_op("softmax", "exp(x) / sum(exp(x)) over the last axis", 4);
  softmax.traits.softmax = true;
  ops.push_back(softmax);
}

}  // namespace cnnc
