// conv2d: 2-D convolution over NHWC images, Keras semantics (cross-correlation, kernel [kh, kw, cin, filters]).
#include <fmt/format.h>

#include "ops/op.h"

namespace cnnc {

void register_conv_ops(std::vector<OpDef>& ops) {
  OpDef op;
  op.name = "conv2d";
  op.summary = "2-D convolution with optional bias and activation";
  AttrSpec filters{"filters", AttrKind::Int, /*required=*/true};
  filters.help = "number of output channels";
  AttrSpec kernel{"kernel", AttrKind::IntPair, /*required=*/true};
  kernel.help = "window size: an integer or [height, width]";
  AttrSpec stride{"stride", AttrKind::IntPair};
  stride.default_value = std::pair<int64_t, int64_t>(1, 1);
  stride.help = "step between windows: an integer or [height, width]";
  AttrSpec dilation{"dilation", AttrKind::IntPair};
  dilation.default_value = std::pair<int64_t, int64_t>(1, 1);
  dilation.max = 64;
  dilation.help = "spacing between kernel taps (Keras dilation_rate): an integer or [height, width]";
  AttrSpec use_bias{"use_bias", AttrKind::Bool};
  use_bias.default_value = true;
  use_bias.help = "add a learned bias per output channel";
  op.attrs = {filters, kernel, stride, padding_attr(), dilation, activation_attr(), use_bias};
  op.input_rank = 3;
  op.traits.takes_activation = true;
  op.traits.absorbs_pooling = true;
  op.traits.pool_index = true;

  op.infer_shape = [](const std::vector<Shape>& in, const Attrs& attrs) -> Shape {
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
    if (padding == "valid" && (span_h > in[0][0] || span_w > in[0][1]))
      throw ShapeError{fmt::format("kernel {}x{}{} is larger than the input {}x{} (with padding 'valid'); "
                                   "use a smaller kernel or padding: same",
                                   span_h, span_w, dh > 1 || dw > 1 ? " (dilated)" : "", in[0][0], in[0][1]),
                       "kernel"};
    return {window_output_size(in[0][0], span_h, sh, padding), window_output_size(in[0][1], span_w, sw, padding),
            attrs.get_int("filters")};
  };
  op.params = [](const std::vector<Shape>& in, const Attrs& attrs) {
    auto [kh, kw] = attrs.get_pair("kernel");
    int64_t filters = attrs.get_int("filters");
    std::vector<ParamSpec> params = {{"kernel", {kh, kw, in[0][2], filters}, true, Initializer::GlorotUniform}};
    if (attrs.get_bool("use_bias")) params.push_back({"bias", {filters}});
    return params;
  };
  op.flops = [](const std::vector<Shape>& in, const Shape& out, const Attrs& attrs) {
    auto [kh, kw] = attrs.get_pair("kernel");
    return saturating_mul(saturating_mul(2, shape_elements(out)), saturating_mul(kh * kw, in[0][2]));
  };
  // The weight gradient does the forward FLOPs once, the input gradient once more.
  op.backward_flops = [](int64_t forward, bool input_gradient) { return saturating_mul(forward, input_gradient ? 2 : 1); };
  ops.push_back(op);
}

}  // namespace cnnc
