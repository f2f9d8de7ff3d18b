// The convolutions over NHWC images, Keras semantics (cross-correlation):
//   conv2d            kernel [kh, kw, cin, filters]
//   depthwise_conv2d  depthwise_kernel [kh, kw, cin, multiplier]: each input channel convolved
//                     alone, output channel c * multiplier + m (Keras DepthwiseConv2D)
//   separable_conv2d  a depthwise convolution, then a 1x1 convolution pointwise_kernel
//                     [1, 1, cin * multiplier, filters] (Keras SeparableConv2D)
#include <fmt/format.h>

#include "ops/op.h"

namespace cnnc {

namespace {

AttrSpec filters_attr() {
  AttrSpec filters{"filters", AttrKind::Int, /*required=*/true};
  filters.help = "number of output channels";
  return filters;
}

// kernel, stride, padding, dilation: the window attributes every convolution has.
std::vector<AttrSpec> window_attrs() {
  AttrSpec kernel{"kernel", AttrKind::IntPair, /*required=*/true};
  kernel.help = "window size: an integer or [height, width]";
  AttrSpec stride{"stride", AttrKind::IntPair};
  stride.default_value = std::pair<int64_t, int64_t>(1, 1);
  stride.help = "step between windows: an integer or [height, width]";
  AttrSpec dilation{"dilation", AttrKind::IntPair};
  dilation.default_value = std::pair<int64_t, int64_t>(1, 1);
  dilation.max = 64;
  dilation.help = "spacing between kernel taps (Keras dilation_rate): an integer or [height, width]";
  return {kernel, stride, padding_attr(), dilation};
}

AttrSpec depth_multiplier_attr() {
  AttrSpec multiplier{"depth_multiplier", AttrKind::Int};
  multiplier.default_value = int64_t(1);
  multiplier.max = 4096;
  multiplier.help = "output channels per input channel of the depthwise step";
  return multiplier;
}

AttrSpec use_bias_attr() {
  AttrSpec use_bias{"use_bias", AttrKind::Bool};
  use_bias.default_value = true;
  use_bias.help = "add a learned bias per output channel";
  return use_bias;
}

// Output height and width of a convolution window over `in` ([H, W, C]).
std::pair<int64_t, int64_t> window_output(const Shape& in, const Attrs& attrs) {
  auto [kh, kw] = attrs.get_pair("kernel");
  auto [sh, sw] = attrs.get_pair("stride");
  auto [dh, dw] = attrs.get_pair("dilation");
  if ((sh > 1 || sw > 1) && (dh > 1 || dw > 1))
    throw ShapeError{fmt::format("stride {}x{} and dilation {}x{}: a convolution can have a stride or a dilation "
                                 "greater than 1, not both (as in Keras)",
                                 sh, sw, dh, dw),
                     "dilation"};
  // A dilated kernel spans (k - 1) * d + 1 input positions.
  int64_t span_h = (kh - 1) * dh + 1, span_w = (kw - 1) * dw + 1;
  const std::string& padding = attrs.get_string("padding");
  if (padding == "valid" && (span_h > in[0] || span_w > in[1]))
    throw ShapeError{fmt::format("kernel {}x{}{} is larger than the input {}x{} (with padding 'valid'); "
                                 "use a smaller kernel or padding: same",
                                 span_h, span_w, dh > 1 || dw > 1 ? " (dilated)" : "", in[0], in[1]),
                     "kernel"};
  return {window_output_size(in[0], span_h, sh, padding), window_output_size(in[1], span_w, sw, padding)};
}

// The depthwise step's output channels, cin * depth_multiplier, within the tensor limit.
int64_t depthwise_channels(const Shape& in, const Attrs& attrs) {
  int64_t channels = saturating_mul(in[2], attrs.get_int("depth_multiplier"));
  if (channels > kMaxTensorElements)
    throw ShapeError{fmt::format("{} input channels x depth_multiplier {} = {} channels, more than cnnc supports",
                                 in[2], attrs.get_int("depth_multiplier"), channels),
                     "depth_multiplier"};
  return channels;
}

// 2 FLOPs per multiply-accumulate of each output value over its window of `taps_per_output`.
int64_t window_flops(const Shape& out, int64_t taps_per_output) {
  return saturating_mul(saturating_mul(2, shape_elements(out)), taps_per_output);
}

}  // namespace

void register_conv_ops(std::vector<OpDef>& ops) {
  // The weight gradient does the forward FLOPs once, the input gradient once more.
  auto backward_flops = [](int64_t forward, bool input_gradient) { return saturating_mul(forward, input_gradient ? 2 : 1); };

  OpDef conv;
  conv.name = "conv2d";
  conv.summary = "2-D convolution with optional bias and activation";
  conv.attrs = {filters_attr()};
  for (const AttrSpec& spec : window_attrs()) conv.attrs.push_back(spec);
  conv.attrs.push_back(activation_attr());
  conv.attrs.push_back(use_bias_attr());
  conv.input_rank = 3;
  conv.traits.takes_activation = true;
  conv.traits.absorbs_pooling = true;
  conv.traits.pool_index = true;
  conv.traits.absorbs_affine = true;
  conv.infer_shape = [](const std::vector<Shape>& in, const Attrs& attrs) -> Shape {
    auto [height, width] = window_output(in[0], attrs);
    return {height, width, attrs.get_int("filters")};
  };
  conv.params = [](const std::vector<Shape>& in, const Attrs& attrs) {
    auto [kh, kw] = attrs.get_pair("kernel");
    int64_t filters = attrs.get_int("filters");
    std::vector<ParamSpec> params = {{"kernel", {kh, kw, in[0][2], filters}, true, Initializer::GlorotUniform}};
    if (attrs.get_bool("use_bias")) params.push_back({"bias", {filters}});
    return params;
  };
  conv.flops = [](const std::vector<Shape>& in, const Shape& out, const Attrs& attrs) {
    auto [kh, kw] = attrs.get_pair("kernel");
    return window_flops(out, saturating_mul(kh * kw, in[0][2]));
  };
  conv.backward_flops = backward_flops;
  ops.push_back(conv);

  OpDef depthwise;
  depthwise.name = "depthwise_conv2d";
  depthwise.summary = "each input channel convolved with its own depth_multiplier filters";
  depthwise.attrs = window_attrs();
  depthwise.attrs.push_back(depth_multiplier_attr());
  depthwise.attrs.push_back(activation_attr());
  depthwise.attrs.push_back(use_bias_attr());
  depthwise.input_rank = 3;
  depthwise.traits.takes_activation = true;
  depthwise.traits.absorbs_affine = true;
  depthwise.infer_shape = [](const std::vector<Shape>& in, const Attrs& attrs) -> Shape {
    auto [height, width] = window_output(in[0], attrs);
    return {height, width, depthwise_channels(in[0], attrs)};
  };
  depthwise.params = [](const std::vector<Shape>& in, const Attrs& attrs) {
    auto [kh, kw] = attrs.get_pair("kernel");
    int64_t multiplier = attrs.get_int("depth_multiplier");
    std::vector<ParamSpec> params = {
        {"depthwise_kernel", {kh, kw, in[0][2], multiplier}, true, Initializer::GlorotUniform}};
    if (attrs.get_bool("use_bias")) params.push_back({"bias", {in[0][2] * multiplier}});
    return params;
  };
  depthwise.flops = [](const std::vector<Shape>&, const Shape& out, const Attrs& attrs) {
    auto [kh, kw] = attrs.get_pair("kernel");
    return window_flops(out, kh * kw);
  };
  depthwise.backward_flops = backward_flops;
  ops.push_back(depthwise);

  OpDef separable;
  separable.name = "separable_conv2d";
  separable.summary = "a depthwise convolution followed by a 1x1 convolution (Keras SeparableConv2D)";
  separable.attrs = {filters_attr()};
  for (const AttrSpec& spec : window_attrs()) separable.attrs.push_back(spec);
  separable.attrs.push_back(depth_multiplier_attr());
  separable.attrs.push_back(activation_attr());
  separable.attrs.push_back(use_bias_attr());
  separable.input_rank = 3;
  separable.traits.takes_activation = true;
  separable.traits.absorbs_affine = true;
  separable.infer_shape = [](const std::vector<Shape>& in, const Attrs& attrs) -> Shape {
    auto [height, width] = window_output(in[0], attrs);
    depthwise_channels(in[0], attrs);
    return {height, width, attrs.get_int("filters")};
  };
  separable.params = [](const std::vector<Shape>& in, const Attrs& attrs) {
    auto [kh, kw] = attrs.get_pair("kernel");
    int64_t multiplier = attrs.get_int("depth_multiplier"), filters = attrs.get_int("filters");
    std::vector<ParamSpec> params = {
        {"depthwise_kernel", {kh, kw, in[0][2], multiplier}, true, Initializer::GlorotUniform},
        {"pointwise_kernel", {1, 1, in[0][2] * multiplier, filters}, true, Initializer::GlorotUniform}};
    if (attrs.get_bool("use_bias")) params.push_back({"bias", {filters}});
    return params;
  };
  separable.flops = [](const std::vector<Shape>& in, const Shape& out, const Attrs& attrs) {
    auto [kh, kw] = attrs.get_pair("kernel");
    int64_t middle = saturating_mul(in[0][2], attrs.get_int("depth_multiplier"));
    int64_t pixels = saturating_mul(out[0], out[1]);
    // The depthwise step over `middle` channels, then the pointwise one to the filters.
    return saturating_mul(saturating_mul(2, pixels), saturating_mul(middle, kh * kw + out[2]));
  };
  separable.backward_flops = backward_flops;
  ops.push_back(separable);
}

}  // namespace cnnc
