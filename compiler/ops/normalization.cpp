// batchnorm: per-channel normalization over the last axis, Keras BatchNormalization.
// Parameters gamma and beta are trained; moving_mean and moving_variance are not.
#include "ops/op.h"

namespace cnnc {

void register_normalization_ops(std::vector<OpDef>& ops) {
  OpDef op;
  op.name = "batchnorm";
  op.summary = "batch normalization over the last axis";
  AttrSpec momentum{"momentum", AttrKind::Float};
  momentum.default_value = 0.99;
  momentum.min = 0;
  momentum.max = 1;
  momentum.help = "moving average momentum, in [0, 1]";
  AttrSpec epsilon{"epsilon", AttrKind::Float};
  epsilon.default_value = 0.001;
  epsilon.min = 0;
  epsilon.max = 1;
  epsilon.help = "added to the variance, in [0, 1]";
  op.attrs = {momentum, epsilon};
  op.infer_shape = [](const std::vector<Shape>& in, const Attrs&) { return in[0]; };
  op.params = [](const std::vector<Shape>& in, const Attrs&) {
    int64_t channels = in[0].back();
    return std::vector<ParamSpec>{{"gamma", {channels}, true, Initializer::Ones},
                                  {"beta", {channels}, true, Initializer::Zeros},
                                  {"moving_mean", {channels}, false, Initializer::Zeros},
                                  {"moving_variance", {channels}, false, Initializer::Ones, true}};
  };
  op.flops = [](const std::vector<Shape>&, const Shape& out, const Attrs&) {
    return saturating_mul(2, shape_elements(out));
  };
  op.traits.takes_activation = true;
  op.traits.training_form = true;  // batch statistics; updates moving_mean and moving_variance
  op.traits.inference_affine = true;  // moving statistics: folded into a convolution or dense before it
  ops.push_back(op);
}

}  // namespace cnnc
