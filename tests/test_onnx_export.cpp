// ONNX export (compiler/onnx/onnx_export.h): every model in models/ and two models with every
// activation and every op export to ONNX that ONNX's checker accepts, with strict shape inference
// agreeing with cnnc's shape of every layer (the exporter writes them as value_info); and
// importing an export gives back the same weights, bit for bit, and the same network.
//
// "The same network" is checked on the compiled graphs (with fusion) of the original model and of
// the imported one: same nodes (names, ops, attributes, inputs, shapes, parameters) and the same
// operations fused into each. That leaves the importer free in how it writes an activation (a
// layer's `activation:` or a layer of its own: both compile to the same graph) and in writing a
// 'same' padding that needs no zeros as 'valid' (the two are equal then); anything else is a
// different network.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include <unistd.h>

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include "frontend/parse_model.h"
#include "graph/pipeline.h"
#include "onnx/onnx_export.h"
#include "onnx/onnx_import.h"

using namespace cnnc;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> model_files() {
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(std::string(CNNC_SOURCE_DIR) + "/models"))
    if (entry.path().extension() == ".yaml") files.push_back(entry.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// Every activation, as `activation:` on a conv2d and a dense and as a layer of its own (on an
// image and a vector; fused into a conv2d and not).
const char* kEveryActivation = R"(
name: every_activation
input: {shape: [6, 5, 2]}
layers:
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: relu}
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: sigmoid}
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: tanh}
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: relu6}
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: leaky_relu}
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: elu}
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: hard_sigmoid}
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: swish}
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: silu}
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: gelu}
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: hard_swish}
  - conv2d: {filters: 3, kernel: 3, padding: same, activation: softmax}
  - relu
  - sigmoid
  - tanh
  - relu6
  - leaky_relu: {alpha: 0.1}
  - elu: {alpha: 0.5}
  - hard_sigmoid
  - swish
  - silu
  - gelu
  - hard_swish
  - softmax
  - conv2d: {filters: 4, kernel: 1}
  - leaky_relu: {alpha: 0.25}
  - global_avgpool2d
  - dense: {units: 6, activation: gelu}
  - dense: {units: 6, activation: leaky_relu}
  - elu: {}
  - dense: {units: 6, activation: swish}
  - hard_swish
  - dense: {units: 4}
  - softmax
)";

// Every other op, in the configurations the exporter distinguishes: strides, dilations,
// rectangular windows, 'same' pooling, depth multipliers, asymmetric zero padding, concat along
// each axis, add of three, flatten of an image and of a vector, batchnorm on an image and a vector.
const char* kEveryOp = R"(
name: every_op
input: {shape: [9, 10, 3]}
layers:
  - conv2d: {name: c1, filters: 4, kernel: [3, 2], stride: [2, 1], padding: same, use_bias: false}
  - batchnorm: {name: bn1, momentum: 0.9, epsilon: 0.01}
  - relu: {name: r1}
  - depthwise_conv2d: {name: dw, kernel: 3, depth_multiplier: 2, padding: same, activation: relu}
  - separable_conv2d: {name: sep, filters: 6, kernel: 3, dilation: 2, depth_multiplier: 2, padding: same}
  - maxpool2d: {name: mp, size: 3, stride: 2, padding: same}
  - zero_padding2d: {name: zp, padding: [[0, 1], [2, 0]]}
  - upsampling2d: {name: up, size: [2, 3]}
  - conv2d: {name: c2, filters: 5, kernel: 3, dilation: [1, 2], activation: tanh}
  - avgpool2d: {name: ap, size: 2, padding: same}
  - depthwise_conv2d: {name: dw2, kernel: [2, 3], stride: 2, use_bias: false, inputs: [r1]}
  - conv2d: {name: c3, filters: 5, kernel: 1, inputs: [r1]}
  - avgpool2d: {name: ap3, size: 3, stride: 1, padding: same}
  - concat: {name: cat_c, inputs: [c3, ap3, r1]}
  - concat: {name: cat_h, axis: 1, inputs: [c3, ap3]}
  - concat: {name: cat_w, axis: -2, inputs: [c3, ap3, c3]}
  - add: {name: sum3, inputs: [c3, ap3, c3]}
  - global_maxpool2d: {name: gmax, inputs: [sum3]}
  - flatten: {name: flat_img, inputs: [cat_w]}
  - flatten: {name: flat_vec, inputs: [gmax]}
  - global_avgpool2d: {name: gavg, inputs: [cat_c]}
  - flatten: {name: flat_h, inputs: [cat_h]}
  - flatten: {name: flat_dw2, inputs: [dw2]}
  - flatten: {name: flat_ap, inputs: [ap]}
  - concat: {name: joined, inputs: [flat_img, flat_vec, gavg, flat_h, flat_dw2, flat_ap]}
  - dropout: {name: drop, rate: 0.3}
  - dense: {name: d1, units: 8, use_bias: false}
  - batchnorm: {name: bn2}
  - dense: {name: logits, units: 5, activation: softmax}
)";

