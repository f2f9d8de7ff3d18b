// The models in models/ and small inline ones, checked against shapes, parameter counts and FLOPs
// worked out by hand from the Keras rules:
//   conv2d, padding valid:  out = floor((in - kernel) / stride) + 1
//   padding same:           out = ceil(in / stride)
//   conv2d parameters:      kh * kw * in_channels * filters (+ filters with a bias)
//   dense parameters:       in * units (+ units with a bias)
//   batchnorm parameters:   4 * channels (gamma, beta trainable; moving mean and variance not)
//   pooling stride:         the pool size unless given
//   conv2d FLOPs:           2 * output elements * kh * kw * in_channels; dense: 2 * in * units
#include <catch2/catch.hpp>

#include <filesystem>

#include <string>
#include <vector>

#include "frontend/parse_model.h"
#include "graph/pipeline.h"

using namespace cnnc;

namespace {

const std::string kModels = std::string(CNNC_SOURCE_DIR) + "/models/";

// The checked graph as `cnnc check` sees it: one node per layer, before the code-generation passes.
Graph compile(const ModelSpec& model) {
  PipelineOptions options;
  options.fuse = false;
  return compile_graph(model, options);
}

Graph compile_file(const std::string& name) { return compile(parse_model_file(kModels + name)); }
Graph compile_text(const std::string& text) { return compile(parse_model_text(text, "m.yaml")); }

const Node& node_named(const Graph& graph, const std::string& name) {
  for (const Node& node : graph.nodes)
    if (node.name == name) return node;
  FAIL("no node named '" << name << "'");
  throw;  // unreachable: FAIL throws
}

struct ExpectedLayer {
  std::string name;
  std::string op;
  Shape shape;
  int64_t params;
};

// Checks the graph has exactly these nodes after the input, in this order.
void check_layers(const Graph& graph, const std::vector<ExpectedLayer>& expected) {
  REQUIRE(graph.nodes.size() == expected.size() + 1);
  CHECK(graph.nodes[0].name == "input");
  for (size_t i = 0; i < expected.size(); ++i) {
    const Node& node = graph.nodes[i + 1];
    INFO("node " << i + 1 << " '" << node.name << "'");
    CHECK(node.name == expected[i].name);
    CHECK(node.op_name() == expected[i].op);
    CHECK(node.shape == expected[i].shape);
    CHECK(node.param_count() == expected[i].params);
  }
}

}  // namespace

TEST_CASE("mnist_cnn: the Keras reference network", "[models]") {
  Graph graph = compile_file("mnist_cnn.yaml");
  CHECK(graph.name == "mnist_cnn");
  CHECK(graph.nodes[0].shape == Shape{28, 28, 1});
  check_layers(graph, {
      // 28 - 3 + 1 = 26; 3*3*1*32 + 32 = 320
      {"conv2d", "conv2d", {26, 26, 32}, 320},
      // stride = size = 2: floor((26 - 2) / 2) + 1 = 13
      {"maxpool2d", "maxpool2d", {13, 13, 32}, 0},
      // 13 - 3 + 1 = 11; 3*3*32*64 + 64 = 18,432 + 64 = 18,496
      {"conv2d_1", "conv2d", {11, 11, 64}, 18496},
      // floor((11 - 2) / 2) + 1 = 5
      {"maxpool2d_1", "maxpool2d", {5, 5, 64}, 0},
      // 5*5*64 = 1600
      {"flatten", "flatten", {1600}, 0},
      // 1600*128 + 128 = 204,800 + 128 = 204,928
      {"dense", "dense", {128}, 204928},
      // 128*10 + 10 = 1290
      {"dense_1", "dense", {10}, 1290},
  });
  // 320 + 18,496 + 204,928 + 1,290
  CHECK(graph.total_params() == 225034);
  CHECK(graph.trainable_params() == 225034);

  // conv2d:   2 * (26*26*32 = 21,632) * (3*3*1 = 9)   = 389,376
  // conv2d_1: 2 * (11*11*64 = 7,744)  * (3*3*32 = 288) = 4,460,544
  // dense:    2 * 1600 * 128 = 409,600;  dense_1: 2 * 128 * 10 = 2,560
  CHECK(node_named(graph, "conv2d").flops == 389376);
  CHECK(node_named(graph, "conv2d_1").flops == 4460544);
  CHECK(node_named(graph, "dense").flops == 409600);
  CHECK(node_named(graph, "dense_1").flops == 2560);

  CHECK(node_named(graph, "conv2d").attrs.get_string("activation") == "relu");
  CHECK(node_named(graph, "dense_1").attrs.get_string("activation") == "softmax");
  CHECK(graph.output == 7);
  CHECK(graph.warnings.empty());

  CHECK(graph.train.loss == "categorical_crossentropy");
  CHECK(graph.train.optimizer.kind == "adam");
  CHECK(graph.train.optimizer.learning_rate == 0.001);
  CHECK(graph.train.optimizer.beta_1 == 0.9);    // Keras defaults, not written in the file
  CHECK(graph.train.optimizer.beta_2 == 0.999);
  CHECK(graph.train.optimizer.epsilon == 1e-7);
  CHECK(graph.train.batch_size == 32);
  CHECK(graph.train.epochs == 5);
  CHECK(graph.train.seed == 42);
}

