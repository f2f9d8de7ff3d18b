// ONNX out (see onnx_export.h). One pass over the compiled graph: each node becomes the ONNX
// nodes of its own op, then one group per operation fused into it (Node::fused), in order.
//
// Names. The ONNX node that carries a layer's computation is named after the layer (the Conv of
// a conv2d, the Gemm of a dense, the 1x1 Conv of a separable_conv2d, the GlobalAveragePool of a
// global_avgpool2d, the Flatten after a flatten's Transpose, the Mul that ends a swish or a
// gelu); helper nodes are named
// "<layer>/<what>", which is not an identifier, so the importer never takes them for a layer. An
// activation written as `activation:` is a node "<layer>/<activation>" after the layer's op (the
// op keeps the layer's name: the importer folds the activation back into it). Every node's output
// tensor has the node's name, except the model's output, "output"; constants are initializers
// "<node>/<what>" and weights "<layer>.<param>". Every layer's output also gets a value_info with
// the shape cnnc inferred (NCHW), so that ONNX's strict shape inference checks the export.
#include "onnx/onnx_export.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

namespace cnnc {

namespace {

constexpr int64_t kIrVersion = 8;
constexpr int64_t kOpsetVersion = 14;

// Little-endian bytes of float32 or int64 values, as TensorProto::raw_data wants them.
template <typename T>
std::string raw_little_endian(const std::vector<T>& values) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "float32 or int64");
  std::string raw(values.size() * sizeof(T), '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t> bits;
    std::memcpy(&bits, &values[i], sizeof(T));
    for (size_t b = 0; b < sizeof(T); ++b) raw[i * sizeof(T) + b] = char((bits >> (8 * b)) & 0xff);
  }
  return raw;
}

// Keras padding of one spatial axis as ONNX pads (before, after): zeros for 'valid'; for 'same',
// out = ceil(in / s) and the padding that needs, the odd one after.
std::pair<int64_t, int64_t> axis_pads(const std::string& padding, int64_t in, int64_t kernel, int64_t stride,
                                      int64_t dilation) {
  if (padding != "same") return {0, 0};
  return same_padding(in, (kernel - 1) * dilation + 1, stride);
}

// ONNX pads [top, left, bottom, right] for a window over an [H, W, C] input.
std::vector<int64_t> window_pads(const std::string& padding, const Shape& in, std::pair<int64_t, int64_t> kernel,
                                 std::pair<int64_t, int64_t> stride, std::pair<int64_t, int64_t> dilation) {
  auto [top, bottom] = axis_pads(padding, in[0], kernel.first, stride.first, dilation.first);
  auto [left, right] = axis_pads(padding, in[1], kernel.second, stride.second, dilation.second);
  return {top, left, bottom, right};
}

void set_attr(onnx::NodeProto* node, const std::string& name, int64_t value) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INT);
  attr->set_i(value);
}

void set_attr(onnx::NodeProto* node, const std::string& name, const std::vector<int64_t>& values) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INTS);
  for (int64_t value : values) attr->add_ints(value);
}

void set_attr(onnx::NodeProto* node, const std::string& name, float value) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::FLOAT);
  attr->set_f(value);
}

void set_attr(onnx::NodeProto* node, const std::string& name, const char* value) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::STRING);
  attr->set_s(value);
}

void set_value_info(onnx::ValueInfoProto* info, const std::string& name, const Shape& cnnc_shape) {
  info->set_name(name);
  onnx::TypeProto_Tensor* tensor = info->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT);
  onnx::TensorShapeProto* shape = tensor->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  // [H, W, C] is [C, H, W] in ONNX; a vector stays as it is.
  Shape dims = cnnc_shape;
  if (dims.size() == 3) dims = {cnnc_shape[2], cnnc_shape[0], cnnc_shape[1]};
  for (int64_t dim : dims) shape->add_dim()->set_dim_value(dim);
}

class Exporter {
 public:
  Exporter(const Graph& graph, const std::map<std::string, ImportedTensor>& weights, onnx::GraphProto* proto)
      : graph_(graph), weights_(weights), proto_(proto) {}