// Random weights for every parameter of the graph (variances positive), by "layer.param".
std::map<std::string, ImportedTensor> random_weights(const Graph& graph, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::map<std::string, ImportedTensor> weights;
  for (const Node& node : graph.nodes)
    for (const ParamSpec& param : node.params) {
      ImportedTensor& tensor = weights[node.name + "." + param.name];
      tensor.shape = param.shape;
      tensor.data.resize(size_t(shape_elements(param.shape)));
      for (float& value : tensor.data) value = param.non_negative ? 1.0f + uniform(rng) * 0.5f : uniform(rng);
    }
  return weights;
}

std::string export_checked(const Graph& graph, const std::map<std::string, ImportedTensor>& weights,
                           const std::string& name) {
  std::string bytes = export_onnx_bytes(graph, weights);
  try {
    check_onnx_bytes(bytes, name, /*full_check=*/true);
  } catch (const UserError& error) {
    FAIL(error.formatted());
  }
  return bytes;
}

// ONNX pads [top, left, bottom, right] of a window with Keras padding over an [H, W, C] input.
std::string window_pads(const Shape& in, std::pair<int64_t, int64_t> window, std::pair<int64_t, int64_t> stride,
                        std::pair<int64_t, int64_t> dilation, const std::string& padding) {
  if (stride.first == 0) stride = window;
  auto pads = [&](int64_t size, int64_t k, int64_t s, int64_t d) -> std::pair<int64_t, int64_t> {
    if (padding != "same") return {0, 0};
    int64_t out = (size + s - 1) / s, total = std::max<int64_t>((out - 1) * s + (k - 1) * d + 1 - size, 0);
    return {total / 2, total - total / 2};
  };
  auto [top, bottom] = pads(in[0], window.first, stride.first, dilation.first);
  auto [left, right] = pads(in[1], window.second, stride.second, dilation.second);
  return fmt::format("pads={},{},{},{}", top, left, bottom, right);
}

// One attribute as text; numbers as the float32 ONNX holds.
std::string attr_text(const AttrValue& value) {
  if (auto* i = std::get_if<int64_t>(&value)) return std::to_string(*i);
  if (auto* p = std::get_if<std::pair<int64_t, int64_t>>(&value)) return fmt::format("{}x{}", p->first, p->second);
  if (auto* d = std::get_if<double>(&value)) return fmt::format("{}", float(*d));
  if (auto* b = std::get_if<bool>(&value)) return *b ? "true" : "false";
  if (auto* s = std::get_if<std::string>(&value)) return *s;
  const Padding4& p = std::get<Padding4>(value);
  return fmt::format("{},{},{},{}", p[0], p[1], p[2], p[3]);
}

// What an operation computes: op (silu is swish), attributes (`activation:` aside: it is in
// `fused`; a concat's axis counted from the front), and for a window its pads instead of 'same'
// or 'valid'. An activation's slope and scale as it applies them (Keras's defaults for
// `activation:`, whose fused entry has no attributes).
std::string op_text(const OpDef* def, const Attrs& attrs, const Shape& in) {
  std::string text = def->name == "silu" ? "swish" : def->name;  // one function, two names
  for (const auto& [key, value] : attrs.values()) {
    if (key == "activation" || key == "padding" || key == "alpha") continue;
    if (key == "axis") {  // concat: -1 and 3 are the same axis of an image
      int64_t axis = attrs.get_int("axis");
      text += fmt::format(" axis={}", axis < 0 ? int64_t(in.size()) + axis + 1 : axis);
      continue;
    }
    text += fmt::format(" {}={}", key, attr_text(value));
  }
  if (def->name == "leaky_relu" || def->name == "elu")
    text += fmt::format(" alpha={}", float(attrs.has("alpha") ? attrs.get_float("alpha") : def->name == "elu" ? 1.0 : 0.2));
  if (attrs.has("padding") && std::holds_alternative<std::string>(attrs.values().at("padding"))) {
    auto window = attrs.has("kernel") ? attrs.get_pair("kernel") : attrs.get_pair("size");
    auto stride = attrs.get_pair("stride");
    auto dilation = attrs.has("dilation") ? attrs.get_pair("dilation") : std::pair<int64_t, int64_t>{1, 1};
    text += " " + window_pads(in, window, stride, dilation, attrs.get_string("padding"));
  } else if (attrs.has("padding")) {
    text += " padding=" + attr_text(attrs.values().at("padding"));
  }
  return text;
}

