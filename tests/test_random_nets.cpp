// Random networks over the whole model language (random_nets.h): every kernel against the
// double-precision reference at batches 1, 7 and 17, and one training step's gradients against
// finite differences of the reference. Fixed seeds here; scripts/fuzz-nets.sh draws new ones
// for as long as asked. Every network it ever caught is kept, reduced, in tests/models/regress_*.yaml.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "random_nets.h"
#include "test_support.h"

using namespace cnnc;

namespace {

void check_seeds(uint32_t first, uint32_t count, const std::string& target = "host") {
  test::NetCheckOptions options;
  options.target = target;
  for (uint32_t seed = first; seed < first + count; ++seed) {
    std::string yaml = test::random_model_yaml(seed);
    test::NetCheckResult result = test::check_net(yaml, "random.yaml", seed, options);
    INFO("random network of seed " << seed << " (build/tests/fuzz_nets --print " << seed << "):\n" << yaml);
    INFO(result.stage << ": " << result.message);
    CHECK(result.ok());
  }
}

}  // namespace

TEST_CASE("random networks: the generator draws every op and attribute of the language", "[random]") {
  std::string all;
  for (uint32_t seed = 1; seed <= 400; ++seed) all += test::random_model_yaml(seed);
  for (const char* text : {"conv2d:", "maxpool2d:", "avgpool2d:", "dense:", "flatten:", "dropout:", "batchnorm:", "add:",
                           "concat:", "relu:", "sigmoid:", "tanh:", "softmax:", "stride: [", "kernel: [", "size: [",
                           "padding: same", "padding: valid", "use_bias: false", "activation: relu",
                           "activation: sigmoid", "activation: tanh", "activation: softmax", "axis: 1", "axis: 2",
                           "epsilon:", "momentum:", "rate:", "activation: linear", "activation: none", "axis: -1", "axis: 3",
                           "axis: -2", "axis: -3", "input: {shape: [", "filters: 7", "filters: 33", "filters: 80",
                           "global_avgpool2d:", "global_maxpool2d:", "relu6:", "leaky_relu:", "elu:", "hard_sigmoid:",
                           "activation: relu6", "activation: leaky_relu", "activation: elu", "activation: hard_sigmoid",
                           "alpha: 0,", "alpha: 1.5", "zero_padding2d: {name", "padding: [[", "upsampling2d:",
                           "size: [1, 3]", "dilation: 2", "dilation: [", "swish:", "silu", "gelu:", "hard_swish:",
                           "activation: swish", "activation: gelu", "activation: hard_swish", "depthwise_conv2d:",
                           "separable_conv2d:", "depth_multiplier: 2", "depth_multiplier: 3"}) {
    INFO("drawn: " << text);
    CHECK(all.find(text) != std::string::npos);
  }
  CHECK(test::random_model_yaml(5) == test::random_model_yaml(5));
  CHECK(test::random_model_yaml(5) != test::random_model_yaml(6));
}

TEST_CASE("random networks: seeds 1-10 match the reference forward and backward", "[random]") { check_seeds(1, 10); }
TEST_CASE("random networks: seeds 11-20 match the reference forward and backward", "[random]") { check_seeds(11, 10); }
TEST_CASE("random networks: seeds 21-30 match the reference forward and backward", "[random]") { check_seeds(21, 10); }

// AVX2's vectors hold 8 floats where this host's may hold 16: other tails and register tiles.
TEST_CASE("random networks: seeds 31-36 match the reference on x86-64 AVX2", "[random]") {
  if (!resolve_target("x86-64-linux-avx2").runs_here) {
    WARN("this machine cannot run AVX2 code");
    return;
  }
  check_seeds(31, 6, "x86-64-linux-avx2");
}

// NEON's vectors hold 4 floats, not 8 or 16: other tails. Forward and one training step's
// gradients of random networks, the ARM package under qemu-aarch64 against the host package.
TEST_CASE("random networks: under qemu-aarch64 the ARM package gives the host's outputs and gradients", "[random][arm]") {
  for (uint32_t seed : {2u, 6u, 23u}) {
    std::string yaml = test::random_model_yaml(seed);
    INFO("random network of seed " << seed << ":\n" << yaml);
    test::check_arm_matches_host(test::build_model_text(yaml, "random.yaml", "host"),
                                 test::build_model_text(yaml, "random.yaml", "arm-64-linux"), 5, true);
  }
}