  void run() {
    CNNC_ASSERT(!graph_.nodes.empty() && !graph_.nodes[0].def, "the graph has no input node");
    CNNC_ASSERT(graph_.output > 0 && graph_.output < int(graph_.nodes.size()), "the graph's output is not a layer");
    proto_->set_name(graph_.name);
    set_value_info(proto_->add_input(), "input", graph_.nodes[0].shape);
    tensors_.insert("input");
    tensors_.insert("output");
    values_.assign(graph_.nodes.size(), "");
    values_[0] = "input";
    for (size_t i = 1; i < graph_.nodes.size(); ++i) export_node(graph_.nodes[i]);
    set_value_info(proto_->add_output(), "output", graph_.nodes[size_t(graph_.output)].shape);

    // Every parameter of the graph went out as an initializer.
    for (const Node& node : graph_.nodes)
      for (const ParamSpec& param : node.params)
        CNNC_ASSERT(used_weights_.count(node.name + "." + param.name),
                    "ONNX export wrote no initializer for " + node.name + "." + param.name);
  }

 private:
  // --- building blocks --------------------------------------------------------------------------

  [[noreturn]] void fail(const Node& node, const std::string& message) const {
    throw UserError(node.loc, fmt::format("{}: cannot export to ONNX: {}", node.describe(), message));
  }

  // A new node `name` of `op_type`; its one output is a tensor of the same name.
  onnx::NodeProto* add_node(const std::string& op_type, const std::string& name, const std::vector<std::string>& inputs) {
    onnx::NodeProto* node = proto_->add_node();
    node->set_op_type(op_type);
    node->set_name(name);
    for (const std::string& input : inputs) node->add_input(input);
    std::string tensor = name == "output" ? "output:0" : name;  // "output" is the graph's output
    CNNC_ASSERT(tensors_.insert(tensor).second, "ONNX export: tensor name used twice: " + tensor);
    node->add_output(tensor);
    return node;
  }
  static const std::string& output_of(const onnx::NodeProto* node) { return node->output(0); }

  const std::string& add_initializer(const std::string& name, const std::vector<int64_t>& dims,
                                     const std::vector<float>& values) {
    return add_raw_initializer(name, dims, onnx::TensorProto::FLOAT, raw_little_endian(values));
  }

  const std::string& add_int64_initializer(const std::string& name, const std::vector<int64_t>& dims,
                                           const std::vector<int64_t>& values) {
    return add_raw_initializer(name, dims, onnx::TensorProto::INT64, raw_little_endian(values));
  }

  // An initializer of `type` whose little-endian data is `raw`.
  const std::string& add_raw_initializer(const std::string& name, const std::vector<int64_t>& dims, int type,
                                         std::string raw) {
    CNNC_ASSERT(tensors_.insert(name).second, "ONNX export: tensor name used twice: " + name);
    onnx::TensorProto* tensor = proto_->add_initializer();
    tensor->set_name(name);
    tensor->set_data_type(type);
    for (int64_t dim : dims) tensor->add_dims(dim);
    tensor->set_raw_data(std::move(raw));
    return tensor->name();
  }

  std::string add_scalar(const std::string& name, float value) { return add_initializer(name, {}, {value}); }

  static bool has_param(const Node& node, const std::string& param) {
    for (const ParamSpec& spec : node.params)
      if (spec.name == param) return true;
    return false;
  }

  // The weights of `node`'s parameter `param`, checked against the shape the graph declares.
  const ImportedTensor& weight(const Node& node, const std::string& param) {
    const ParamSpec* spec = nullptr;
    for (const ParamSpec& candidate : node.params)
      if (candidate.name == param) spec = &candidate;
    CNNC_ASSERT(spec, "ONNX export: " + node.name + " has no parameter " + param);
    std::string name = node.name + "." + param;
    auto it = weights_.find(name);
    if (it == weights_.end()) fail(node, fmt::format("no weights given for '{}'", name));
    const ImportedTensor& tensor = it->second;
    if (tensor.shape != spec->shape || int64_t(tensor.data.size()) != shape_elements(spec->shape))
      fail(node, fmt::format("weights '{}' are {} ({} values), but the layer needs {}", name, shape_str(tensor.shape),
                             tensor.data.size(), shape_str(spec->shape)));
    used_weights_.insert(name);
    return tensor;
  }

  // --- ops ----------------------------------------------------------------------------------------

