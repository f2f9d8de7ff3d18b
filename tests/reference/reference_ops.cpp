#include "reference/reference_ops.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>

namespace cnnc::reference {

namespace {

Tensor from_floats(const float* values, const Shape& shape, int batch) {
  Tensor tensor{batch, shape, {}};
  tensor.data.assign(values, values + batch * tensor.per_example());
  return tensor;
}

int same_pad_before(int64_t in, int64_t out, int64_t window, int64_t stride) {
  return int(std::max<int64_t>((out - 1) * stride + window - in, 0) / 2);
}

Tensor conv2d(const Tensor& in, const Attrs& attrs, const Shape& out_shape, const double* kernel, const double* bias) {
  auto [kh, kw] = attrs.get_pair("kernel");
  auto [sh, sw] = attrs.get_pair("stride");
  auto [dh, dw] = attrs.get_pair("dilation");
  bool same = attrs.get_string("padding") == "same";
  int64_t cin = in.shape[2], cout = out_shape[2];
  int top = same ? same_pad_before(in.shape[0], out_shape[0], (kh - 1) * dh + 1, sh) : 0;
  int left = same ? same_pad_before(in.shape[1], out_shape[1], (kw - 1) * dw + 1, sw) : 0;
  Tensor out{in.batch, out_shape, std::vector<double>(size_t(in.batch * shape_elements(out_shape)))};
  for (int n = 0; n < in.batch; ++n)
    for (int64_t y = 0; y < out_shape[0]; ++y)
      for (int64_t x = 0; x < out_shape[1]; ++x)
        for (int64_t co = 0; co < cout; ++co) {
          double sum = bias ? bias[co] : 0.0;
          for (int64_t ky = 0; ky < kh; ++ky)
            for (int64_t kx = 0; kx < kw; ++kx) {
              int64_t iy = y * sh + ky * dh - top, ix = x * sw + kx * dw - left;
              if (iy < 0 || iy >= in.shape[0] || ix < 0 || ix >= in.shape[1]) continue;  // zero padding
              for (int64_t ci = 0; ci < cin; ++ci)
                sum += double(kernel[((ky * kw + kx) * cin + ci) * cout + co]) * in.at(n, iy, ix, ci);
            }
          out.at(n, y, x, co) = sum;
        }
  return out;
}

// depthwise_conv2d: output channel ci * M + m is input channel ci convolved with kernel slice
// [kh, kw, ci, m]; no bias when `bias` is null.
Tensor depthwise_conv2d(const Tensor& in, const Attrs& attrs, const Shape& out_shape, const double* kernel,
                        const double* bias) {
  auto [kh, kw] = attrs.get_pair("kernel");
  auto [sh, sw] = attrs.get_pair("stride");
  auto [dh, dw] = attrs.get_pair("dilation");
  int64_t multiplier = attrs.get_int("depth_multiplier");
  bool same = attrs.get_string("padding") == "same";
  int64_t cin = in.shape[2];
  int top = same ? same_pad_before(in.shape[0], out_shape[0], (kh - 1) * dh + 1, sh) : 0;
  int left = same ? same_pad_before(in.shape[1], out_shape[1], (kw - 1) * dw + 1, sw) : 0;
  Shape shape = {out_shape[0], out_shape[1], cin * multiplier};
  Tensor out{in.batch, shape, std::vector<double>(size_t(in.batch * shape_elements(shape)))};
  for (int n = 0; n < in.batch; ++n)
    for (int64_t y = 0; y < shape[0]; ++y)
      for (int64_t x = 0; x < shape[1]; ++x)
        for (int64_t ci = 0; ci < cin; ++ci)
          for (int64_t m = 0; m < multiplier; ++m) {
            int64_t co = ci * multiplier + m;
            double sum = bias ? bias[co] : 0.0;
            for (int64_t ky = 0; ky < kh; ++ky)
              for (int64_t kx = 0; kx < kw; ++kx) {
                int64_t iy = y * sh + ky * dh - top, ix = x * sw + kx * dw - left;
                if (iy < 0 || iy >= in.shape[0] || ix < 0 || ix >= in.shape[1]) continue;  // zero padding
                sum += kernel[((ky * kw + kx) * cin + ci) * multiplier + m] * in.at(n, iy, ix, ci);
              }
            out.at(n, y, x, co) = sum;
          }
  return out;
}

Tensor pool2d(bool is_max, const Tensor& in, const Attrs& attrs, const Shape& out_shape) {
  auto [ph, pw] = attrs.get_pair("size");
  auto [sh, sw] = attrs.get_pair("stride");
  bool same = attrs.get_string("padding") == "same";
  int top = same ? same_pad_before(in.shape[0], out_shape[0], ph, sh) : 0;
  int left = same ? same_pad_before(in.shape[1], out_shape[1], pw, sw) : 0;
  Tensor out{in.batch, out_shape, std::vector<double>(size_t(in.batch * shape_elements(out_shape)))};
  for (int n = 0; n < in.batch; ++n)
    for (int64_t y = 0; y < out_shape[0]; ++y)
      for (int64_t x = 0; x < out_shape[1]; ++x)
        for (int64_t c = 0; c < out_shape[2]; ++c) {
          double best = -std::numeric_limits<double>::infinity(), sum = 0;
          int count = 0;
          for (int64_t dy = 0; dy < ph; ++dy)
            for (int64_t dx = 0; dx < pw; ++dx) {
              int64_t iy = y * sh + dy - top, ix = x * sw + dx - left;
              if (iy < 0 || iy >= in.shape[0] || ix < 0 || ix >= in.shape[1]) continue;  // padding is ignored
              double value = in.at(n, iy, ix, c);
              best = std::max(best, value);
              sum += value;
              ++count;
            }
          out.at(n, y, x, c) = is_max ? best : sum / count;
        }
  return out;
}

Tensor dense(const Tensor& in, int64_t units, const double* kernel, const double* bias) {
  int64_t features = in.per_example();
  Tensor out{in.batch, {units}, std::vector<double>(size_t(in.batch * units))};
  for (int n = 0; n < in.batch; ++n)
    for (int64_t u = 0; u < units; ++u) {
      double sum = bias ? bias[u] : 0.0;
      for (int64_t i = 0; i < features; ++i) sum += double(kernel[i * units + u]) * in.data[size_t(n * features + i)];
      out.data[size_t(n * units + u)] = sum;
    }
  return out;
}

// Softmax over the last axis.
void softmax(Tensor& t) {
  int64_t width = t.shape.back();
  for (size_t row = 0; row < t.data.size() / size_t(width); ++row) {
    double* values = &t.data[row * size_t(width)];
    double top = *std::max_element(values, values + width), sum = 0;
    for (int64_t i = 0; i < width; ++i) sum += std::exp(values[i] - top);
    for (int64_t i = 0; i < width; ++i) values[i] = std::exp(values[i] - top) / sum;
  }
}

// An element-wise function applied to every value.
Tensor map_values(Tensor t, double (*f)(double)) {
  for (double& v : t.data) v = f(v);
  return t;
}

// The dropout keep mask, as the package draws it (codegen/halide_common.h, dropout_keep): a
// hash of the flat NHWC index of the value in the batch, the step and the seed.
bool dropout_keeps(int64_t index, uint32_t seed, int64_t step, double rate) {
  uint32_t h = uint32_t(int32_t(index)) * 0x9E3779B1u;
  h ^= uint32_t(int32_t(step)) * 0x85EBCA77u;
  h ^= seed * 0xC2B2AE3Du;
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return float(h >> 8) * (1.0f / 16777216.0f) >= float(rate);
}

// The built-in ops' references, by op name.
std::map<std::string, ReferenceOp>& registry() {
  static std::map<std::string, ReferenceOp>* ops = [] {
    auto* r = new std::map<std::string, ReferenceOp>;
    auto& ops = *r;
    ops["conv2d"] = [](const ReferenceArgs& a) {
      return conv2d(a.in[0], a.attrs, a.out_shape, a.param("kernel"), a.param("bias"));
    };
    ops["depthwise_conv2d"] = [](const ReferenceArgs& a) {
      return depthwise_conv2d(a.in[0], a.attrs, a.out_shape, a.param("depthwise_kernel"), a.param("bias"));
    };
    // separable_conv2d: the depthwise step, then a 1x1 convolution with the bias.
    ops["separable_conv2d"] = [](const ReferenceArgs& a) {
      Tensor middle = depthwise_conv2d(a.in[0], a.attrs, a.out_shape, a.param("depthwise_kernel"), nullptr);
      int64_t cm = middle.shape[2], filters = a.out_shape[2];
      Tensor out{middle.batch, a.out_shape, std::vector<double>(size_t(middle.batch * shape_elements(a.out_shape)))};
      const double* pointwise = a.param("pointwise_kernel");
      const double* bias = a.param("bias");
      for (int n = 0; n < middle.batch; ++n)
        for (int64_t y = 0; y < a.out_shape[0]; ++y)
          for (int64_t x = 0; x < a.out_shape[1]; ++x)
            for (int64_t f = 0; f < filters; ++f) {
              double sum = bias ? bias[f] : 0.0;
              for (int64_t j = 0; j < cm; ++j) sum += pointwise[j * filters + f] * middle.at(n, y, x, j);
              out.at(n, y, x, f) = sum;
            }
      return out;
    };
    ops["dense"] = [](const ReferenceArgs& a) {
      return dense(a.in[0], a.attrs.get_int("units"), a.param("kernel"), a.param("bias"));
    };
    ops["maxpool2d"] = [](const ReferenceArgs& a) { return pool2d(true, a.in[0], a.attrs, a.out_shape); };
    ops["avgpool2d"] = [](const ReferenceArgs& a) { return pool2d(false, a.in[0], a.attrs, a.out_shape); };
    for (bool is_max : {false, true})
      ops[is_max ? "global_maxpool2d" : "global_avgpool2d"] = [is_max](const ReferenceArgs& a) {
        const Tensor& in = a.in[0];
        int64_t channels = in.shape[2];
        Tensor out{in.batch, {channels}, std::vector<double>(size_t(in.batch * channels))};
        for (int n = 0; n < in.batch; ++n)
          for (int64_t c = 0; c < channels; ++c) {
            double best = -std::numeric_limits<double>::infinity(), sum = 0;
            for (int64_t y = 0; y < in.shape[0]; ++y)
              for (int64_t x = 0; x < in.shape[1]; ++x) {
                best = std::max(best, in.at(n, y, x, c));
                sum += in.at(n, y, x, c);
              }
            out.data[size_t(n * channels + c)] = is_max ? best : sum / double(in.shape[0] * in.shape[1]);
          }
        return out;
      };
    ops["relu"] = [](const ReferenceArgs& a) { return map_values(a.in[0], [](double v) { return std::max(v, 0.0); }); };
    ops["sigmoid"] = [](const ReferenceArgs& a) {
      return map_values(a.in[0], [](double v) { return 1.0 / (1.0 + std::exp(-v)); });
    };
    ops["tanh"] = [](const ReferenceArgs& a) { return map_values(a.in[0], [](double v) { return std::tanh(v); }); };
    ops["relu6"] = [](const ReferenceArgs& a) {
      return map_values(a.in[0], [](double v) { return std::min(std::max(v, 0.0), 6.0); });
    };
    ops["hard_sigmoid"] = [](const ReferenceArgs& a) {
      return map_values(a.in[0], [](double v) { return std::min(std::max(v + 3.0, 0.0), 6.0) / 6.0; });
    };
    // As a value of `activation:` (no attributes): Keras's defaults for that use.
    auto alpha = [](const Attrs& attrs, double fallback) { return attrs.has("alpha") ? attrs.get_float("alpha") : fallback; };
    ops["leaky_relu"] = [alpha](const ReferenceArgs& a) {
      Tensor out = a.in[0];
      double slope = alpha(a.attrs, 0.2);
      for (double& v : out.data) v = v > 0 ? v : slope * v;
      return out;
    };
    ops["elu"] = [alpha](const ReferenceArgs& a) {
      Tensor out = a.in[0];
      double scale = alpha(a.attrs, 1.0);
      for (double& v : out.data) v = v > 0 ? v : scale * (std::exp(v) - 1.0);
      return out;
    };
    for (const char* name : {"swish", "silu"})
      ops[name] = [](const ReferenceArgs& a) {
        return map_values(a.in[0], [](double v) { return v / (1.0 + std::exp(-v)); });
      };
    ops["gelu"] = [](const ReferenceArgs& a) {
      return map_values(a.in[0], [](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); });
    };
    ops["hard_swish"] = [](const ReferenceArgs& a) {
      return map_values(a.in[0], [](double v) { return v * std::min(std::max(v + 3.0, 0.0), 6.0) / 6.0; });
    };
    ops["softmax"] = [](const ReferenceArgs& a) {
      Tensor out = a.in[0];
      softmax(out);
      return out;
    };
    ops["add"] = [](const ReferenceArgs& a) {
      Tensor out = a.in[0];
      for (size_t i = 1; i < a.in.size(); ++i)
        for (size_t k = 0; k < out.data.size(); ++k) out.data[k] += a.in[i].data[k];
      return out;
    };
    ops["batchnorm"] = [](const ReferenceArgs& a) {
      Tensor out = a.in[0];
      int64_t channels = out.shape.back();
      double epsilon = a.attrs.get_float("epsilon");
      std::vector<double> mean(a.param("moving_mean"), a.param("moving_mean") + channels);
      std::vector<double> variance(a.param("moving_variance"), a.param("moving_variance") + channels);
      if (a.training) {  // the batch's statistics: mean and biased variance per channel
        std::vector<double> sum(size_t(channels), 0.0), squares(size_t(channels), 0.0);
        double count = double(out.data.size() / size_t(channels));
        for (size_t k = 0; k < out.data.size(); ++k) sum[k % size_t(channels)] += out.data[k];
        for (int64_t c = 0; c < channels; ++c) mean[size_t(c)] = sum[size_t(c)] / count;
        for (size_t k = 0; k < out.data.size(); ++k) {
          double centered = out.data[k] - mean[k % size_t(channels)];
          squares[k % size_t(channels)] += centered * centered;
        }
        for (int64_t c = 0; c < channels; ++c) variance[size_t(c)] = squares[size_t(c)] / count;
      }
      for (size_t k = 0; k < out.data.size(); ++k) {
        size_t c = k % size_t(channels);
        out.data[k] = (out.data[k] - mean[c]) / std::sqrt(variance[c] + epsilon) * a.param("gamma")[c] + a.param("beta")[c];
      }
      return out;
    };
    ops["concat"] = [](const ReferenceArgs& a) {
      // Join along the Keras axis: view each example as [outer, axis, inner] blocks.
      int64_t rank = int64_t(a.out_shape.size());
      int64_t axis = a.attrs.get_int("axis");
      int64_t index = axis < 0 ? rank + axis : axis - 1;
      int batch = a.in[0].batch;
      Tensor out{batch, a.out_shape, {}};
      int64_t outer = 1;
      for (int64_t d = 0; d < index; ++d) outer *= a.out_shape[size_t(d)];
      for (int n = 0; n < batch; ++n)
        for (int64_t o = 0; o < outer; ++o)
          for (const Tensor& t : a.in) {
            int64_t block = t.per_example() / outer;
            const double* from = &t.data[size_t(n * t.per_example() + o * block)];
            out.data.insert(out.data.end(), from, from + block);
          }
      return out;
    };
    ops["dropout"] = [](const ReferenceArgs& a) {
      Tensor out = a.in[0];  // at inference: the values unchanged
      if (!a.training) return out;
      double rate = a.attrs.get_float("rate");
      double scale = double(float(1.0 / (1.0 - rate)));
      for (size_t k = 0; k < out.data.size(); ++k)
        out.data[k] = dropout_keeps(int64_t(k), a.training->seed, a.training->step, rate) ? out.data[k] * scale : 0.0;
      return out;
    };
    ops["zero_padding2d"] = [](const ReferenceArgs& a) {
      const Tensor& in = a.in[0];
      const Padding4& p = a.attrs.get_padding("padding");
      Tensor out{in.batch, a.out_shape, std::vector<double>(size_t(in.batch * shape_elements(a.out_shape)), 0.0)};
      for (int n = 0; n < in.batch; ++n)
        for (int64_t y = 0; y < in.shape[0]; ++y)
          for (int64_t x = 0; x < in.shape[1]; ++x)
            for (int64_t c = 0; c < in.shape[2]; ++c) out.at(n, y + p[0], x + p[2], c) = in.at(n, y, x, c);
      return out;
    };
    ops["upsampling2d"] = [](const ReferenceArgs& a) {
      const Tensor& in = a.in[0];
      auto [sh, sw] = a.attrs.get_pair("size");
      Tensor out{in.batch, a.out_shape, std::vector<double>(size_t(in.batch * shape_elements(a.out_shape)))};
      for (int n = 0; n < in.batch; ++n)
        for (int64_t y = 0; y < a.out_shape[0]; ++y)
          for (int64_t x = 0; x < a.out_shape[1]; ++x)
            for (int64_t c = 0; c < a.out_shape[2]; ++c) out.at(n, y, x, c) = in.at(n, y / sh, x / sw, c);
      return out;
    };
    ops["flatten"] = [](const ReferenceArgs& a) { return a.in[0]; };  // the values unchanged
    return r;
  }();
  return *ops;
}

const ReferenceOp& reference_of(const OpDef& def) {
  auto it = registry().find(def.name);
  if (it == registry().end()) throw std::logic_error("the reference has no op '" + def.name + "'");
  return it->second;
}

Tensor compute_node(const Node& node, const std::vector<Tensor>& in, const ParamLookup& param, int batch,
                    const Training* training) {
  const Shape& own_shape = node.unfused_shape.empty() ? node.shape : node.unfused_shape;
  Tensor out = reference_of(*node.def)(ReferenceArgs{in, node.attrs, own_shape, param, training});
  out.batch = batch;
  out.shape = own_shape;
  ParamLookup none = [](const std::string&) -> const double* { return nullptr; };
  for (const Node::FusedOp& fused : node.fused) {
    // A fused pooling gives the node's shape; an activation keeps the shape.
    const Shape& shape = fused.def->traits.pooling != Pooling::None ? node.shape : out.shape;
    out = reference_of(*fused.def)(ReferenceArgs{{out}, fused.attrs, shape, none, training});
    out.shape = shape;
  }
  out.shape = node.shape;
  return out;
}

}  // namespace

