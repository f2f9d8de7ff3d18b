// maxpool2d's and avgpool2d's Halide half, as layers of their own. Fused into a convolution,
// a pooling is part of that op's kernel (ops/conv2d.cpp) and its backward part of the epilogue
// (halide_training.cpp); the window reductions themselves are pool2d (halide_common.h) and
// BackwardContext::pool_backward. The ops themselves: ops/pooling.cpp.
#include "codegen/halide_op.h"

namespace cnnc {

namespace {

// A pooling layer of its own (not fused into a convolution).
Func pool_forward(ForwardContext& ctx) {
  const Shape& in = ctx.input_shape();
  Var c("c"), x("x"), y("y"), n("n");
  Func source("source");
  source(c, x, y, n) = ctx.inputs[0](c, x, y, n);
  Func pool = pool2d(ctx.node.def->traits.pooling, source, int(in[1]), int(in[0]), ctx.node.attrs, int(ctx.node.shape[1]), int(ctx.node.shape[0]));
  Func output("output");
  output(c, x, y, n) = pool(c, x, y, n);
  if (ctx.hand) ctx.schedule_elementwise(output, {c, x, y, n});
  return output;
}

void pool_backward(BackwardContext& ctx) {
  std::vector<Var> vars = make_vars(ctx.node.shape.size() + 1);
  std::vector<Expr> at = as_exprs(vars);
  Func activation("activation");
  activation(at) = ctx.inputs[0](at);
  ctx.input_grads[0] = ctx.pool_backward(ctx.node.def->traits.pooling, ctx.pre, activation,
                                         ctx.graph.nodes[ctx.node.inputs[0]].shape, ctx.node.shape, ctx.node.attrs);
}

}  // namespace

void register_pooling_halide() {
  HalideOp op;
  op.stamp = __DATE__ " " __TIME__;
  op.forward = pool_forward;
  op.backward = pool_backward;
  register_halide_op("maxpool2d", op);
  register_halide_op("avgpool2d", op);
}

}  // namespace cnnc
