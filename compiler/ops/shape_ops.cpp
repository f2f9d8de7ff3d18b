// flatten (HWC to a vector, row-major as in Keras) and dropout (identity at inference).
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
}

}  // namespace cnnc