void register_reference_op(const std::string& name, ReferenceOp op) {
  if (!registry().emplace(name, std::move(op)).second)
    throw std::logic_error("op '" + name + "' already has a reference");
}

bool has_reference_op(const std::string& name) { return registry().count(name) != 0; }

std::vector<double> run_node(const Graph& graph, const Node& node, const std::vector<const float*>& inputs,
                             const std::map<std::string, const float*>& params, int batch) {
  std::vector<Tensor> in;
  for (size_t i = 0; i < inputs.size(); ++i) in.push_back(from_floats(inputs[i], graph.nodes[node.inputs[i]].shape, batch));
  std::map<std::string, std::vector<double>> converted;
  for (const ParamSpec& spec : node.params) {
    auto it = params.find(spec.name);
    if (it != params.end()) converted[spec.name].assign(it->second, it->second + shape_elements(spec.shape));
  }
  ParamLookup param = [&](const std::string& name) -> const double* {
    auto it = converted.find(name);
    return it == converted.end() ? nullptr : it->second.data();
  };
  return compute_node(node, in, param, batch, nullptr).data;
}

std::vector<double> training_forward(const Graph& graph, const std::map<std::string, std::vector<double>>& params,
                                     const float* input, int batch, const Training& training) {
  std::vector<Tensor> values(graph.nodes.size());
  values[0] = from_floats(input, graph.nodes[0].shape, batch);
  for (const Node& node : graph.nodes) {
    if (node.id == 0) continue;
    std::vector<Tensor> in;
    for (int from : node.inputs) in.push_back(values[size_t(from)]);
    ParamLookup param = [&](const std::string& name) -> const double* {
      auto it = params.find(node.name + "." + name);
      return it == params.end() ? nullptr : it->second.data();
    };
    values[size_t(node.id)] = compute_node(node, in, param, batch, &training);
  }
  return values[size_t(graph.output)].data;
}

double cross_entropy(const std::vector<double>& probabilities, const std::vector<int32_t>& labels) {
  size_t classes = probabilities.size() / labels.size();
  double total = 0;
  for (size_t n = 0; n < labels.size(); ++n) total -= std::log(probabilities[n * classes + size_t(labels[n])]);
  return total / double(labels.size());
}

}  // namespace cnnc::reference
