// add (element-wise sum of inputs of one shape) and concat (join along an axis).
#include <fmt/format.h>

#include "ops/op.h"

namespace cnnc {

void register_merge_ops(std::vector<OpDef>& ops) {
  OpDef add;
  add.name = "add";
  add.summary = "element-wise sum of two or more inputs of the same shape";
  add.min_inputs = 2;
  add.max_inputs = -1;
  add.traits.takes_activation = true;
  add.traits.inference_sum = true;  // folded into the convolution before it at inference
  add.infer_shape = [](const std::vector<Shape>& in, const Attrs&) {
    for (size_t i = 1; i < in.size(); ++i)
      if (in[i] != in[0])
        throw ShapeError{fmt::format("inputs must have the same shape, but input 1 is {} and input {} is {}",
                                     shape_str(in[0]), i + 1, shape_str(in[i])),
                         ""};
    return in[0];
  };
  add.params = [](const std::vector<Shape>&, const Attrs&) { return std::vector<ParamSpec>{}; };
  add.flops = [](const std::vector<Shape>& in, const Shape& out, const Attrs&) {
    return saturating_mul(shape_elements(out), int64_t(in.size()) - 1);
  };
  ops.push_back(add);

  OpDef concat;
  concat.name = "concat";
  concat.summary = "join two or more inputs along an axis (default: the last, channels)";
  AttrSpec axis{"axis", AttrKind::Int};
  axis.default_value = int64_t(-1);
  axis.min = -3;
  axis.max = 3;
  axis.help = "axis to join along, excluding the batch: -1 is the last, 1 the first";
  concat.attrs = {axis};
  concat.min_inputs = 2;
  concat.max_inputs = -1;
  concat.infer_shape = [](const std::vector<Shape>& in, const Attrs& attrs) {
    int64_t rank = int64_t(in[0].size());
    int64_t axis = attrs.get_int("axis");
    // Keras counts the batch as axis 0; negative axes count from the end.
    int64_t index = axis < 0 ? rank + axis : axis - 1;
    if (axis == 0 || index < 0 || index >= rank)
      throw ShapeError{fmt::format("axis {} is out of range for inputs of rank {} (batch excluded): use 1..{} or -1..-{}",
                                   axis, rank, rank, rank),
                       "axis"};
    Shape out = in[0];
    for (size_t i = 1; i < in.size(); ++i) {
      bool compatible = in[i].size() == in[0].size();
      for (int64_t d = 0; compatible && d < rank; ++d)
        if (d != index && in[i][d] != in[0][d]) compatible = false;
      if (!compatible)
        throw ShapeError{fmt::format("inputs must match except along axis {}, but input 1 is {} and input {} is {}",
                                     axis, shape_str(in[0]), i + 1, shape_str(in[i])),
                         ""};
      out[index] += in[i][index];
    }
    return out;
  };
  concat.params = [](const std::vector<Shape>&, const Attrs&) { return std::vector<ParamSpec>{}; };
  concat.flops = [](const std::vector<Shape>&, const Shape&, const Attrs&) { return int64_t(0); };
  ops.push_back(concat);
}

}  // namespace cnnc
