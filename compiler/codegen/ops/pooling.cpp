// The Halide half of global_avgpool2d and global_maxpool2d, and of maxpool2d and avgpool2d as
// layers of their own. Fused into a convolution,
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

// Global pooling: [H, W, C] to [C], each channel reduced over the image in a fixed order (x
// inner, y outer), vectorized over the channels.
Func global_pool_forward(ForwardContext& ctx, bool is_max) {
  const Shape& in = ctx.input_shape();
  int height = int(in[0]), width = int(in[1]), channels = int(in[2]);
  Var c("c"), n("n");
  RDom r(0, width, 0, height, "r");
  Expr value = ctx.inputs[0](c, r.x, r.y, n);
  Func output("output");
  output(c, n) = is_max ? maximum(value) : Halide::sum(value) / float(height * width);
  if (!ctx.hand) return output;
  if (ctx.sched.gpu) {
    output.gpu_tile(c, n, Var("co"), Var("no"), Var("ci"), Var("ni"), std::min(64, channels), 1, TailStrategy::GuardWithIf);
    ctx.schedule = "gpu: one thread per channel and example";
    return output;
  }
  output.vectorize(c, std::min(ctx.sched.vector, channels)).parallel(n);
  ctx.schedule = "cpu: vectorized over the channels, parallel over the batch";
  return output;
}

// The average spreads each channel's gradient evenly; the maximum gives it to the first
// position (row by row) holding the maximum, as the reference does.
void global_pool_backward(BackwardContext& ctx, bool is_max) {
  const Shape& in = ctx.graph.nodes[ctx.node.inputs[0]].shape;
  int height = int(in[0]), width = int(in[1]), channels = int(in[2]);
  Var c("c"), x("x"), y("y"), n("n");
  Func input_grad("global_pool_input_gradient");
  if (!is_max) {
    input_grad(c, x, y, n) = ctx.pre(c, n) / float(height * width);
  } else {
    RDom r(0, width, 0, height, "r");
    Func where("argmax");
    where(c, n) = argmax(ctx.inputs[0](c, r.x, r.y, n));  // (x, y, value) of the first maximum
    input_grad(c, x, y, n) = select(x == where(c, n)[0] && y == where(c, n)[1], ctx.pre(c, n), 0.0f);
    if (ctx.hand) {
      if (ctx.sched.gpu) where.compute_root().gpu_tile(c, n, Var("co"), Var("no"), Var("ci"), Var("ni"), std::min(64, channels), 1,
                                                       TailStrategy::GuardWithIf);
      else where.compute_root().vectorize(c, std::min(ctx.sched.vector, channels)).parallel(n);
    }
  }
  ctx.input_grads[0] = input_grad;
}

}  // namespace

void register_pooling_halide() {
  HalideOp op;
  op.stamp = __DATE__ " " __TIME__;
  op.forward = pool_forward;
  op.backward = pool_backward;
  register_halide_op("maxpool2d", op);
  register_halide_op("avgpool2d", op);

  for (bool is_max : {false, true}) {
    HalideOp global;
    global.stamp = __DATE__ " " __TIME__;
    global.forward = [is_max](ForwardContext& ctx) { return global_pool_forward(ctx, is_max); };
    global.backward = [is_max](BackwardContext& ctx) { global_pool_backward(ctx, is_max); };
    register_halide_op(is_max ? "global_maxpool2d" : "global_avgpool2d", global);
  }
}

}  // namespace cnnc
