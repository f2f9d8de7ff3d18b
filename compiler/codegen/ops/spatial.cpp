// The Halide half of zero_padding2d and upsampling2d: element-wise kernels over their output,
// and backward as the matching gather (padding: the inner window; upsampling: the sum of each
// value's copies). The ops themselves: ops/shape_ops.cpp.
#include "codegen/halide_op.h"

namespace cnnc {

void register_spatial_halide() {
  HalideOp pad;
  pad.stamp = __DATE__ " " __TIME__;
  pad.forward = [](ForwardContext& ctx) {
    return elementwise_kernel(ctx, [&](const std::vector<Var>& vars, std::vector<Func>&) {
      const Shape& in = ctx.input_shape();
      const Padding4& p = ctx.node.attrs.get_padding("padding");
      int height = int(in[0]), width = int(in[1]);
      Var c = vars[0], x = vars[1], y = vars[2], n = vars[3];
      Expr xx = x - int(p[2]), yy = y - int(p[0]);
      Func value("value");
      value(c, x, y, n) = select(xx >= 0 && xx < width && yy >= 0 && yy < height,
                                 ctx.inputs[0](c, clamp(xx, 0, width - 1), clamp(yy, 0, height - 1), n), 0.0f);
      return value;
    });
  };
  pad.backward = [](BackwardContext& ctx) {
    const Padding4& p = ctx.node.attrs.get_padding("padding");
    Var c("c"), x("x"), y("y"), n("n");
    Func d("zero_padding2d_input_gradient");
    d(c, x, y, n) = ctx.pre(c, x + int(p[2]), y + int(p[0]), n);
    ctx.input_grads[0] = d;
  };
  register_halide_op("zero_padding2d", pad);

  HalideOp up;
  up.stamp = __DATE__ " " __TIME__;
  up.forward = [](ForwardContext& ctx) {
    return elementwise_kernel(ctx, [&](const std::vector<Var>& vars, std::vector<Func>&) {
      auto [sh, sw] = ctx.node.attrs.get_pair("size");
      Func value("value");
      value(vars[0], vars[1], vars[2], vars[3]) = ctx.inputs[0](vars[0], vars[1] / int(sw), vars[2] / int(sh), vars[3]);
      return value;
    });
  };
  up.backward = [](BackwardContext& ctx) {
    auto [sh, sw] = ctx.node.attrs.get_pair("size");
    Var c("c"), x("x"), y("y"), n("n");
    Expr sum = 0.0f;
    for (int dy = 0; dy < int(sh); ++dy)  // in a fixed order: the same sum on every target
      for (int dx = 0; dx < int(sw); ++dx) sum = sum + ctx.pre(c, x * int(sw) + dx, y * int(sh) + dy, n);
    Func d("upsampling2d_input_gradient");
    d(c, x, y, n) = sum;
    ctx.input_grads[0] = d;
  };
  register_halide_op("upsampling2d", up);
}

}  // namespace cnnc