  // conv2d, depthwise_conv2d, the depthwise step of separable_conv2d: a Conv.
  std::string conv(const Node& node, const std::string& name, const std::string& x, const Shape& in,
                   const std::string& weight_name, std::vector<int64_t> weight_dims, std::vector<float> weight_values,
                   int64_t group, bool bias) {
    auto kernel = node.attrs.get_pair("kernel");
    auto stride = node.attrs.get_pair("stride");
    auto dilation = node.attrs.get_pair("dilation");
    std::vector<std::string> inputs = {x, add_initializer(weight_name, weight_dims, weight_values)};
    if (bias) {
      const ImportedTensor& b = weight(node, "bias");
      inputs.push_back(add_initializer(node.name + ".bias", b.shape, b.data));
    }
    onnx::NodeProto* conv = add_node("Conv", name, inputs);
    set_attr(conv, "kernel_shape", std::vector<int64_t>{kernel.first, kernel.second});
    set_attr(conv, "strides", std::vector<int64_t>{stride.first, stride.second});
    set_attr(conv, "dilations", std::vector<int64_t>{dilation.first, dilation.second});
    set_attr(conv, "pads", window_pads(node.attrs.get_string("padding"), in, kernel, stride, dilation));
    if (group != 1) set_attr(conv, "group", group);
    return output_of(conv);
  }

  // Keras [kh, kw, cin, cout] to ONNX [cout, cin, kh, kw].
  static std::vector<float> conv_weights(const ImportedTensor& k) {
    int64_t kh = k.shape[0], kw = k.shape[1], cin = k.shape[2], cout = k.shape[3];
    std::vector<float> w(k.data.size());
    for (int64_t co = 0; co < cout; ++co)
      for (int64_t ci = 0; ci < cin; ++ci)
        for (int64_t y = 0; y < kh; ++y)
          for (int64_t x = 0; x < kw; ++x)
            w[size_t(((co * cin + ci) * kh + y) * kw + x)] = k.data[size_t(((y * kw + x) * cin + ci) * cout + co)];
    return w;
  }