// The graph without what the importer may write differently for the same network:
//  - an activation (or softmax) node that it may make the `activation:` of the conv2d,
//    depthwise_conv2d, separable_conv2d or dense before it (which has no activation yet and feeds
//    only it) moves into that node's fused operations (a softmax layer after a dense, a swish node
//    after a convolution: compile_graph keeps them apart);
//  - a flatten of a vector, which does nothing, is left out.
Graph canonical(Graph graph) {
  std::vector<bool> removed(graph.nodes.size(), false);
  auto bypass = [&](const Node& node, int by) {
    removed[size_t(node.id)] = true;
    for (Node& other : graph.nodes)
      for (int& input : other.inputs)
        if (input == node.id) input = by;
    if (graph.output == node.id) graph.output = by;
  };
  for (size_t i = 1; i < graph.nodes.size(); ++i) {
    Node& node = graph.nodes[i];
    if (node.op_name() == "flatten" && graph.nodes[size_t(node.inputs[0])].shape.size() == 1) {
      bypass(node, node.inputs[0]);
      continue;
    }
    if (!(node.def->traits.activation || node.def->traits.softmax) || node.inputs.size() != 1) continue;
    Node& producer = graph.nodes[size_t(node.inputs[0])];
    if (!producer.def || !producer.attrs.has("activation") || !producer.fused.empty() ||
        graph.output == producer.id)
      continue;
    const std::string& activation = producer.attrs.get_string("activation");
    if (activation != "linear" && activation != "none") continue;
    int consumers = 0;
    for (const Node& other : graph.nodes)
      consumers += int(std::count(other.inputs.begin(), other.inputs.end(), producer.id));
    if (consumers != 1) continue;
    producer.fused.push_back({node.def, node.name, node.attrs});
    producer.shape = node.shape;
    bypass(node, producer.id);
  }
  Graph folded = graph;
  folded.nodes.clear();
  std::vector<int> new_id(graph.nodes.size(), -1);
  for (size_t i = 0; i < graph.nodes.size(); ++i)
    if (!removed[i]) {
      new_id[i] = int(folded.nodes.size());
      folded.nodes.push_back(graph.nodes[i]);
    }
  for (Node& node : folded.nodes) {
    node.id = new_id[size_t(node.id)];
    for (int& input : node.inputs) input = new_id[size_t(input)];
  }
  folded.output = new_id[size_t(graph.output)];
  return folded;
}

// The compiled graph, one line per node.
std::vector<std::string> graph_lines(const Graph& compiled) {
  Graph graph = canonical(compiled);
  std::vector<std::string> lines;
  for (const Node& node : graph.nodes) {
    if (!node.def) {
      lines.push_back(fmt::format("{} input {}", node.name, shape_str(node.shape)));
      continue;
    }
    Shape in = graph.nodes[size_t(node.inputs[0])].shape;
    std::string line = fmt::format("{}: {} inputs=[", node.name, op_text(node.def, node.attrs, in));
    for (int input : node.inputs) line += graph.nodes[size_t(input)].name + " ";
    line += "] " + shape_str(node.shape);
    Shape shape = node.unfused_shape;
    for (const Node::FusedOp& op : node.fused) {
      line += " + " + op_text(op.def, op.attrs, shape);
      if (op.def->traits.pooling != Pooling::None) shape = op.def->infer_shape({shape}, op.attrs);
    }
    for (const ParamSpec& param : node.params) line += fmt::format(" {}[{}]", param.name, fmt::join(param.shape, ","));
    lines.push_back(line);
  }
  lines.push_back("output: " + graph.nodes[size_t(graph.output)].name);
  return lines;
}

