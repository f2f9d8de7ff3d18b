// The Halide half of the activation layers (relu, sigmoid, tanh: element-wise, also fused into
// the op before them) and of softmax over the last axis. The ops themselves: ops/activation.cpp.
#include "codegen/halide_op.h"

namespace cnnc {

namespace {

// An element-wise activation: its function, and its derivative from its own output.
void register_activation(const std::string& name, std::function<Expr(Expr)> activate,
                         std::function<Expr(Expr)> derivative) {
  HalideOp op;
  op.stamp = __DATE__ " " __TIME__;
  op.activate = activate;
  op.derivative = derivative;
  op.forward = [activate](ForwardContext& ctx) {
    return elementwise_kernel(ctx, [&](const std::vector<Var>& vars, std::vector<Func>&) {
      Func value("value");
      value(vars) = activate(ctx.inputs[0](vars));
      return value;
    });
  };
  op.backward = [name, derivative](BackwardContext& ctx) {
    std::vector<Var> vars = make_vars(ctx.node.shape.size() + 1);
    Func d(name + "_input_gradient");
    d(vars) = ctx.pre(vars) * derivative(ctx.output(vars));
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
    exps(at) = exp(ctx.inputs[0](at) - maximum_(as_exprs(rest)));
    sum_(as_exprs(rest)) = Halide::sum(exps(reduced));
    value(at) = exps(at) / sum_(as_exprs(rest));
    inner = {maximum_, sum_, exps};
    return value;
  });
}

}  // namespace

void register_activation_halide() {
  register_activation(
      "relu", [](Expr x) { return max(x, 0.0f); }, [](Expr y) { return select(y > 0.0f, 1.0f, 0.0f); });
  register_activation(
      "sigmoid", [](Expr x) { return 1.0f / (1.0f + exp(-x)); }, [](Expr y) { return y * (1.0f - y); });
  register_activation(
      "tanh", [](Expr x) { return tanh(x); }, [](Expr y) { return 1.0f - y * y; });

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