  // Keras depthwise [kh, kw, C, m] to ONNX [C * m, 1, kh, kw]: output channel c * m + j.
  static std::vector<float> depthwise_weights(const ImportedTensor& k) {
    int64_t kh = k.shape[0], kw = k.shape[1], channels = k.shape[2], multiplier = k.shape[3];
    std::vector<float> w(k.data.size());
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t j = 0; j < multiplier; ++j)
        for (int64_t y = 0; y < kh; ++y)
          for (int64_t x = 0; x < kw; ++x)
            w[size_t(((c * multiplier + j) * kh + y) * kw + x)] =
                k.data[size_t(((y * kw + x) * channels + c) * multiplier + j)];
    return w;
  }

  std::string export_conv(const Node& node, const std::string& x, const Shape& in) {
    const ImportedTensor& k = weight(node, "kernel");
    return conv(node, node.name, x, in, node.name + ".kernel", {k.shape[3], k.shape[2], k.shape[0], k.shape[1]},
                conv_weights(k), 1, has_param(node, "bias"));
  }

  std::string export_depthwise(const Node& node, const std::string& x, const Shape& in) {
    const ImportedTensor& k = weight(node, "depthwise_kernel");
    return conv(node, node.name, x, in, node.name + ".depthwise_kernel",
                {k.shape[2] * k.shape[3], 1, k.shape[0], k.shape[1]}, depthwise_weights(k), k.shape[2],
                has_param(node, "bias"));
  }

  std::string export_separable(const Node& node, const std::string& x, const Shape& in) {
    const ImportedTensor& k = weight(node, "depthwise_kernel");
    std::string middle = conv(node, node.name + "/depthwise", x, in, node.name + ".depthwise_kernel",
                              {k.shape[2] * k.shape[3], 1, k.shape[0], k.shape[1]}, depthwise_weights(k), k.shape[2],
                              /*bias=*/false);
    // The pointwise step: a 1x1 Conv, [1, 1, C * m, filters] to [filters, C * m, 1, 1].
    const ImportedTensor& p = weight(node, "pointwise_kernel");
    std::vector<std::string> inputs = {middle,
                                       add_initializer(node.name + ".pointwise_kernel", {p.shape[3], p.shape[2], 1, 1},
                                                       conv_weights(p))};
    if (has_param(node, "bias")) {
      const ImportedTensor& b = weight(node, "bias");
      inputs.push_back(add_initializer(node.name + ".bias", b.shape, b.data));
    }
    onnx::NodeProto* pointwise = add_node("Conv", node.name, inputs);
    set_attr(pointwise, "kernel_shape", std::vector<int64_t>{1, 1});
    return output_of(pointwise);
  }

  // maxpool2d, avgpool2d, as a layer or fused into the node before it.
  std::string pool(const OpDef* def, const std::string& name, const Attrs& attrs, const std::string& x, const Shape& in) {
    auto size = attrs.get_pair("size");
    auto stride = attrs.get_pair("stride");
    if (stride.first == 0) stride = size;  // (the front end fills it in; in case it did not)
    bool max = def->traits.pooling == Pooling::Max;
    onnx::NodeProto* node = add_node(max ? "MaxPool" : "AveragePool", name, {x});
    set_attr(node, "kernel_shape", std::vector<int64_t>{size.first, size.second});
    set_attr(node, "strides", std::vector<int64_t>{stride.first, stride.second});
    set_attr(node, "pads", window_pads(attrs.get_string("padding"), in, size, stride, {1, 1}));
    // An average over the real elements only, as cnnc (and Keras) compute it with padding 'same'.
    if (!max) set_attr(node, "count_include_pad", int64_t(0));
    return output_of(node);
  }

  std::string export_dense(const Node& node, const std::string& x) {
    const ImportedTensor& k = weight(node, "kernel");
    std::vector<std::string> inputs = {x, add_initializer(node.name + ".kernel", k.shape, k.data)};  // B: [in, units]
    if (has_param(node, "bias")) {
      const ImportedTensor& b = weight(node, "bias");
      inputs.push_back(add_initializer(node.name + ".bias", b.shape, b.data));
    }
    return output_of(add_node("Gemm", node.name, inputs));
  }

  std::string export_batchnorm(const Node& node, const std::string& x) {
    std::vector<std::string> inputs = {x};
    for (const char* param : {"gamma", "beta", "moving_mean", "moving_variance"}) {
      const ImportedTensor& t = weight(node, param);
      inputs.push_back(add_initializer(node.name + "." + param, t.shape, t.data));
    }
    onnx::NodeProto* bn = add_node("BatchNormalization", node.name, inputs);
    set_attr(bn, "epsilon", float(node.attrs.get_float("epsilon")));
    set_attr(bn, "momentum", float(node.attrs.get_float("momentum")));
    return output_of(bn);
  }

  // An activation (or softmax) of `x`; `name` is its main node's, the one whose output is the
  // result. `attrs` is nullptr for the value of an `activation:` attribute (Keras's defaults for
  // that use: leaky_relu's slope 0.2).
  std::string activation(const Node& node, const OpDef* def, const std::string& name, const Attrs* attrs,
                         const std::string& x) {
    auto alpha = [&](double fallback) {
      return float(attrs && attrs->has("alpha") ? attrs->get_float("alpha") : fallback);
    };
    const std::string& op = def->name;
    if (op == "relu") return output_of(add_node("Relu", name, {x}));
    if (op == "sigmoid") return output_of(add_node("Sigmoid", name, {x}));
    if (op == "tanh") return output_of(add_node("Tanh", name, {x}));
    if (op == "relu6") {
      std::string low = add_scalar(name + "/min", 0.0f), high = add_scalar(name + "/max", 6.0f);
      return output_of(add_node("Clip", name, {x, low, high}));
    }
    if (op == "leaky_relu") {
      onnx::NodeProto* node = add_node("LeakyRelu", name, {x});
      set_attr(node, "alpha", alpha(0.2));
      return output_of(node);
    }
    if (op == "elu") {
      onnx::NodeProto* node = add_node("Elu", name, {x});
      set_attr(node, "alpha", alpha(1.0));
      return output_of(node);
    }
    if (op == "hard_sigmoid") {  // relu6(x + 3) / 6 = max(0, min(1, x / 6 + 0.5))
      onnx::NodeProto* node = add_node("HardSigmoid", name, {x});
      set_attr(node, "alpha", float(1.0 / 6.0));
      set_attr(node, "beta", 0.5f);
      return output_of(node);
    }
    if (op == "hard_swish") return output_of(add_node("HardSwish", name, {x}));
    if (op == "swish" || op == "silu") {
      std::string sigmoid = output_of(add_node("Sigmoid", name + "/sigmoid", {x}));
      return output_of(add_node("Mul", name, {x, sigmoid}));
    }
    if (op == "gelu") {  // x * 0.5 * (1 + erf(x / sqrt(2))), exact
      std::string scaled = output_of(add_node("Div", name + "/div", {x, add_scalar(name + "/sqrt2", float(std::sqrt(2.0)))}));
      std::string erf = output_of(add_node("Erf", name + "/erf", {scaled}));
      std::string sum = output_of(add_node("Add", name + "/add", {erf, add_scalar(name + "/one", 1.0f)}));
      std::string product = output_of(add_node("Mul", name + "/mul", {x, sum}));
      return output_of(add_node("Mul", name, {product, add_scalar(name + "/half", 0.5f)}));
    }
    if (def->traits.softmax) {  // over the channels of an image (NCHW axis 1) or the features of a vector
      onnx::NodeProto* node = add_node("Softmax", name, {x});
      set_attr(node, "axis", int64_t(1));
      return output_of(node);
    }
    fail(node, fmt::format("activation '{}' has no ONNX equivalent here", op));
  }

  // The node's own op; `in` holds its inputs' shapes.
  std::string export_op(const Node& node, const std::vector<std::string>& xs, const std::vector<Shape>& in) {
    const std::string& op = node.op_name();
    const std::string& x = xs[0];
    if (op == "conv2d") return export_conv(node, x, in[0]);
    if (op == "depthwise_conv2d") return export_depthwise(node, x, in[0]);
    if (op == "separable_conv2d") return export_separable(node, x, in[0]);
    if (op == "maxpool2d" || op == "avgpool2d") return pool(node.def, node.name, node.attrs, x, in[0]);
    if (op == "global_avgpool2d" || op == "global_maxpool2d") {
      // ONNX keeps [N, C, 1, 1]; cnnc's result is the vector [C]. (The pooling carries the name: the
      // importer reads the Flatten of a [C, 1, 1] map as no layer at all.)
      std::string pooled =
          output_of(add_node(op == "global_avgpool2d" ? "GlobalAveragePool" : "GlobalMaxPool", node.name, {x}));
      onnx::NodeProto* flatten = add_node("Flatten", node.name + "/flatten", {pooled});
      set_attr(flatten, "axis", int64_t(1));
      return output_of(flatten);
    }
    if (op == "dense") return export_dense(node, x);
    if (op == "flatten") {
      std::string source = x;
      // cnnc flattens [H, W, C] row-major: back to NHWC first, so the next dense's rows stay as they are.
      if (in[0].size() == 3) {
        onnx::NodeProto* transpose = add_node("Transpose", node.name + "/nhwc", {x});
        set_attr(transpose, "perm", std::vector<int64_t>{0, 2, 3, 1});
        source = output_of(transpose);
      }
      onnx::NodeProto* flatten = add_node("Flatten", node.name, {source});
      set_attr(flatten, "axis", int64_t(1));
      return output_of(flatten);
    }
    if (op == "zero_padding2d") {
      const Padding4& p = node.attrs.get_padding("padding");  // top, bottom, left, right
      std::string pads = add_int64_initializer(node.name + "/pads", {8}, {0, 0, p[0], p[2], 0, 0, p[1], p[3]});
      onnx::NodeProto* pad = add_node("Pad", node.name, {x, pads});
      set_attr(pad, "mode", "constant");
      return output_of(pad);
    }
    if (op == "upsampling2d") {
      auto size = node.attrs.get_pair("size");
      std::string scales = add_initializer(node.name + "/scales", {4}, {1.0f, 1.0f, float(size.first), float(size.second)});
      onnx::NodeProto* resize = add_node("Resize", node.name, {x, "", scales});
      set_attr(resize, "mode", "nearest");
      set_attr(resize, "coordinate_transformation_mode", "asymmetric");
      set_attr(resize, "nearest_mode", "floor");
      return output_of(resize);
    }
    if (op == "dropout") {
      std::string ratio = add_scalar(node.name + "/ratio", float(node.attrs.get_float("rate")));
      return output_of(add_node("Dropout", node.name, {x, ratio}));
    }
    if (op == "batchnorm") return export_batchnorm(node, x);
    if (op == "add") {
      std::string sum = xs[0];
      for (size_t i = 1; i < xs.size(); ++i) {
        std::string name = i + 1 == xs.size() ? node.name : fmt::format("{}/add{}", node.name, i);
        sum = output_of(add_node("Add", name, {sum, xs[i]}));
      }
      return sum;
    }
    if (op == "concat") {
      // Keras axes count the batch as 0: an image's 1, 2, 3 (H, W, C) are NCHW's 2, 3, 1.
      int64_t rank = int64_t(in[0].size());
      int64_t axis = node.attrs.get_int("axis");
      int64_t index = axis < 0 ? rank + axis : axis - 1;  // into cnnc's shape, batch excluded
      int64_t onnx_axis = rank == 3 ? std::array<int64_t, 3>{2, 3, 1}[size_t(index)] : index + 1;
      onnx::NodeProto* concat = add_node("Concat", node.name, xs);
      set_attr(concat, "axis", onnx_axis);
      return output_of(concat);
    }
    if (node.def->traits.activation || node.def->traits.softmax)
      return activation(node, node.def, node.name, &node.attrs, x);
    fail(node, fmt::format("op '{}' has no ONNX mapping", op));
  }

  void export_node(const Node& node) {
    std::vector<std::string> xs;
    std::vector<Shape> in;
    for (int input : node.inputs) {
      xs.push_back(values_[size_t(input)]);
      in.push_back(graph_.nodes[size_t(input)].shape);
    }
    if (in.empty()) fail(node, "it has no inputs");
    for (const Shape& shape : in)
      if (shape.size() != 1 && shape.size() != 3)
        fail(node, fmt::format("an input of shape {}: only images [H, W, C] and vectors [N] are exported",
                               shape_str(shape)));

    // Each stage's result and its shape: the op's own, then one per fused operation.
    std::vector<std::pair<std::string, Shape>> stages;
    Shape shape = node.unfused_shape.empty() ? node.shape : node.unfused_shape;
    stages.push_back({export_op(node, xs, in), shape});

    // The `activation:` value, where fusion did not already list it (a graph compiled without
    // the fusion passes).
    std::vector<Node::FusedOp> post = node.fused;
    if (node.attrs.has("activation")) {
      const std::string& value = node.attrs.get_string("activation");
      bool listed = std::any_of(post.begin(), post.end(), [&](const Node::FusedOp& op) { return op.name == node.name; });
      if (value != "linear" && value != "none" && !listed) {
        const OpDef* def = find_op(value);
        CNNC_ASSERT(def, "unknown activation " + value);
        post.insert(post.begin(), Node::FusedOp{def, node.name, {}});
      }
    }
    for (const Node::FusedOp& op : post) {
      const std::string& x = stages.back().first;
      if (op.def->traits.pooling != Pooling::None) {
        shape = op.def->infer_shape({shape}, op.attrs);
        stages.push_back({pool(op.def, op.name, op.attrs, x, stages.back().second), shape});
      } else if (op.def->traits.activation || op.def->traits.softmax) {
        bool own = op.name == node.name;  // the layer's `activation:`, not a layer of its own
        std::string name = own ? node.name + "/" + op.def->name : op.name;
        stages.push_back({activation(node, op.def, name, own ? nullptr : &op.attrs, x), shape});
      } else {
        fail(node, fmt::format("fused operation '{}' ({}) has no ONNX mapping", op.name, op.def->name));
      }
    }
    CNNC_ASSERT(stages.back().second == node.shape, "ONNX export: " + node.describe() + " ends in shape " +
                                                        shape_str(stages.back().second) + ", not " + shape_str(node.shape));

    if (node.id == graph_.output) {
      // The last ONNX node written computed the model's output: its tensor is "output".
      onnx::NodeProto* last = proto_->mutable_node(proto_->node_size() - 1);
      CNNC_ASSERT(last->output(0) == stages.back().first, "ONNX export: the output node is not the last one");
      last->set_output(0, "output");
      stages.back().first = "output";
    }
    for (const auto& [tensor, tensor_shape] : stages)
      if (tensor != "output") set_value_info(proto_->add_value_info(), tensor, tensor_shape);
    values_[size_t(node.id)] = stages.back().first;
  }

  const Graph& graph_;
  const std::map<std::string, ImportedTensor>& weights_;
  onnx::GraphProto* proto_;
  std::vector<std::string> values_;  // per graph node: the ONNX tensor holding its output (NCHW)
  std::set<std::string> tensors_;    // tensor names taken
  std::set<std::string> used_weights_;
};

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(SourceLoc{path, 0, 0}, fmt::format("cannot read the file: {}", std::strerror(errno)));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string export_model(const Graph& graph, const std::map<std::string, ImportedTensor>& weights, int64_t* nodes) {
  onnx::ModelProto model;
  model.set_ir_version(kIrVersion);
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpsetVersion);
  model.set_producer_name("cnnc");
