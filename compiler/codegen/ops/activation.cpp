// The Halide half of the element-wise activations (relu, sigmoid, tanh, relu6, leaky_relu, elu,
// hard_sigmoid: as layers, fused into the op before them, or as `activation:` values; swish,
// silu, gelu, hard_swish: as nodes of their own, their derivative taken from their input) and of
// softmax over the last axis. The ops themselves: ops/activation.cpp.
#include "codegen/fast_math.h"
#include "codegen/halide_op.h"

namespace cnnc {

namespace {

// An element-wise activation: its function, and its derivative from its own output.
using Activation = std::function<Expr(Expr, const Attrs&)>;

void register_activation(const std::string& name, Activation activate, Activation derivative) {
  HalideOp op;
  op.stamp = __DATE__ " " __TIME__;
  op.activate = activate;
  op.derivative = derivative;
  op.forward = [activate](ForwardContext& ctx) {
    return elementwise_kernel(ctx, [&](const std::vector<Var>& vars, std::vector<Func>&) {
      Func value("value");
      value(vars) = activate(ctx.inputs[0](vars), ctx.node.attrs);
      return value;
    });
  };
  op.backward = [name, derivative](BackwardContext& ctx) {
    std::vector<Var> vars = make_vars(ctx.node.shape.size() + 1);
    Func d(name + "_input_gradient");
    // From the output, or from the input for an activation whose derivative needs it.
    bool from_input = ctx.node.def->traits.derivative_needs_input;
    d(vars) = ctx.pre(vars) * derivative(from_input ? ctx.inputs[0](vars) : ctx.output(vars), ctx.node.attrs);
    ctx.input_grads[0] = d;
  };
  register_halide_op(name, op);
}

// Softmax over the last Keras axis, Halide dim 0.
Func softmax_forward(ForwardContext& ctx) {
  return elementwise_kernel(ctx, [&](const std::vector<Var>& vars, std::vector<Func>& inner) {
    std::vector<Expr> at = as_exprs(vars);
    int extent = int(ctx.node.shape.back());
    RDom k(0, extent, "k");
    std::vector<Var> rest(vars.begin() + 1, vars.end());
    std::vector<Expr> reduced = at;
    reduced[0] = k;
    Func maximum_("max"), exps("exp"), sum_("sum"), value("value");
    maximum_(as_exprs(rest)) = maximum(ctx.inputs[0](reduced));
    exps(at) = vector_exp(ctx.inputs[0](at) - maximum_(as_exprs(rest)));
    sum_(as_exprs(rest)) = Halide::sum(exps(reduced));
    value(at) = exps(at) / sum_(as_exprs(rest));
    inner = {maximum_, sum_, exps};
    return value;
  });
}

}  // namespace

// An activation's `alpha`: the layer's, or `fallback` as a value of `activation:`.
float alpha(const Attrs& attrs, double fallback) { return float(attrs.has("alpha") ? attrs.get_float("alpha") : fallback); }

void register_activation_halide() {
  // Each derivative is a function of the activation's output alone: backward reads the output,
  // never the input. (For leaky_relu and elu that needs alpha >= 0, which the ops ask for.)
  register_activation(
      "relu", [](Expr x, const Attrs&) { return max(x, 0.0f); },
      [](Expr y, const Attrs&) { return select(y > 0.0f, 1.0f, 0.0f); });
  register_activation(
      "sigmoid", [](Expr x, const Attrs&) { return vector_sigmoid(x); },
      [](Expr y, const Attrs&) { return y * (1.0f - y); });
  register_activation(
      "tanh", [](Expr x, const Attrs&) { return vector_tanh(x); }, [](Expr y, const Attrs&) { return 1.0f - y * y; });
  register_activation(
      "relu6", [](Expr x, const Attrs&) { return clamp(x, 0.0f, 6.0f); },
      [](Expr y, const Attrs&) { return select(y > 0.0f && y < 6.0f, 1.0f, 0.0f); });
  register_activation(
      "leaky_relu", [](Expr x, const Attrs& attrs) { return select(x > 0.0f, x, alpha(attrs, 0.2) * x); },
      [](Expr y, const Attrs& attrs) { return select(y > 0.0f, 1.0f, alpha(attrs, 0.2)); });
  // elu: alpha (e^x - 1) below zero, whose derivative alpha e^x is y + alpha.
  register_activation(
      "elu", [](Expr x, const Attrs& attrs) { return select(x > 0.0f, x, alpha(attrs, 1.0) * (vector_exp(min(x, 0.0f)) - 1.0f)); },
      [](Expr y, const Attrs& attrs) { return select(y > 0.0f, 1.0f, y + alpha(attrs, 1.0)); });
  // hard_sigmoid (Keras 3): relu6(x + 3) / 6.
  register_activation(
      "hard_sigmoid", [](Expr x, const Attrs&) { return clamp(x + 3.0f, 0.0f, 6.0f) / 6.0f; },
      [](Expr y, const Attrs&) { return select(y > 0.0f && y < 1.0f, 1.0f / 6.0f, 0.0f); });

  // The derivatives of these need the input x (traits.derivative_needs_input).
  for (const char* name : {"swish", "silu"})
    register_activation(
        name, [](Expr x, const Attrs&) { return x * vector_sigmoid(x); },
        [](Expr x, const Attrs&) {
          Expr s = vector_sigmoid(x);
          return s + x * s * (1.0f - s);
        });
  // gelu, exact (Keras approximate=False): x Phi(x); its derivative Phi(x) + x phi(x).
  register_activation(
      "gelu", [](Expr x, const Attrs&) { return 0.5f * x * (1.0f + vector_erf(x * float(M_SQRT1_2))); },
      [](Expr x, const Attrs&) {
        return 0.5f * (1.0f + vector_erf(x * float(M_SQRT1_2))) + x * vector_exp(-0.5f * x * x) * float(0.5 * M_2_SQRTPI * M_SQRT1_2);
      });
  register_activation(
      "hard_swish", [](Expr x, const Attrs&) { return x * clamp(x + 3.0f, 0.0f, 6.0f) / 6.0f; },
      [](Expr x, const Attrs&) { return select(x < -3.0f, 0.0f, select(x > 3.0f, 1.0f, (2.0f * x + 3.0f) / 6.0f)); });

  HalideOp softmax;
  softmax.stamp = __DATE__ " " __TIME__;
  softmax.forward = softmax_forward;
  softmax.backward = [](BackwardContext& ctx) {
    // As the network's output, the loss gave the gradient of the logits already.
    std::vector<Var> vars = make_vars(ctx.node.shape.size() + 1);
    ctx.input_grads[0] = ctx.kernel.from_logits ? ctx.pre : ctx.softmax_backward(ctx.pre, ctx.output, vars);
  };
  register_halide_op("softmax", softmax);
}

}  // namespace cnnc