TEST_CASE("lenet5: same padding, average pooling, an explicit pool stride", "[models]") {
  Graph graph = compile_file("lenet5.yaml");
  CHECK(graph.name == "lenet5");
  check_layers(graph, {
      // same: ceil(28 / 1) = 28; 5*5*1*6 + 6 = 156
      {"conv2d", "conv2d", {28, 28, 6}, 156},
      // floor((28 - 2) / 2) + 1 = 14
      {"avgpool2d", "avgpool2d", {14, 14, 6}, 0},
      // 14 - 5 + 1 = 10; 5*5*6*16 + 16 = 2,400 + 16 = 2,416
      {"conv2d_1", "conv2d", {10, 10, 16}, 2416},
      // floor((10 - 2) / 2) + 1 = 5
      {"avgpool2d_1", "avgpool2d", {5, 5, 16}, 0},
      // 5*5*16 = 400
      {"flatten", "flatten", {400}, 0},
      // 400*120 + 120 = 48,120
      {"dense", "dense", {120}, 48120},
      // 120*84 + 84 = 10,164
      {"dense_1", "dense", {84}, 10164},
      // 84*10 + 10 = 850
      {"dense_2", "dense", {10}, 850},
  });
  // 156 + 2,416 + 48,120 + 10,164 + 850
  CHECK(graph.total_params() == 61706);
  CHECK(graph.trainable_params() == 61706);
  CHECK(graph.train.optimizer.kind == "sgd");
  CHECK(graph.train.optimizer.learning_rate == 0.05);
  CHECK(graph.train.optimizer.momentum == 0.9);
  CHECK(graph.train.batch_size == 64);
  CHECK(graph.train.seed == 1);
}