#ifdef CNNC_VERSION
  model.set_producer_version(CNNC_VERSION);
#endif
  Exporter(graph, weights, model.mutable_graph()).run();
  if (model.ByteSizeLong() > size_t(INT_MAX))
    throw UserError(SourceLoc{graph.file, 0, 0},
                    fmt::format("the ONNX model would be {} bytes; a protobuf file holds at most 2 GiB "
                                "(external data is not supported)",
                                model.ByteSizeLong()));
  std::string bytes;
  CNNC_ASSERT(model.SerializeToString(&bytes), "ONNX export: the model does not serialize");
  if (nodes) *nodes = model.graph().node_size();
  return bytes;
}

}  // namespace

std::string export_onnx_bytes(const Graph& graph, const std::map<std::string, ImportedTensor>& weights) {
  return export_model(graph, weights, nullptr);
}

int64_t export_onnx_file(const Graph& graph, const std::map<std::string, ImportedTensor>& weights,
                         const std::string& path) {
  int64_t nodes = 0;
  std::string bytes = export_model(graph, weights, &nodes);
  std::filesystem::path target(path);
  std::filesystem::path temp = target.parent_path() / fmt::format(".{}.tmp-{}", target.filename().string(), getpid());
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) throw UserError(SourceLoc{path, 0, 0}, fmt::format("cannot write the file: {}", std::strerror(errno)));
    out.write(bytes.data(), std::streamsize(bytes.size()));
    out.close();
    if (!out) {
      std::error_code ignored;
      std::filesystem::remove(temp, ignored);
      throw UserError(SourceLoc{path, 0, 0}, "cannot write the file (disk full?)");
    }
  }
  // Check what is on disk before it takes the name: a failed check leaves no file behind.
  try {
    check_onnx_bytes(read_file_bytes(temp.string()), path, /*full_check=*/true);
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw;
  }
  std::error_code error;
  std::filesystem::rename(temp, target, error);
  if (error) {
    std::error_code ignored;
    std::filesystem::remove(temp, ignored);
    throw UserError(SourceLoc{path, 0, 0}, fmt::format("cannot write the file: {}", error.message()));
  }
  return nodes;
}

void check_onnx_bytes(const std::string& bytes, const std::string& path, bool full_check) {
  onnx::ModelProto model;
  if (!model.ParseFromString(bytes))
    throw UserError(SourceLoc{path, 0, 0}, "not an ONNX model (the protobuf ModelProto does not parse)");
  try {
    onnx::checker::check_model(model);
    if (full_check) {
      // As Python's onnx.checker.check_model(full_check=True): strict shape inference with type
      // checks, which also checks every value_info against what ONNX infers.
      onnx::ShapeInferenceOptions options(/*check_type=*/true, /*strict_mode=*/1, /*data_prop=*/false);
      onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(), options);
    }
  } catch (const onnx::checker::ValidationError& error) {
    throw UserError(SourceLoc{path, 0, 0}, fmt::format("the ONNX checker rejects the model: {}", error.what()));
  } catch (const onnx::InferenceError& error) {
    throw UserError(SourceLoc{path, 0, 0}, fmt::format("ONNX shape inference rejects the model: {}", error.what()));
  }
}

}  // namespace cnnc
