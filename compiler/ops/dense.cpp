// dense: fully connected layer on a vector, kernel [in, units] as in Keras.
#include <fmt/format.h>

#include "ops/op.h"

namespace cnnc {

void register_dense_ops(std::vector<OpDef>& ops) {
  OpDef op;
  op.name = "dense";
  op.summary = "fully connected layer with optional bias and activation";
  AttrSpec units{"units", AttrKind::Int, /*required=*/true};
  units.help = "number of outputs";
  AttrSpec use_bias{"use_bias", AttrKind::Bool};
  use_bias.default_value = true;
  use_bias.help = "add a learned bias per output";
  op.attrs = {units, activation_attr(), use_bias};
  op.input_rank = 1;
  op.traits.takes_activation = true;
  op.traits.absorbs_affine = true;
  op.infer_shape = [](const std::vector<Shape>&, const Attrs& attrs) -> Shape { return {attrs.get_int("units")}; };
  op.params = [](const std::vector<Shape>& in, const Attrs& attrs) {
    int64_t units = attrs.get_int("units");
    std::vector<ParamSpec> params = {{"kernel", {in[0][0], units}, true, Initializer::GlorotUniform}};
    if (attrs.get_bool("use_bias")) params.push_back({"bias", {units}});
    return params;
  };
  op.flops = [](const std::vector<Shape>& in, const Shape& out, const Attrs&) {
    return saturating_mul(2, saturating_mul(in[0][0], out[0]));
  };
  op.backward_flops = [](int64_t forward, bool input_gradient) { return saturating_mul(forward, input_gradient ? 2 : 1); };
  ops.push_back(op);
}

}  // namespace cnnc