TEST_CASE("resnet_small: named layers, residual adds, batchnorm, a strided 1x1 skip", "[models]") {
  Graph graph = compile_file("resnet_small.yaml");
  CHECK(graph.name == "resnet_small");
  check_layers(graph, {
      // same, stride 1: 28; 3*3*1*16 + 16 = 160
      {"stem", "conv2d", {28, 28, 16}, 160},
      // no bias: 3*3*16*16 = 2,304
      {"block1_conv1", "conv2d", {28, 28, 16}, 2304},
      // 4 * 16 = 64
      {"block1_bn1", "batchnorm", {28, 28, 16}, 64},
      {"block1_relu1", "relu", {28, 28, 16}, 0},
      {"block1_conv2", "conv2d", {28, 28, 16}, 2304},
      {"block1_bn2", "batchnorm", {28, 28, 16}, 64},
      {"block1_add", "add", {28, 28, 16}, 0},
      {"block1_out", "relu", {28, 28, 16}, 0},
      // same, stride 2: ceil(28 / 2) = 14; 3*3*16*32 = 4,608
      {"block2_conv1", "conv2d", {14, 14, 32}, 4608},
      // 4 * 32 = 128
      {"block2_bn1", "batchnorm", {14, 14, 32}, 128},
      {"block2_relu1", "relu", {14, 14, 32}, 0},
      // 3*3*32*32 = 9,216
      {"block2_conv2", "conv2d", {14, 14, 32}, 9216},
      {"block2_bn2", "batchnorm", {14, 14, 32}, 128},
      // valid 1x1, stride 2 on 28: floor((28 - 1) / 2) + 1 = 14; 1*1*16*32 = 512
      {"block2_skip", "conv2d", {14, 14, 32}, 512},
      {"block2_add", "add", {14, 14, 32}, 0},
      {"block2_out", "relu", {14, 14, 32}, 0},
      // size 14, stride 14: floor((14 - 14) / 14) + 1 = 1
      {"avgpool2d", "avgpool2d", {1, 1, 32}, 0},
      {"flatten", "flatten", {32}, 0},
      {"dropout", "dropout", {32}, 0},
      // 32*10 + 10 = 330
      {"dense", "dense", {10}, 330},
  });
  // 160 + 2,304 + 64 + 2,304 + 64 + 4,608 + 128 + 9,216 + 128 + 512 + 330 = 19,818
  CHECK(graph.total_params() == 19818);
  // moving mean and variance: 2*16 + 2*16 + 2*32 + 2*32 = 192 not trained; 19,818 - 192
  CHECK(graph.trainable_params() == 19626);

  // The skip connection reads block1_out, not the layer written before it.
  const Node& skip = node_named(graph, "block2_skip");
  REQUIRE(skip.inputs.size() == 1);
  CHECK(graph.nodes[skip.inputs[0]].name == "block1_out");
  const Node& add = node_named(graph, "block1_add");
  REQUIRE(add.inputs.size() == 2);
  CHECK(graph.nodes[add.inputs[0]].name == "block1_bn2");
  CHECK(graph.nodes[add.inputs[1]].name == "stem");
  CHECK(graph.train.optimizer.kind == "adam");  // written as a bare name: Keras defaults
  CHECK(graph.train.optimizer.learning_rate == 0.001);
  CHECK(graph.warnings.empty());
}

