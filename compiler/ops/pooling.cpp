// maxpool2d and avgpool2d: sliding-window reductions over H and W, Keras semantics; and
// global_avgpool2d, global_maxpool2d: the whole image per channel, [H, W, C] to [C] (Keras
// GlobalAveragePooling2D / GlobalMaxPooling2D).
// With padding 'same', max pooling ignores the padding and average pooling divides by the number
// of real (non-padding) elements in the window, as Keras does.
#include <fmt/format.h>

#include "ops/op.h"

namespace cnnc {

namespace {

OpDef pooling_op(const std::string& name, const std::string& summary, Pooling pooling) {
  OpDef op;
  op.name = name;
  op.summary = summary;
  op.traits.pooling = pooling;
  AttrSpec size{"size", AttrKind::IntPair};
  size.default_value = std::pair<int64_t, int64_t>(2, 2);
  size.help = "window size: an integer or [height, width]";
  AttrSpec stride{"stride", AttrKind::IntPair};
  stride.default_value = std::pair<int64_t, int64_t>(0, 0);  // 0: same as size (the front end fills it)
  stride.help = "step between windows; defaults to size";
  op.attrs = {size, stride, padding_attr()};
  op.input_rank = 3;
  op.infer_shape = [](const std::vector<Shape>& in, const Attrs& attrs) -> Shape {
    auto [ph, pw] = attrs.get_pair("size");
    auto [sh, sw] = attrs.get_pair("stride");
    const std::string& padding = attrs.get_string("padding");
    if (padding == "valid" && (ph > in[0][0] || pw > in[0][1]))
      throw ShapeError{fmt::format("pool size {}x{} is larger than the input {}x{} (with padding 'valid')", ph, pw,
                                   in[0][0], in[0][1]),
                       "size"};
    return {window_output_size(in[0][0], ph, sh, padding), window_output_size(in[0][1], pw, sw, padding), in[0][2]};
  };
  op.params = [](const std::vector<Shape>&, const Attrs&) { return std::vector<ParamSpec>{}; };
  op.flops = [](const std::vector<Shape>&, const Shape& out, const Attrs& attrs) {
    auto [ph, pw] = attrs.get_pair("size");
    return saturating_mul(shape_elements(out), ph * pw);
  };
  return op;
}

OpDef global_pooling_op(const std::string& name, const std::string& summary) {
  OpDef op;
  op.name = name;
  op.summary = summary;
  op.input_rank = 3;
  op.infer_shape = [](const std::vector<Shape>& in, const Attrs&) { return Shape{in[0][2]}; };
  op.params = [](const std::vector<Shape>&, const Attrs&) { return std::vector<ParamSpec>{}; };
  op.flops = [](const std::vector<Shape>& in, const Shape&, const Attrs&) { return shape_elements(in[0]); };
  return op;
}

}  // namespace

void register_pooling_ops(std::vector<OpDef>& ops) {
  ops.push_back(pooling_op("maxpool2d", "max over each window", Pooling::Max));
  ops.push_back(pooling_op("avgpool2d", "average over each window", Pooling::Average));
  ops.push_back(global_pooling_op("global_avgpool2d", "average of each channel over the whole image, to a vector"));
  ops.push_back(global_pooling_op("global_maxpool2d", "maximum of each channel over the whole image, to a vector"));
}

}  // namespace cnnc