// Export, import, and compare: same weights bit for bit, same network.
void check_round_trip(const Graph& graph, const std::string& name) {
  std::map<std::string, ImportedTensor> weights = random_weights(graph, 7);
  std::string bytes = export_checked(graph, weights, name);
  OnnxImport imported;
  try {
    imported = import_onnx_bytes(bytes, name);
  } catch (const UserError& error) {
    FAIL(error.formatted());
  }

  CHECK(imported.input_name == "input");
  CHECK(imported.output_name == "output");
  CHECK(imported.spec.input_shape == graph.nodes[0].shape);
  REQUIRE(imported.weights.size() == weights.size());
  for (const auto& [key, tensor] : weights) {
    INFO("weights " << key);
    auto it = imported.weights.find(key);
    REQUIRE(it != imported.weights.end());
    CHECK(it->second.shape == tensor.shape);
    REQUIRE(it->second.data.size() == tensor.data.size());
    CHECK(std::memcmp(it->second.data.data(), tensor.data.data(), tensor.data.size() * sizeof(float)) == 0);
  }

  Graph again;
  try {
    again = compile_graph(imported.spec);
  } catch (const UserError& error) {
    FAIL("the imported model does not compile: " << error.formatted() << "\n" << imported.yaml);
  }
  INFO("imported model:\n" << imported.yaml);
  CHECK(fmt::format("{}", fmt::join(graph_lines(again), "\n")) == fmt::format("{}", fmt::join(graph_lines(graph), "\n")));
}

onnx::ModelProto parse(const std::string& bytes) {
  onnx::ModelProto model;
  REQUIRE(model.ParseFromString(bytes));
  return model;
}

}  // namespace

TEST_CASE("ONNX export: every model in models/ passes the ONNX checker", "[onnx][export]") {
  std::vector<std::string> files = model_files();
  REQUIRE(files.size() >= 6);
  for (const std::string& file : files) {
    INFO(file);
    Graph graph = compile_graph(parse_model_file(file));
    std::string bytes = export_checked(graph, random_weights(graph, 1), file);

    onnx::ModelProto model = parse(bytes);
    CHECK(model.ir_version() == 8);
    REQUIRE(model.opset_import_size() == 1);
    CHECK(model.opset_import(0).domain() == "");
    CHECK(model.opset_import(0).version() == 14);
    CHECK(model.producer_name() == "cnnc");
    const onnx::GraphProto& g = model.graph();
    REQUIRE(g.input_size() == 1);
    REQUIRE(g.output_size() == 1);
    CHECK(g.input(0).name() == "input");
    CHECK(g.output(0).name() == "output");
    // NCHW with a symbolic batch: [batch, C, H, W] in, [batch, classes] out.
    const Shape& in = graph.nodes[0].shape;
    const auto& in_dims = g.input(0).type().tensor_type().shape().dim();
    REQUIRE(in_dims.size() == 4);
    CHECK(in_dims[0].dim_param() == "batch");
    CHECK((Shape{in_dims[1].dim_value(), in_dims[2].dim_value(), in_dims[3].dim_value()}) == Shape{in[2], in[0], in[1]});
    const auto& out_dims = g.output(0).type().tensor_type().shape().dim();
    REQUIRE(out_dims.size() == 2);
    CHECK(out_dims[1].dim_value() == graph.nodes[size_t(graph.output)].shape[0]);

    // Every layer has a node of its name; every parameter an initializer of its name.
    std::set<std::string> node_names, initializers;
    for (const onnx::NodeProto& node : g.node()) node_names.insert(node.name());
    for (const onnx::TensorProto& tensor : g.initializer()) initializers.insert(tensor.name());
    for (const Node& node : graph.nodes) {
      if (!node.def) continue;
      CHECK(node_names.count(node.name));
      for (const Node::FusedOp& op : node.fused)
        if (op.name != node.name) CHECK(node_names.count(op.name));
      for (const ParamSpec& param : node.params) CHECK(initializers.count(node.name + "." + param.name));
    }
  }
}