// The zoo's newer networks (docs/models.md): parameter counts derived by hand from the papers'
// layouts, Keras's parameter shapes.
TEST_CASE("resnet20, mobilenet, dilated_swish: the zoo's parameter counts", "[models]") {
  Graph resnet = compile_file("resnet20.yaml");
  // stem 3*3*1*16 = 144; stage 1: 6 x 3*3*16*16 = 13,824; stage 2: 3*3*16*32 + 5 x 3*3*32*32
  // + 1*1*16*32 = 51,200; stage 3: 3*3*32*64 + 5 x 3*3*64*64 + 1*1*32*64 = 204,800; batchnorm
  // 4 x (16 + 6*16 + 7*32 + 7*64) = 3,136; dense 64*10 + 10 = 650. Total 273,754 (the paper's
  // "0.27M"); moving statistics 3,136 / 2 = 1,568 not trained.
  CHECK(resnet.total_params() == 273754);
  CHECK(resnet.trainable_params() == 272186);
  CHECK(node_named(resnet, "s3b1_proj").shape == Shape{7, 7, 64});
  CHECK(node_named(resnet, "pool").shape == Shape{64});
  int convs = 0;
  for (const Node& node : resnet.nodes) convs += node.op_name() == "conv2d" ? 1 : 0;
  CHECK(convs == 19 + 2);  // 19 3x3 convolutions (with the dense: 20 weight layers) + 2 projections

  Graph mobilenet = compile_file("mobilenet.yaml");
  // stem 144; depthwise 3*3*C per block: 144 + 288 + 576 + 576 + 1,152 + 1,152 + 2,304 = 6,192;
  // pointwise 16*32 + 32*64 + 64*64 + 64*128 + 128*128 + 128*256 + 256*256 = 129,536;
  // batchnorm 4 x (16 + 16 + 32 + 32 + 64 + 64 + 64 + 64 + 128 + 128 + 128 + 128 + 256 + 256 + 256) = 6,528;
  // dense 256*10 + 10 = 2,570. Total 144,970, of which 3,264 moving statistics.
  CHECK(mobilenet.total_params() == 144970);
  CHECK(mobilenet.trainable_params() == 141706);
  CHECK(node_named(mobilenet, "b6_dw").shape == Shape{4, 4, 128});
  CHECK(node_named(mobilenet, "b6_dw").params[0].shape == Shape{3, 3, 128, 1});

  Graph dilated = compile_file("dilated_swish.yaml");
  // 3*3*1*32 + 32 = 320; 3*3*32*32 + 32 = 9,248; 3*3*32*64 + 64 = 18,496; separable 3*3*64
  // + 64*64 + 64 = 4,736; dense 650. Total 33,450.
  CHECK(dilated.total_params() == 33450);
  const Node& separable = node_named(dilated, "separable_conv2d");
  REQUIRE(separable.params.size() == 3);
  CHECK(separable.params[0].name == "depthwise_kernel");
  CHECK(separable.params[1].shape == Shape{1, 1, 64, 64});
  CHECK(separable.params[2].name == "bias");
}

TEST_CASE("every model in models/ parses and compiles, and each has a 32x32x3 variant in models/rgb32/", "[models]") {
  // Catches a model added to models/ without a test above breaking silently.
  for (const char* name : {"mnist_cnn.yaml", "lenet5.yaml", "resnet_small.yaml", "resnet20.yaml", "mobilenet.yaml",
                           "dilated_swish.yaml"}) {
    INFO(name);
    Graph graph = compile_graph(parse_model_file(kModels + name));  // the full pipeline, fusion included
    CHECK(graph.total_params() > 0);
    Graph rgb = compile_graph(parse_model_file(kModels + "rgb32/" + name));
    CHECK(rgb.nodes[0].shape == Shape{32, 32, 3});
    CHECK(rgb.name == graph.name + "_32x32x3");
    // The same layers, in the same order.
    REQUIRE(rgb.nodes.size() == graph.nodes.size());
    for (size_t i = 0; i < graph.nodes.size(); ++i) CHECK(rgb.nodes[i].op_name() == graph.nodes[i].op_name());
  }
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kModels)) files += entry.path().extension() == ".yaml";
  CHECK(files == 6);  // a new model belongs in the lists above
}

TEST_CASE("generated names follow Keras: op, op_1, op_2, skipping names already taken", "[models][names]") {
  Graph graph = compile_text(R"(
input: {shape: [8]}
layers:
  - dense: {units: 4}
  - relu
  - dense: {name: dense_1, units: 4}
  - dense: {units: 4}
  - dense: {units: 4}
  - relu:
)");
  // "dense_1" is taken by name, so the generated names skip it.
  std::vector<std::string> names;
  for (const Node& node : graph.nodes) names.push_back(node.name);
  CHECK(names == std::vector<std::string>{"input", "dense", "relu", "dense_1", "dense_2", "dense_3", "relu_1"});
}

TEST_CASE("the model name defaults to the file's stem", "[models][names]") {
  CHECK(parse_model_text("input: {shape: [4]}\nlayers: [relu]\n", "dir/my_net.yaml").name == "my_net");
  // Not an identifier, so a neutral name.
  CHECK(parse_model_text("input: {shape: [4]}\nlayers: [relu]\n", "dir/2-net.yaml").name == "model");
}

