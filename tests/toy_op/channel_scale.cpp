// A toy op added from outside the compiler, as a user or a new contributor would: its definition
// (front end), its Halide half (forward, backward) and its double-precision reference, registered
// together -- nothing else in cnnc names it.
//
//   channel_scale: {offset: 0.5}    y[..., c] = x[..., c] * scale[c] + offset
//
// One trainable parameter per channel, "scale", that starts at ones.
#include "toy_op/channel_scale.h"

#include <mutex>

#include "codegen/halide_op.h"
#include "ops/op.h"
#include "reference/reference_ops.h"

namespace cnnc::toy {

namespace {

OpDef definition() {
  OpDef op;
  op.name = "channel_scale";
  op.summary = "multiply each channel by a learned scale, then add a constant";
  AttrSpec offset{"offset", AttrKind::Float};
  offset.default_value = 0.0;
  offset.min = -100;
  offset.max = 100;
  offset.help = "added to every value";
  op.attrs = {offset};
  op.infer_shape = [](const std::vector<Shape>& in, const Attrs&) { return in[0]; };
  op.params = [](const std::vector<Shape>& in, const Attrs&) {
    return std::vector<ParamSpec>{{"scale", {in[0].back()}, true, Initializer::Ones}};
  };
  op.flops = [](const std::vector<Shape>&, const Shape& out, const Attrs&) { return saturating_mul(2, shape_elements(out)); };
  return op;
}

HalideOp halide_half() {
  HalideOp op;
  op.stamp = __DATE__ " " __TIME__;
  op.forward = [](ForwardContext& ctx) {
    return elementwise_kernel(ctx, [&](const std::vector<Var>& vars, std::vector<Func>&) {
      Func value("value");
      float offset = float(ctx.node.attrs.get_float("offset"));
      value(vars) = ctx.inputs[0](vars) * ctx.params.at("scale")(vars[0]) + offset;
      return value;
    });
  };
  op.backward = [](BackwardContext& ctx) {
    std::vector<Var> vars = make_vars(ctx.node.shape.size() + 1);
    Var c = vars[0];
    Func input_grad("channel_scale_input_gradient");
    input_grad(vars) = ctx.pre(vars) * ctx.params.at("scale")(c);
    ctx.input_grads[0] = input_grad;
    // d(scale)(c) = sum over the batch and the pixels of pre * x, in a fixed order.
    ChannelReduction all = per_channel(ctx.node.shape, ctx.batch, c);
    Func scale_grad("scale_gradient");
    scale_grad(c) = Halide::sum(ctx.pre(all.point) * ctx.inputs[0](all.point));
    ctx.param_grads.emplace_back("scale", scale_grad);
    if (ctx.hand) scale_grad.compute_root();
  };
  return op;
}

reference::Tensor reference_half(const reference::ReferenceArgs& args) {
  reference::Tensor out = args.in[0];
  size_t channels = size_t(out.shape.back());
  const double* scale = args.param("scale");
  double offset = args.attrs.get_float("offset");
  for (size_t k = 0; k < out.data.size(); ++k) out.data[k] = out.data[k] * scale[k % channels] + offset;
  return out;
}

}  // namespace

void register_channel_scale() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_op(definition());
    register_halide_op("channel_scale", halide_half());
    reference::register_reference_op("channel_scale", reference_half);
  });
}

}  // namespace cnnc::toy
