// An op added in the test suite needs only its own files and its registration: the toy op
// channel_scale compiles, infers, trains and matches its
// reference and finite differences like a built-in op. Its own test program, so that the op walk
// (test_op_registry.cpp) sees the language as shipped.
#include <catch2/catch.hpp>

#include "codegen/codegen.h"
#include "random_nets.h"
#include "test_support.h"
#include "toy_op/channel_scale.h"

using namespace cnnc;

namespace {

const char* kModel = R"(name: toy
input: {shape: [6, 5, 3]}
layers:
  - conv2d: {filters: 20, kernel: 3, padding: same}
  - channel_scale: {offset: 0.25}
  - tanh: {}
  - conv2d: {filters: 20, kernel: 2, padding: same, activation: relu, inputs: [conv2d]}
  - add: {inputs: [tanh, conv2d_1]}
  - channel_scale: {}
  - flatten: {}
  - dense: {units: 4, activation: softmax}
)";

}  // namespace

TEST_CASE("toy op: registered from the test suite, it compiles, trains and matches its reference", "[toy]") {
  toy::register_channel_scale();
  CHECK(op_registry_problems().empty());
  const OpDef* op = find_op("channel_scale");
  REQUIRE(op);

  Graph graph = compile_graph(parse_model_text(kModel, "toy.yaml"));
  int scales = 0;
  for (const Node& node : graph.nodes) {
    if (node.def != op) continue;
    ++scales;
    REQUIRE(node.params.size() == 1);
    CHECK(node.params[0].initializer == Initializer::Ones);
  }
  CHECK(scales == 2);

  for (uint32_t seed : {1u, 2u}) {
    test::NetCheckOptions options;
    options.gradient_batch = seed == 1 ? 3 : 1;
    test::NetCheckResult result = test::check_net(kModel, "toy.yaml", seed, options);
    INFO("seed " << seed << ", " << result.stage << ": " << result.message);
    CHECK(result.ok());
    CHECK(result.kernels > 0);
  }
}

TEST_CASE("toy op: its attributes are checked like a built-in op's", "[toy]") {
  toy::register_channel_scale();
  std::string bad = std::string(kModel);
  bad.replace(bad.find("offset: 0.25"), 12, "offset: 1000");
  try {
    parse_model_text(bad, "toy.yaml");
    FAIL("an out-of-range offset was accepted");
  } catch (const UserError& error) {
    CHECK(std::string(error.formatted()).find("toy.yaml:5") != std::string::npos);
    CHECK(std::string(error.formatted()).find("offset") != std::string::npos);
  }
}