TEST_CASE("pooling stride defaults to the pool size", "[models][shapes]") {
  Graph graph = compile_text(R"(
input: {shape: [7, 7, 3]}
layers:
  - maxpool2d: {size: 3}
  - avgpool2d: {name: explicit, inputs: [input], size: 3, stride: 1}
  - maxpool2d: {name: default_size, inputs: [input]}
  - avgpool2d: {name: rect, inputs: [input], size: [2, 3]}
)");
  const Node& pool = node_named(graph, "maxpool2d");
  CHECK(pool.attrs.get_pair("stride") == std::pair<int64_t, int64_t>(3, 3));
  CHECK(pool.shape == Shape{2, 2, 3});  // floor((7 - 3) / 3) + 1 = 2
  CHECK(node_named(graph, "explicit").shape == Shape{5, 5, 3});  // floor((7 - 3) / 1) + 1 = 5
  // size 2, stride 2: floor((7 - 2) / 2) + 1 = 3
  CHECK(node_named(graph, "default_size").attrs.get_pair("size") == std::pair<int64_t, int64_t>(2, 2));
  CHECK(node_named(graph, "default_size").shape == Shape{3, 3, 3});
  // 2x3 window, stride [2, 3]: floor((7 - 2) / 2) + 1 = 3 rows, floor((7 - 3) / 3) + 1 = 2 columns
  CHECK(node_named(graph, "rect").attrs.get_pair("stride") == std::pair<int64_t, int64_t>(2, 3));
  CHECK(node_named(graph, "rect").shape == Shape{3, 2, 3});
}

TEST_CASE("same and valid padding with strides", "[models][shapes]") {
  Graph graph = compile_text(R"(
input: {shape: [7, 7, 2]}
layers:
  - conv2d: {name: same_s2, filters: 4, kernel: 3, stride: 2, padding: same}
  - conv2d: {name: valid_s2, inputs: [input], filters: 4, kernel: 3, stride: 2}
  - conv2d: {name: same_s1, inputs: [input], filters: 4, kernel: 5, padding: same}
  - conv2d: {name: valid_rect, inputs: [input], filters: 4, kernel: [1, 3], stride: [1, 2]}
  - conv2d: {name: same_big_kernel, inputs: [input], filters: 1, kernel: 9, padding: same}
  - maxpool2d: {name: pool_same, inputs: [input], size: 2, padding: same}
  - avgpool2d: {name: pool_valid, inputs: [input], size: 2}
  - conv2d: {name: nobias, inputs: [input], filters: 4, kernel: 3, use_bias: false}
)");
  CHECK(node_named(graph, "same_s2").shape == Shape{4, 4, 4});           // ceil(7 / 2) = 4
  CHECK(node_named(graph, "valid_s2").shape == Shape{3, 3, 4});          // floor((7 - 3) / 2) + 1 = 3
  CHECK(node_named(graph, "same_s1").shape == Shape{7, 7, 4});           // ceil(7 / 1) = 7
  CHECK(node_named(graph, "valid_rect").shape == Shape{7, 3, 4});        // 7 - 1 + 1; floor((7 - 3) / 2) + 1
  CHECK(node_named(graph, "same_big_kernel").shape == Shape{7, 7, 1});   // same allows a kernel over the input
  CHECK(node_named(graph, "pool_same").shape == Shape{4, 4, 2});         // ceil(7 / 2) = 4
  CHECK(node_named(graph, "pool_valid").shape == Shape{3, 3, 2});        // floor((7 - 2) / 2) + 1 = 3
  // 3*3*2*4 + 4 = 76 and 3*3*2*4 = 72 without the bias
  CHECK(node_named(graph, "valid_s2").param_count() == 76);
  CHECK(node_named(graph, "nobias").param_count() == 72);
  // 1*3*2*4 + 4 = 28
  CHECK(node_named(graph, "valid_rect").param_count() == 28);
  // 2 * (3*3*4 = 36 outputs) * (3*3*2 = 18) = 1,296
  CHECK(node_named(graph, "valid_s2").flops == 1296);
}

