// Every gradient against finite differences: for each parameter tensor, central differences of
// the package's own loss at sampled entries against the backward kernels' gradient.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <iterator>
#include <random>

#include "codegen/codegen.h"
#include "test_support.h"

using namespace cnnc;

namespace {

struct Problem {
  std::vector<float> input;
  std::vector<int32_t> labels;
  int batch = 3;
};

double mean_loss(rt::Network& network, const Problem& problem) {
  network.params_changed();
  return double(network.compute_gradients(problem.input.data(), problem.labels.data(), problem.batch).loss_sum) /
         problem.batch;
}

void check_gradients(const std::string& model) {
  uint32_t seed = 0;
  for (const test::GradientModel& entry : test::gradient_check_models())
    if (entry.path == model) seed = entry.seed;
  REQUIRE(seed != 0);  // listed in test::gradient_check_models(), so that the op walk sees it
  test::BuiltModel built = test::build_model(model);
  rt::Network network(built.package);
  test::randomize_params(network, seed);
  network.set_seed(seed);
  Problem problem;
  problem.input = test::random_input(problem.batch * built.package->input_elements(), seed + 1);
  std::mt19937 random(seed + 2);
  for (int i = 0; i < problem.batch; ++i)
    problem.labels.push_back(int32_t(random() % uint32_t(built.package->output_elements())));

  // The loss itself: -log p[label] of the forward pass, averaged (inference has no dropout).
  // (Training differs from inference where dropout drops and batchnorm uses the batch's statistics.)
  bool dropout = false;  // (or any op whose training form differs: batchnorm)
  for (const Node& node : built.graph.nodes) dropout = dropout || (node.def && node.def->traits.training_form);
  std::vector<float> probabilities = network.forward(problem.input, problem.batch);
  double expected_loss = 0;
  for (int i = 0; i < problem.batch; ++i)
    expected_loss -= std::log(double(probabilities[size_t(i * built.package->output_elements() + problem.labels[i])]));
  expected_loss /= problem.batch;
  double loss = mean_loss(network, problem);
  if (!dropout) CHECK(loss == Approx(expected_loss).epsilon(1e-5));

  std::vector<float> analytic(network.param_grads(), network.param_grads() + built.package->param_floats());
  // Small enough that few ReLU or max-pooling kinks fall inside [x - step, x + step] (2e-3 crossed one
  // in grad_relu), large enough that float32 rounding of the loss stays below the tolerance.
  const double step = 5e-4;
  int checked = 0;
  for (const rt::TensorInfo& tensor : built.package->params()) {
    std::vector<int64_t> entries;
    if (tensor.elements() <= 16) {
      for (int64_t i = 0; i < tensor.elements(); ++i) entries.push_back(i);
    } else {
      for (int k = 0; k < 16; ++k) entries.push_back(int64_t(random() % uint64_t(tensor.elements())));
    }
    for (int64_t entry : entries) {
      float* value = network.params() + tensor.offset + entry;
      float original = *value;
      auto difference = [&](double h) {
        *value = original + float(h);
        double plus = mean_loss(network, problem);
        *value = original - float(h);
        double minus = mean_loss(network, problem);
        *value = original;
        return (plus - minus) / (2 * h);
      };
      double exact = analytic[size_t(tensor.offset + entry)];
      auto agrees = [&](double numeric) {
        return std::fabs(numeric - exact) <= 2e-3 + 3e-2 * std::max(std::fabs(numeric), std::fabs(exact));
      };
      double numeric = difference(step);
      // A max pooling's argmax that switches within [x - step, x + step] bends the difference (a
      // bias feeds every window); a quarter of the step, still above float32's rounding of the
      // loss, is tried before the entry fails. (winograd_pool's stem.bias[9]: backward -0.03752,
      // differences -0.03497 and, after batchnorm's statistics changed in the 7th digit, -0.03433.)
      double smaller = agrees(numeric) ? numeric : difference(step / 4);
      INFO(model << ": d loss / d " << tensor.name << "[" << entry << "]: backward " << exact << ", finite difference "
                 << numeric << " (a quarter of the step: " << smaller << ")");
      CHECK(agrees(smaller));
      ++checked;
    }
  }
  CHECK(checked > 0);
  // The gradient does not depend on evaluating it again (no state leaks between calls).
  mean_loss(network, problem);
  CHECK(std::equal(analytic.begin(), analytic.end(), network.param_grads()));
}

// How often `what` occurs in a built package's manifest.json (its kernels' schedules).
size_t manifest_count(const test::BuiltModel& built, const std::string& what) {
  std::ifstream manifest(built.result.dir + "/manifest.json");
  std::string text((std::istreambuf_iterator<char>(manifest)), std::istreambuf_iterator<char>());
  size_t found = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++found;
  return found;
}

}  // namespace