TEST_CASE("ONNX export: weights in ONNX's layouts", "[onnx][export]") {
  Graph graph = compile_graph(parse_model_text(R"(
input: {shape: [5, 5, 2]}
layers:
  - conv2d: {filters: 3, kernel: [2, 3]}
  - depthwise_conv2d: {kernel: 2, depth_multiplier: 2}
  - flatten
  - dense: {units: 2}
)",
                                                "m.yaml"));
  std::map<std::string, ImportedTensor> weights = random_weights(graph, 3);
  onnx::ModelProto model = parse(export_checked(graph, weights, "m.onnx"));
  std::map<std::string, const onnx::TensorProto*> tensors;
  for (const onnx::TensorProto& tensor : model.graph().initializer()) tensors[tensor.name()] = &tensor;
  auto value = [&](const std::string& name, size_t index) {
    float v;
    std::memcpy(&v, tensors.at(name)->raw_data().data() + index * 4, 4);
    return v;
  };
  // conv2d.kernel [kh=2, kw=3, cin=2, cout=3] -> [cout, cin, kh, kw]
  const onnx::TensorProto& conv = *tensors.at("conv2d.kernel");
  CHECK(std::vector<int64_t>(conv.dims().begin(), conv.dims().end()) == std::vector<int64_t>{3, 2, 2, 3});
  const std::vector<float>& k = weights.at("conv2d.kernel").data;
  for (int64_t co = 0; co < 3; ++co)
    for (int64_t ci = 0; ci < 2; ++ci)
      for (int64_t y = 0; y < 2; ++y)
        for (int64_t x = 0; x < 3; ++x)
          CHECK(value("conv2d.kernel", size_t(((co * 2 + ci) * 2 + y) * 3 + x)) ==
                k[size_t(((y * 3 + x) * 2 + ci) * 3 + co)]);
  // depthwise_conv2d.depthwise_kernel [2, 2, C=3, m=2] -> [C * m, 1, 2, 2], channel c * m + j
  const onnx::TensorProto& dw = *tensors.at("depthwise_conv2d.depthwise_kernel");
  CHECK(std::vector<int64_t>(dw.dims().begin(), dw.dims().end()) == std::vector<int64_t>{6, 1, 2, 2});
  const std::vector<float>& d = weights.at("depthwise_conv2d.depthwise_kernel").data;
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t y = 0; y < 2; ++y)
        for (int64_t x = 0; x < 2; ++x)
          CHECK(value("depthwise_conv2d.depthwise_kernel", size_t(((c * 2 + j) * 2 + y) * 2 + x)) ==
                d[size_t(((y * 2 + x) * 3 + c) * 2 + j)]);
  // The dense kernel goes as it is: Gemm's B [in, units], after a Transpose to NHWC.
  const onnx::TensorProto& dense = *tensors.at("dense.kernel");
  CHECK(std::vector<int64_t>(dense.dims().begin(), dense.dims().end()) == std::vector<int64_t>{3 * 2 * 6, 2});
  CHECK(dense.raw_data().size() == weights.at("dense.kernel").data.size() * 4);
  CHECK(std::memcmp(dense.raw_data().data(), weights.at("dense.kernel").data.data(), dense.raw_data().size()) == 0);
  std::vector<std::string> ops;
  for (const onnx::NodeProto& node : model.graph().node()) ops.push_back(node.op_type() + " " + node.name());
  CHECK(ops == std::vector<std::string>{"Conv conv2d", "Conv depthwise_conv2d", "Transpose flatten/nhwc",
                                        "Flatten flatten", "Gemm dense"});
}

TEST_CASE("ONNX export: every activation and every op pass the ONNX checker", "[onnx][export]") {
  for (const char* text : {kEveryActivation, kEveryOp}) {
    Graph graph = compile_graph(parse_model_text(text, "m.yaml"));
    INFO(graph.name);
    onnx::ModelProto model = parse(export_checked(graph, random_weights(graph, 2), graph.name + ".onnx"));
    std::set<std::string> ops;
    for (const onnx::NodeProto& node : model.graph().node()) ops.insert(node.op_type());
    if (graph.name == "every_activation")
      for (const char* op : {"Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "Elu", "HardSigmoid", "Mul", "Div", "Erf",
                             "HardSwish", "Softmax"})
        CHECK(ops.count(op));
    else
      for (const char* op : {"Conv", "BatchNormalization", "MaxPool", "AveragePool", "Pad", "Resize", "Concat", "Add",
                             "GlobalMaxPool", "GlobalAveragePool", "Transpose", "Flatten", "Dropout", "Gemm"})
        CHECK(ops.count(op));
  }
}

