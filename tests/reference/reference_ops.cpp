#include "reference/reference_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace cnnc::reference {

namespace {

// A batch of NHWC (or N x features) values.
struct Tensor {
  int batch = 0;
  Shape shape;  // per example
  std::vector<double> data;
  int64_t per_example() const { return shape_elements(shape); }
  double& at(int n, int64_t y, int64_t x, int64_t c) { return data[size_t(((n * shape[0] + y) * shape[1] + x) * shape[2] + c)]; }
  double at(int n, int64_t y, int64_t x, int64_t c) const {
    return data[size_t(((n * shape[0] + y) * shape[1] + x) * shape[2] + c)];
  }
};

Tensor from_floats(const float* values, const Shape& shape, int batch) {
  Tensor tensor{batch, shape, {}};
  tensor.data.assign(values, values + batch * tensor.per_example());
  return tensor;
}

int same_pad_before(int64_t in, int64_t out, int64_t window, int64_t stride) {
  return int(std::max<int64_t>((out - 1) * stride + window - in, 0) / 2);
}

Tensor conv2d(const Tensor& in, const Attrs& attrs, const Shape& out_shape, const float* kernel, const float* bias) {
  auto [kh, kw] = attrs.get_pair("kernel");
  auto [sh, sw] = attrs.get_pair("stride");
  bool same = attrs.get_string("padding") == "same";
  int64_t cin = in.shape[2], cout = out_shape[2];
  int top = same ? same_pad_before(in.shape[0], out_shape[0], kh, sh) : 0;
  int left = same ? same_pad_before(in.shape[1], out_shape[1], kw, sw) : 0;
  Tensor out{in.batch, out_shape, std::vector<double>(size_t(in.batch * shape_elements(out_shape)))};
  for (int n = 0; n < in.batch; ++n)
    for (int64_t y = 0; y < out_shape[0]; ++y)
      for (int64_t x = 0; x < out_shape[1]; ++x)
        for (int64_t co = 0; co < cout; ++co) {
          double sum = bias ? bias[co] : 0.0;
          for (int64_t ky = 0; ky < kh; ++ky)
            for (int64_t kx = 0; kx < kw; ++kx) {
              int64_t iy = y * sh + ky - top, ix = x * sw + kx - left;
              if (iy < 0 || iy >= in.shape[0] || ix < 0 || ix >= in.shape[1]) continue;  // zero padding
              for (int64_t ci = 0; ci < cin; ++ci)
                sum += double(kernel[((ky * kw + kx) * cin + ci) * cout + co]) * in.at(n, iy, ix, ci);
            }
          out.at(n, y, x, co) = sum;
        }
  return out;
}

Tensor pool2d(const std::string& op, const Tensor& in, const Attrs& attrs, const Shape& out_shape) {
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
          out.at(n, y, x, c) = op == "maxpool2d" ? best : sum / count;
        }
  return out;
}

Tensor dense(const Tensor& in, int64_t units, const float* kernel, const float* bias) {
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

void activate(const std::string& op, Tensor& t) {
  if (op == "softmax") return softmax(t);
  for (double& v : t.data) {
    if (op == "relu") v = std::max(v, 0.0);
    else if (op == "sigmoid") v = 1.0 / (1.0 + std::exp(-v));
    else if (op == "tanh") v = std::tanh(v);
  }
}

}  // namespace

std::vector<double> run_node(const Graph& graph, const Node& node, const std::vector<const float*>& inputs,
                             const std::map<std::string, const float*>& params, int batch) {
  std::vector<Tensor> in;
  for (size_t i = 0; i < inputs.size(); ++i) in.push_back(from_floats(inputs[i], graph.nodes[node.inputs[i]].shape, batch));
  auto param = [&](const std::string& name) -> const float* {
    auto it = params.find(name);
    return it == params.end() ? nullptr : it->second;
  };
  Tensor out;
  const std::string& op = node.op;
  if (op == "conv2d") {
    out = conv2d(in[0], node.attrs, node.unfused_shape, param("kernel"), param("bias"));
  } else if (op == "dense") {
    out = dense(in[0], node.attrs.get_int("units"), param("kernel"), param("bias"));
  } else if (op == "maxpool2d" || op == "avgpool2d") {
    out = pool2d(op, in[0], node.attrs, node.unfused_shape);
  } else if (op == "relu" || op == "sigmoid" || op == "tanh" || op == "softmax") {
    out = in[0];
    activate(op, out);
  } else if (op == "add") {
    out = in[0];
    for (size_t i = 1; i < in.size(); ++i)
      for (size_t k = 0; k < out.data.size(); ++k) out.data[k] += in[i].data[k];
  } else if (op == "batchnorm") {
    out = in[0];
    int64_t channels = out.shape.back();
    double epsilon = node.attrs.get_float("epsilon");
    for (size_t k = 0; k < out.data.size(); ++k) {
      int64_t c = int64_t(k) % channels;
      out.data[k] = (out.data[k] - param("moving_mean")[c]) / std::sqrt(double(param("moving_variance")[c]) + epsilon) *
                        param("gamma")[c] +
                    param("beta")[c];
    }
  } else if (op == "concat") {
    // Join along the Keras axis: view each example as [outer, axis, inner] blocks.
    int64_t rank = int64_t(node.unfused_shape.size());
    int64_t axis = node.attrs.get_int("axis");
    int64_t index = axis < 0 ? rank + axis : axis - 1;
    out = Tensor{batch, node.unfused_shape, {}};
    int64_t outer = 1;
    for (int64_t d = 0; d < index; ++d) outer *= node.unfused_shape[d];
    for (int n = 0; n < batch; ++n)
      for (int64_t o = 0; o < outer; ++o)
        for (const Tensor& t : in) {
          int64_t block = t.per_example() / outer;
          const double* from = &t.data[size_t(n * t.per_example() + o * block)];
          out.data.insert(out.data.end(), from, from + block);
        }
  } else {
    out = in[0];  // flatten, dropout at inference: the values unchanged
  }
  for (const Node::FusedOp& fused : node.fused) {
    if (fused.op == "maxpool2d" || fused.op == "avgpool2d") out = pool2d(fused.op, out, fused.attrs, node.shape);
    else activate(fused.op, out);
  }
  return out.data;
}

}  // namespace cnnc::reference