TEST_CASE("gradients: convolutions with strides, same padding and fused pooling match finite differences", "[gradients]") {
  check_gradients("tests/models/grad_conv.yaml");
}

TEST_CASE("gradients: add, concat, standalone pooling, dropout and softmax match finite differences", "[gradients]") {
  check_gradients("tests/models/grad_dag.yaml");
}

TEST_CASE("gradients: ReLU and max pooling (the reference structure) match finite differences", "[gradients]") {
  check_gradients("tests/models/grad_relu.yaml");
}

TEST_CASE("gradients: dense layers with every activation match finite differences", "[gradients]") {
  check_gradients("tests/models/ops_dense.yaml");
}

TEST_CASE("gradients: backward at the window maxima only (conv + max pooling) matches finite differences", "[gradients]") {
  test::BuiltModel built = test::build_model("tests/models/grad_sparse.yaml");
  int sparse = 0;
  for (const Node& node : built.graph.nodes) sparse += saves_pool_index(node) ? 1 : 0;
  CHECK(sparse == 4);  // the paths under test are taken
  check_gradients("tests/models/grad_sparse.yaml");
}

TEST_CASE("gradients: batchnorm in training mode matches finite differences", "[gradients]") {
  check_gradients("tests/models/grad_bn.yaml");
}

TEST_CASE("gradients: relu6, leaky_relu, elu, hard_sigmoid and global pooling match finite differences", "[gradients]") {
  check_gradients("tests/models/grad_activations.yaml");
}

TEST_CASE("gradients: zero_padding2d and upsampling2d match finite differences", "[gradients]") {
  check_gradients("tests/models/grad_spatial.yaml");
}

TEST_CASE("gradients: large and dilated kernels at stride 1 (the padded gradient convolved, weight gradients over blocks of "
          "rows) match finite differences", "[gradients]") {
  check_gradients("tests/models/big_taps.yaml");
}

TEST_CASE("gradients: dilated convolutions, with and without a fused max pooling, match finite differences", "[gradients]") {
  test::BuiltModel built = test::build_model("tests/models/grad_dilated.yaml");
  int sparse = 0;
  for (const Node& node : built.graph.nodes) sparse += saves_pool_index(node) ? 1 : 0;
  CHECK(sparse == 2);  // both index paths are taken
  check_gradients("tests/models/grad_dilated.yaml");
}

TEST_CASE("gradients: swish, silu, gelu and hard_swish, as layers and as activation: values, match finite differences",
          "[gradients]") {
  test::BuiltModel built = test::build_model("tests/models/grad_swish.yaml");
  // `activation: swish` on c became a node of its own, named around the taken c_swish.
  bool split = false;
  for (const Node& node : built.graph.nodes)
    split = split || (node.name == "c_swish_1" && node.def == find_op("swish") && built.graph.nodes[node.inputs[0]].name == "c");
  CHECK(split);
  check_gradients("tests/models/grad_swish.yaml");
}

TEST_CASE("gradients: depthwise and separable convolutions (multipliers, strides, dilation, fused activations) match "
          "finite differences",
          "[gradients]") {
  check_gradients("tests/models/grad_depthwise.yaml");
}

TEST_CASE("gradients: Winograd input and weight gradients (3x3, stride 1, dilations 1 to 3) match finite differences",
          "[gradients]") {
  test::BuiltModel built = test::build_model("tests/models/winograd.yaml");
  // By the rule (16 channels and more): c33, c16, c17, d2, d23.
  CHECK(manifest_count(built, "input gradient: Winograd") == 5);
  CHECK(manifest_count(built, "weight gradient: Winograd") == 5);
  CHECK(manifest_count(built, "\"executed_flops\"") > 0);  // Winograd's own work, recorded apart
  check_gradients("tests/models/winograd.yaml");
}

TEST_CASE("gradients: Winograd F(2x2, 5x5) input gradients and F(5x5, 2x2) weight gradients (5x5, stride 1, 'same' and "
          "'valid', dilation 2) match finite differences",
          "[gradients]") {
  test::BuiltModel built = test::build_model("tests/models/winograd5.yaml");
  // By the rule: b, c, d and e (a has 5 input channels, and its backward computes no input gradient).
  CHECK(manifest_count(built, "input gradient: Winograd F(2x2, 5x5)") == 4);
  CHECK(manifest_count(built, "weight gradient: Winograd F(5x5, 2x2)") == 4);
  check_gradients("tests/models/winograd5.yaml");
}

TEST_CASE("gradients: through Winograd convolutions with a fused pooling (the maxima's positions from Winograd's "
          "forward) match finite differences",
          "[gradients]") {
  check_gradients("tests/models/winograd_pool.yaml");
}
