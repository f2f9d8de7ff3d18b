// flatten (HWC to a vector, row-major as in Keras), dropout (identity at inference),
// zero_padding2d (zeros around an image) and upsampling2d (nearest-neighbour enlargement).
#include "ops/op.h"

namespace cnnc {

void register_shape_ops(std::vector<OpDef>& ops) {
  OpDef flatten;
  flatten.name = "flatten";
  flatten.summary = "reshape to a vector (row-major: H, then W, then C)";
  flatten.infer_shape = [](const std::vector<Shape>& in, const Attrs&) { return Shape{shape_elements(in[0])}; };
  flatten.params = [](const std::vector<Shape>&, const Attrs&) { return std::vector<ParamSpec>{}; };
  flatten.flops = [](const std::vector<Shape>&, const Shape&, const Attrs&) { return int64_t(0); };
  flatten.traits.view = true;
  ops.push_back(flatten);

  OpDef dropout;
  dropout.name = "dropout";
  dropout.summary = "zero a random fraction `rate` of the inputs while training; identity at inference";
  AttrSpec rate{"rate", AttrKind::Float, /*required=*/true};
  rate.min = 0;
  rate.max = 1;
  rate.max_exclusive = true;
  rate.help = "fraction of inputs to drop, in [0, 1)";
  dropout.attrs = {rate};
  dropout.infer_shape = [](const std::vector<Shape>& in, const Attrs&) { return in[0]; };
  dropout.params = [](const std::vector<Shape>&, const Attrs&) { return std::vector<ParamSpec>{}; };
  dropout.flops = [](const std::vector<Shape>&, const Shape& out, const Attrs&) { return shape_elements(out); };
  dropout.traits.view_at_inference = true;
  dropout.traits.training_form = true;
  dropout.traits.random = true;
  ops.push_back(dropout);

  OpDef pad;
  pad.name = "zero_padding2d";
  pad.summary = "rows and columns of zeros around an image (Keras ZeroPadding2D)";
  AttrSpec padding{"padding", AttrKind::Padding};
  padding.default_value = Padding4{1, 1, 1, 1};
  padding.min = 0;
  padding.max = 4096;
  padding.help = "n, [rows, columns] (each on both sides) or [[top, bottom], [left, right]]";
  pad.attrs = {padding};
  pad.input_rank = 3;
  pad.infer_shape = [](const std::vector<Shape>& in, const Attrs& attrs) {
    const Padding4& p = attrs.get_padding("padding");
    return Shape{in[0][0] + p[0] + p[1], in[0][1] + p[2] + p[3], in[0][2]};
  };
  pad.params = [](const std::vector<Shape>&, const Attrs&) { return std::vector<ParamSpec>{}; };
  pad.flops = [](const std::vector<Shape>&, const Shape&, const Attrs&) { return int64_t(0); };
  ops.push_back(pad);

  OpDef up;
  up.name = "upsampling2d";
  up.summary = "repeat each row and column `size` times (Keras UpSampling2D, nearest)";
  AttrSpec size{"size", AttrKind::IntPair};
  size.default_value = std::pair<int64_t, int64_t>(2, 2);
  size.max = 64;
  size.help = "factors for rows and columns: an integer or [rows, columns]";
  up.attrs = {size};
  up.input_rank = 3;
  up.infer_shape = [](const std::vector<Shape>& in, const Attrs& attrs) {
    auto [sh, sw] = attrs.get_pair("size");
    return Shape{saturating_mul(in[0][0], sh), saturating_mul(in[0][1], sw), in[0][2]};
  };
  up.params = [](const std::vector<Shape>&, const Attrs&) { return std::vector<ParamSpec>{}; };
  up.flops = [](const std::vector<Shape>&, const Shape&, const Attrs&) { return int64_t(0); };
  ops.push_back(up);
}

}  // namespace cnnc
