// dropout's Halide half, training only (at inference dropout is a view): forward zeroes a
// fraction `rate` of the values and scales the rest; backward recomputes the same mask
// (dropout_keep, halide_common.h) from the model's seed and step. The op itself: ops/shape_ops.cpp.
#include "codegen/halide_op.h"

namespace cnnc {

void register_dropout_halide() {
  HalideOp op;
  op.stamp = __DATE__ " " __TIME__;
  op.forward = [](ForwardContext& ctx) {
    return elementwise_kernel(ctx, [&](const std::vector<Var>& vars, std::vector<Func>&) {
      std::vector<Expr> at = as_exprs(vars);
      double rate = ctx.node.attrs.get_float("rate");
      Expr keep = dropout_keep(at, ctx.node.shape, ctx.seed, ctx.step, ctx.example_offset, rate);
      Func value("value");
      value(at) = select(keep, ctx.inputs[0](at) * float(1.0 / (1.0 - rate)), 0.0f);
      return value;
    });
  };
  op.backward = [](BackwardContext& ctx) {
    std::vector<Var> vars = make_vars(ctx.node.shape.size() + 1);
    std::vector<Expr> at = as_exprs(vars);
    double rate = ctx.node.attrs.get_float("rate");
    Func d("dropout_input_gradient");
    d(at) = select(dropout_keep(at, ctx.node.shape, ctx.seed, ctx.step, ctx.example_offset, rate), ctx.pre(at) * float(1.0 / (1.0 - rate)), 0.0f);
    ctx.input_grads[0] = d;
  };
  register_halide_op("dropout", op);
}

}  // namespace cnnc