TEST_CASE("concat joins along channels by default, or along a given axis", "[models][shapes]") {
  Graph graph = compile_text(R"(
input: {shape: [6, 6, 1]}
layers:
  - conv2d: {name: a, filters: 4, kernel: 3, padding: same}
  - conv2d: {name: b, inputs: [input], filters: 6, kernel: 1}
  - concat: {name: channels, inputs: [a, b, input]}
  - concat: {name: rows, inputs: [a, a], axis: 1}
  - concat: {name: cols, inputs: [a, a], axis: -2}
  - flatten: {name: fa, inputs: [a]}
  - flatten: {name: fb, inputs: [b]}
  - concat: {name: vectors, inputs: [fa, fb]}
  - dense: {units: 2}
)");
  CHECK(node_named(graph, "channels").shape == Shape{6, 6, 11});  // 4 + 6 + 1
  CHECK(node_named(graph, "rows").shape == Shape{12, 6, 4});      // axis 1 (Keras counts the batch as 0)
  CHECK(node_named(graph, "cols").shape == Shape{6, 12, 4});      // axis -2: the width
  CHECK(node_named(graph, "vectors").shape == Shape{360});        // 6*6*4 + 6*6*6 = 144 + 216
  CHECK(node_named(graph, "channels").param_count() == 0);
  CHECK(node_named(graph, "dense").param_count() == 722);         // 360*2 + 2
  // Nothing reads channels, rows or cols (dense reads vectors, the layer before it): three warnings.
  CHECK(graph.warnings.size() == 3);
}

TEST_CASE("add sums inputs of one shape; batchnorm and dropout keep the shape", "[models][shapes]") {
  Graph graph = compile_text(R"(
input: {shape: [10]}
layers:
  - dense: {name: a, units: 5}
  - dense: {name: b, inputs: [input], units: 5, use_bias: false}
  - add: {inputs: [a, b, a]}
  - batchnorm: {momentum: 0.9}
  - dropout: {rate: 0.5}
)");
  CHECK(node_named(graph, "a").param_count() == 55);  // 10*5 + 5
  CHECK(node_named(graph, "b").param_count() == 50);  // 10*5
  CHECK(node_named(graph, "add").shape == Shape{5});
  CHECK(node_named(graph, "add").inputs.size() == 3);
  CHECK(node_named(graph, "batchnorm").param_count() == 20);  // 4 * 5
  CHECK(node_named(graph, "batchnorm").attrs.get_float("momentum") == 0.9);
  CHECK(node_named(graph, "batchnorm").attrs.get_float("epsilon") == 0.001);  // Keras default
  CHECK(node_named(graph, "dropout").shape == Shape{5});
  CHECK(graph.total_params() == 125);
  CHECK(graph.trainable_params() == 115);  // moving mean and variance: 2 * 5
}

TEST_CASE("layers may name inputs written later; nodes come out in topological order", "[models][dag]") {
  Graph graph = compile_text(R"(
input: {shape: [4, 4, 2]}
layers:
  - add: {name: sum, inputs: [left, right]}
  - relu: {name: left, inputs: [input]}
  - sigmoid: {name: right, inputs: [input]}
  - flatten: {inputs: [sum]}
  - dense: {units: 3}
)");
  std::vector<std::string> names;
  for (const Node& node : graph.nodes) names.push_back(node.name);
  // Written order where the edges allow: left and right move before sum, which reads them.
  CHECK(names == std::vector<std::string>{"input", "left", "right", "sum", "flatten", "dense"});
  for (const Node& node : graph.nodes) {
    CHECK(node.id == int(&node - &graph.nodes[0]));
    for (int from : node.inputs) CHECK(from < node.id);
  }
  const Node& sum = node_named(graph, "sum");
  CHECK(sum.layer_index == 1);
  REQUIRE(sum.inputs.size() == 2);
  CHECK(graph.nodes[sum.inputs[0]].name == "left");
  CHECK(graph.nodes[sum.inputs[1]].name == "right");
  CHECK(sum.shape == Shape{4, 4, 2});
  CHECK(node_named(graph, "dense").param_count() == 99);  // 4*4*2 = 32; 32*3 + 3
  // The output is the last layer written.
  CHECK(graph.nodes[graph.output].name == "dense");
}

