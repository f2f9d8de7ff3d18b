// Random networks over the whole model language (random_nets.h): every kernel against the
// double-precision reference at batches 1 and 7, and one training step's gradients against
// finite differences of the reference. Fixed seeds here; scripts/fuzz-nets.sh draws new ones
// for as long as asked. Every network it ever caught is kept, reduced, in tests/models/regress_*.yaml.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "random_nets.h"
#include "test_support.h"

using namespace cnnc;

namespace {

void check_seeds(uint32_t first, uint32_t count) {
  for (uint32_t seed = first; seed < first + count; ++seed) {
    std::string yaml = test::random_model_yaml(seed);
    test::NetCheckResult result = test::check_net(yaml, "random.yaml", seed);
    INFO("random network of seed " << seed << " (build/tests/fuzz_nets --print " << seed << "):\n" << yaml);
    INFO(result.stage << ": " << result.message);
    CHECK(result.ok());
  }
}

}  // namespace

TEST_CASE("random networks: the generator draws every op and attribute of the language", "[random]") {
  std::string all;
  for (uint32_t seed = 1; seed <= 200; ++seed) all += test::random_model_yaml(seed);
  for (const char* text : {"conv2d:", "maxpool2d:", "avgpool2d:", "dense:", "flatten:", "dropout:", "batchnorm:", "add:",
                           "concat:", "relu:", "sigmoid:", "tanh:", "softmax:", "stride: [", "kernel: [", "size: [",
                           "padding: same", "padding: valid", "use_bias: false", "activation: relu",
                           "activation: sigmoid", "activation: tanh", "activation: softmax", "axis: 1", "axis: 2",
                           "epsilon:", "rate:", "input: {shape: [", "filters: 7", "filters: 33", "filters: 80"})
    CHECK(all.find(text) != std::string::npos);
  CHECK(test::random_model_yaml(5) == test::random_model_yaml(5));
  CHECK(test::random_model_yaml(5) != test::random_model_yaml(6));
}

TEST_CASE("random networks: seeds 1-10 match the reference forward and backward", "[random]") { check_seeds(1, 10); }
TEST_CASE("random networks: seeds 11-20 match the reference forward and backward", "[random]") { check_seeds(11, 10); }
TEST_CASE("random networks: seeds 21-30 match the reference forward and backward", "[random]") { check_seeds(21, 10); }

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
    test::NetCheckResult result = test::check_net(text.str(), path.string(), 42);
    INFO(path.filename().string() << ": " << result.stage << ": " << result.message);
    CHECK(result.ok());
  }
}