TEST_CASE("ONNX export: the same graph without fusion gives the same ONNX nodes", "[onnx][export]") {
  for (const char* text : {kEveryActivation, kEveryOp}) {
    ModelSpec spec = parse_model_text(text, "m.yaml");
    Graph fused = compile_graph(spec);
    PipelineOptions options;
    options.fuse = false;
    Graph unfused = compile_graph(spec, options);
    INFO(fused.name);
    // The same ONNX ops in the same order, the same weights. (Only names differ: without fusion,
    // `activation: swish` stays on its layer instead of becoming a node "<layer>_swish".)
    auto summary = [](const std::string& bytes) {
      onnx::ModelProto model;
      REQUIRE(model.ParseFromString(bytes));
      std::vector<std::string> items;
      for (const onnx::NodeProto& node : model.graph().node()) items.push_back(node.op_type());
      for (const onnx::TensorProto& tensor : model.graph().initializer())
        if (tensor.name().find('.') != std::string::npos) items.push_back(tensor.name());
      return items;
    };
    std::map<std::string, ImportedTensor> weights = random_weights(fused, 4);
    CHECK(summary(export_checked(fused, weights, "fused.onnx")) == summary(export_checked(unfused, weights, "unfused.onnx")));
  }
}

TEST_CASE("ONNX export: import gives back the same weights and network, models/", "[onnx][export][import]") {
  for (const std::string& file : model_files()) {
    INFO(file);
    check_round_trip(compile_graph(parse_model_file(file)), file);
  }
}

TEST_CASE("ONNX export: import gives back the same weights and network, every activation and op",
          "[onnx][export][import]") {
  for (const char* text : {kEveryActivation, kEveryOp}) {
    Graph graph = compile_graph(parse_model_text(text, "m.yaml"));
    INFO(graph.name);
    check_round_trip(graph, graph.name + ".onnx");
  }
}

TEST_CASE("ONNX export: layers named input or output do not clash with the graph's tensors", "[onnx][export]") {
  for (const char* text : {"input: {shape: [6]}\nlayers:\n  - dense: {name: output, units: 3}\n  - relu: {name: r}\n",
                           "input: {shape: [6]}\nlayers:\n  - dense: {name: d, units: 3}\n  - relu: {name: output}\n"}) {
    Graph graph = compile_graph(parse_model_text(text, "m.yaml"));
    onnx::ModelProto model = parse(export_checked(graph, random_weights(graph, 6), "m.onnx"));
    const onnx::GraphProto& g = model.graph();
    REQUIRE(g.node_size() == 2);
    CHECK(g.node(0).input(0) == "input");
    CHECK(g.node(1).input(0) == g.node(0).output(0));
    CHECK(g.node(1).output(0) == "output");
    CHECK(g.node(0).output(0) != "output");
  }
}

TEST_CASE("ONNX export: errors", "[onnx][export]") {
  Graph graph = compile_graph(parse_model_text("input: {shape: [4]}\nlayers:\n  - dense: {units: 2}\n", "m.yaml"));
  std::map<std::string, ImportedTensor> weights = random_weights(graph, 5);

  SECTION("a missing weight names it") {
    weights.erase("dense.bias");
    CHECK_THROWS_WITH(export_onnx_bytes(graph, weights), Catch::Contains("dense.bias"));
  }
  SECTION("a weight of the wrong shape names it") {
    weights["dense.kernel"].shape = {2, 4};
    CHECK_THROWS_WITH(export_onnx_bytes(graph, weights), Catch::Contains("dense.kernel"));
  }
  SECTION("the checker's and shape inference's complaints are UserErrors naming the file") {
    CHECK_THROWS_AS(check_onnx_bytes("not a model", "x.onnx"), UserError);
    onnx::ModelProto model = parse(export_onnx_bytes(graph, weights));
    model.set_ir_version(0);
    std::string bytes;
    model.SerializeToString(&bytes);
    CHECK_THROWS_WITH(check_onnx_bytes(bytes, "x.onnx"), Catch::Contains("x.onnx"));
    // A declared shape that contradicts ONNX's own inference: only the full check sees it.
    model = parse(export_onnx_bytes(graph, weights));
    model.mutable_graph()->mutable_output(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_value(3);
    model.SerializeToString(&bytes);
    CHECK_NOTHROW(check_onnx_bytes(bytes, "x.onnx"));
    CHECK_THROWS_AS(check_onnx_bytes(bytes, "x.onnx", /*full_check=*/true), UserError);
  }
  SECTION("export_onnx_file writes the file, and nothing else, atomically") {
    fs::path dir = fs::temp_directory_path() / fmt::format("cnnc-onnx-export-{}", ::getpid());
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::string path = (dir / "m.onnx").string();
    CHECK(export_onnx_file(graph, weights, path) == 1);
    std::ifstream in(path, std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    CHECK(buffer.str() == export_onnx_bytes(graph, weights));
    CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
    CHECK_THROWS_AS(export_onnx_file(graph, weights, (dir / "no" / "m.onnx").string()), UserError);
    fs::remove_all(dir);
  }
}