TEST_CASE("the forms of a layer item are equivalent", "[models][syntax]") {
  // Flow map, block map, name/inputs beside the op, bare op, op with an empty value.
  Graph graph = compile_text(R"(
input:
  shape: [3]
layers:
  - dense:
      units: 4
      activation: tanh
  - name: second
    inputs: dense
    dense: {units: 2}
  - relu
  - sigmoid:
  - softmax: {}
train:
)");
  CHECK(node_named(graph, "dense").attrs.get_string("activation") == "tanh");
  CHECK(node_named(graph, "second").shape == Shape{2});
  CHECK(node_named(graph, "second").param_count() == 10);  // 4*2 + 2
  CHECK(node_named(graph, "softmax").shape == Shape{2});
  CHECK(graph.train.batch_size == 32);  // an empty train: section keeps the defaults
  CHECK(graph.train.epochs == 1);
  CHECK(graph.train.optimizer.kind == "adam");
}

TEST_CASE("attribute defaults follow Keras", "[models][defaults]") {
  ModelSpec model = parse_model_text("input: {shape: [5, 5, 1]}\nlayers:\n  - conv2d: {filters: 2, kernel: 3}\n", "m.yaml");
  REQUIRE(model.layers.size() == 1);
  const Attrs& attrs = model.layers[0].attrs;
  CHECK(attrs.get_pair("stride") == std::pair<int64_t, int64_t>(1, 1));
  CHECK(attrs.get_string("padding") == "valid");
  CHECK(attrs.get_string("activation") == "linear");
  CHECK(attrs.get_bool("use_bias"));
  CHECK(attrs.get_pair("kernel") == std::pair<int64_t, int64_t>(3, 3));
  CHECK(model.train.optimizer.kind == "adam");
  CHECK(model.train.loss == "categorical_crossentropy");
}

TEST_CASE("train: optimizer defaults follow Keras for each optimizer", "[models][defaults]") {
  auto train_of = [](const std::string& train) {
    return parse_model_text("input: {shape: [4]}\nlayers: [relu]\ntrain:\n" + train, "m.yaml").train;
  };
  // Keras: SGD(learning_rate=0.01, momentum=0.0); Adam(0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7).
  TrainSpec sgd = train_of("  optimizer: sgd\n");
  CHECK(sgd.optimizer.kind == "sgd");
  CHECK(sgd.optimizer.learning_rate == 0.01);
  CHECK(sgd.optimizer.momentum == 0.0);
  TrainSpec sgd_momentum = train_of("  optimizer: {sgd: {momentum: 0.5}}\n");
  CHECK(sgd_momentum.optimizer.learning_rate == 0.01);
  CHECK(sgd_momentum.optimizer.momentum == 0.5);
  CHECK(train_of("  optimizer: {sgd: {learning_rate: 0.2}}\n").optimizer.learning_rate == 0.2);
  TrainSpec adam = train_of("  optimizer: {adam: {beta_2: 0.99}}\n");
  CHECK(adam.optimizer.learning_rate == 0.001);
  CHECK(adam.optimizer.beta_1 == 0.9);
  CHECK(adam.optimizer.beta_2 == 0.99);
  CHECK(adam.optimizer.epsilon == 1e-7);
  TrainSpec rest = train_of("  batch_size: 128\n  epochs: 3\n  seed: 4294967295\n");
  CHECK(rest.batch_size == 128);
  CHECK(rest.epochs == 3);
  CHECK(rest.seed == 4294967295);
  CHECK(rest.optimizer.kind == "adam");
}