TEST_CASE("random networks: every network the fuzzer caught, reduced, matches the reference", "[random]") {
  std::vector<std::filesystem::path> models;
  for (const auto& entry : std::filesystem::directory_iterator(test::source_path("tests/models")))
    if (entry.path().filename().string().rfind("regress_", 0) == 0) models.push_back(entry.path());
  std::sort(models.begin(), models.end());
  REQUIRE(!models.empty());
  for (const auto& path : models) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    // "(check: seed S, gradient batch B)" in a model's comment repeats the parameters it failed with.
    uint32_t seed = 42;
    test::NetCheckOptions options;
    std::smatch match;
    std::string yaml = text.str();
    if (std::regex_search(yaml, match, std::regex(R"(\(check: seed (\d+), gradient batch (\d+)\))"))) {
      seed = uint32_t(std::stoul(match[1]));
      options.gradient_batch = std::stoi(match[2]);
    }
    test::NetCheckResult result = test::check_net(yaml, path.string(), seed, options);
    INFO(path.filename().string() << ": " << result.stage << ": " << result.message);
    CHECK(result.ok());
  }
}

// The schedule families of #11 in training, at the batches a package serves (1, 7 and 32: fewer
// and more examples than the 8 fixed batch chunks of the batchnorm sums and the 4 of the weight
// gradients): one training step's loss and every gradient against the double-precision
// reference. winograd.yaml: Winograd forward and input gradients (dilated too), 'same' padding
// copied per task, a strided input gradient; grad_bn.yaml: batchnorm's chunked statistics and
// gradient sums; grad_conv.yaml: strided convolutions with same padding (col2im at strides);
// ragged_channels.yaml: 20, 37 and 22 channels (register tiles and sums over channels padded to
// whole vectors); grad_taps.yaml: weight gradients of few input channels with more taps than
// registers; ragged_pool.yaml: backward at the window maxima over 20 and 37 input channels;
// depthwise_rows.yaml: depthwise tasks of several rows, a strided input gradient by phases;
// winograd_residual.yaml: Winograd's backward reading dY in place, it and col2im adding their
// input gradient to the previous one as they store it; big_taps.yaml: input gradients of 'same'
// convolutions as the padded gradient convolved, weight gradients over blocks of rows;
// winograd5.yaml: 5x5 input and weight gradients by Winograd F(2x2, 5x5) and F(5x5, 2x2).
TEST_CASE("random networks: Winograd, strided and batchnorm training gradients match the reference at batches 1, 7 and 32", "[random]") {
  for (const char* model : {"tests/models/winograd.yaml", "tests/models/grad_bn.yaml", "tests/models/grad_conv.yaml",
                            "tests/models/ragged_channels.yaml", "tests/models/grad_taps.yaml",
                            "tests/models/ragged_pool.yaml", "tests/models/depthwise_rows.yaml",
                            "tests/models/winograd_residual.yaml", "tests/models/big_taps.yaml",
                            "tests/models/winograd5.yaml"}) {
    std::ifstream in(test::source_path(model));
    std::stringstream text;
    text << in.rdbuf();
    for (int batch : {1, 7, 32}) {
      test::NetCheckOptions options;
      options.forward_batches = {batch};
      options.gradient_batch = batch;
      test::NetCheckResult result = test::check_net(text.str(), model, 31 + uint32_t(batch), options);
      INFO(model << " at batch " << batch << ": " << result.stage << ": " << result.message);
      CHECK(result.ok());
    }
  }
}

// Test builds put every buffer of the plan between guard zones checked after each kernel
// (BuildOptions::guard_zones): a write outside a buffer is reported with the kernel that ran.
TEST_CASE("guard zones: a write past the end of a buffer fails the next kernel, named", "[random]") {
  test::BuiltModel built = test::build_model("tests/models/regress_batchnorm_100.yaml");
  rt::Network network(built.package);
  test::randomize_params(network, 5);
  std::vector<float> input = test::random_input(2 * built.package->input_elements(), 6);
  network.forward(input, 2);  // clean
  float* block = network.params();
  const rt::TensorInfo& first = built.package->params().front();  // 100 floats, then padding to 128
  REQUIRE(built.package->params()[1].offset == 128);
  block[first.offset + first.elements() + 5] = 1.0f;  // between two tensors: still inside the block
  CHECK_NOTHROW(network.forward(input, 2));
  block[first.offset + first.elements() + 5] = 0.0f;
  int64_t end = built.package->param_floats();
  block[end + 3] = 123.0f;  // past the block's end, as an out-of-bounds kernel would write
  CHECK_THROWS_WITH(network.forward(input, 2), Catch::Contains("wrote") && Catch::Contains("past the end of a buffer"));
}
