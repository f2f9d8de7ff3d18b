// Every compiled kernel against the plain C++ reference (tests/reference), at batch 1, 7 and 32.
// Each kernel is fed the package's own output of the kernels before it, so an error is pinned
// on the kernel that makes it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

#include "codegen/codegen.h"
#include "codegen/plan.h"
#include "reference/reference_ops.h"
#include "test_support.h"

using namespace cnnc;

namespace {

constexpr double kTolerance = 1e-4;

void check_every_kernel(const test::BuiltModel& built, int batch, uint32_t seed) {
  rt::Network network(built.package);
  test::randomize_params(network, seed);
  std::vector<float> input = test::random_input(batch * built.package->input_elements(), seed + 1);
  std::vector<float> output = network.forward(input, batch);

  const Graph& graph = built.graph;
  int kernels_checked = 0;
  for (const Node& node : graph.nodes) {
    if (node.is_view || !test::written_at_inference(graph, node)) continue;
    std::vector<double> expected = test::reference_output(built, network, node, batch);
    const float* actual = network.node_output(node.id);
    REQUIRE(int64_t(expected.size()) == batch * shape_elements(node.shape));
    double worst = 0;
    size_t worst_at = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      double error = std::fabs(expected[i] - double(actual[i]));
      if (!(error <= worst)) {  // also catches NaN
        worst = std::isnan(error) ? INFINITY : error;
        worst_at = i;
      }
    }
    INFO("model " << graph.name << ", node '" << node.name << "' (" << node.op_name() << "), batch " << batch
                  << ": worst error " << worst << " at " << worst_at << " (expected " << expected[worst_at]
                  << ", got " << actual[worst_at] << ")");
    CHECK(worst <= kTolerance);
    ++kernels_checked;
  }
  CHECK(kernels_checked > 0);
  // The model's output is the output node's buffer.
  const float* last = network.node_output(graph.output);
  for (size_t i = 0; i < output.size(); ++i) REQUIRE(output[i] == last[i]);
}

// The id of the node called `name` (the test fails without one).
int node_id(const Graph& graph, const std::string& name) {
  for (const Node& node : graph.nodes)
    if (node.name == name) return node.id;
  FAIL("no node " << name);
  return -1;
}

// The kernels' schedule descriptions in the package's manifest, by function (an inference
// kernel that training reuses keeps its inference entry).
std::map<std::string, std::string> manifest_schedules(const test::BuiltModel& built) {
  std::ifstream in(built.package->dir() + "/manifest.json");
  nlohmann::json manifest = nlohmann::json::parse(in);
  std::map<std::string, std::string> schedules;
  for (const char* list : {"kernels", "training_kernels"})
    for (const nlohmann::json& kernel : manifest[list])
      schedules.emplace(kernel["function"].get<std::string>(), kernel["schedule"]["description"].get<std::string>());
  return schedules;
}

// Floats per vector of the host target: 16 with AVX-512, 8 with AVX2 (x86), 4 with NEON.
int host_vector_floats() {
  TargetInfo target = resolve_target("host");
  return target.arch == "arm-64" ? 4 : target.halide.find("avx512") != std::string::npos ? 16 : 8;
}

void check_model(const std::string& path) {
  test::BuiltModel built = test::build_model(path);
  for (int batch : {1, 7, 32}) check_every_kernel(built, batch, 1234 + uint32_t(batch));
  // Shrinking the batch again reuses the activations allocated for 32.
  check_every_kernel(built, 3, 99);
}

// Each output of `other` within 1e-4 of `direct`'s, relative to that output's largest value
// (which must not be 0: a kernel that wrote nothing would pass otherwise).
void check_same_outputs(const KernelTiming& direct, const KernelTiming& other) {
  REQUIRE(direct.outputs.size() == other.outputs.size());
  for (size_t o = 0; o < direct.outputs.size(); ++o) {
    REQUIRE(direct.outputs[o].size() == other.outputs[o].size());
    if (direct.outputs[o].empty()) continue;  // not float: a pooling's indices (not collected; ties may differ)
    double largest = 0, worst = 0;
    for (float value : direct.outputs[o]) largest = std::max(largest, double(std::fabs(value)));
    for (size_t i = 0; i < direct.outputs[o].size(); ++i) {
      double error = std::fabs(double(direct.outputs[o][i]) - double(other.outputs[o][i]));
      if (!(error <= worst)) worst = std::isnan(error) ? INFINITY : error;
    }
    INFO("output " << o << ": worst difference " << worst << ", largest value " << largest);
    CHECK(largest > 0);
    CHECK(worst <= 1e-4 * largest);
  }
}

// `kernel` timed with the algorithm knob `algorithm` ("": as planned) at batch 8, then 1 and 7
// (time_kernel's outputs); the test stops where it fails.
KernelTiming timed_with(const Graph& graph, KernelInfo kernel, const std::string& algorithm) {
  if (!algorithm.empty()) kernel.knobs.algorithm = algorithm;
  KernelTiming timing = time_kernel(graph, kernel, resolve_target("host"), 8, 1, {1, 7});
  INFO(kernel.function << " " << kernel.knobs.str() << ": " << timing.schedule << timing.error);
  REQUIRE(timing.ok);
  return timing;
}

}  // namespace

TEST_CASE("kernels: convolutions with fused bias, activation and pooling match the reference", "[kernels]") {
  check_model("tests/models/ops_conv.yaml");
}

TEST_CASE("kernels: dense layers, flatten and dropout match the reference", "[kernels]") {
  check_model("tests/models/ops_dense.yaml");
}

TEST_CASE("kernels: add, concat, batchnorm, pooling and softmax layers match the reference", "[kernels]") {
  check_model("tests/models/ops_dag.yaml");
}

TEST_CASE("kernels: the reference network matches the reference", "[kernels]") { check_model("models/mnist_cnn.yaml"); }

TEST_CASE("kernels: LeNet-5 matches the reference", "[kernels]") { check_model("models/lenet5.yaml"); }

TEST_CASE("kernels: the residual network matches the reference", "[kernels]") {
  check_model("models/resnet_small.yaml");
}

TEST_CASE("kernels: the zoo's resnet20, mobilenet and dilated_swish match the reference", "[kernels]") {
  for (const char* model : {"models/resnet20.yaml", "models/mobilenet.yaml", "models/dilated_swish.yaml"}) {
    INFO(model);
    check_model(model);
  }
}

TEST_CASE("kernels: a residual add folded into the kernel before it matches the reference", "[kernels]") {
  test::BuiltModel built = test::build_model("tests/models/ops_residual.yaml");
  const Graph& graph = built.graph;
  auto id = [&](const std::string& name) { return node_id(graph, name); };
  std::vector<int> folds = inference_folds(graph);
  // Chains: conv -> batchnorm -> add; the projection (after the block's second convolution)
  // -> add; conv -> batchnorm -> add of three; depthwise -> add; dense -> batchnorm -> add.
  CHECK(folds[size_t(id("a2"))] == id("a2_bn"));
  CHECK(folds[size_t(id("a2_bn"))] == id("a_add"));
  CHECK(folds[size_t(id("b2"))] == id("b2_bn"));
  CHECK(folds[size_t(id("b2_bn"))] == -1);  // its add's other input comes after it
  CHECK(folds[size_t(id("b_proj"))] == id("b_add"));
  CHECK(folds[size_t(id("c1_bn"))] == id("c_add"));
  CHECK(folds[size_t(id("d"))] == id("d_add"));
  CHECK(folds[size_t(id("g_bn"))] == id("g_add"));
  // Not: e_bn feeds two layers (e still folds its batchnorm); f has a relu of its own. (And the
  // batchnorms with a relu, a1 and b1, fold as before: 12 folds.)
  CHECK(folds[size_t(id("e"))] == id("e_bn"));
  CHECK(folds[size_t(id("e_bn"))] == -1);
  CHECK(folds[size_t(id("f"))] == -1);
  CHECK(std::count_if(folds.begin(), folds.end(), [](int into) { return into >= 0; }) == 12);
  int residual_kernels = 0;
  for (const KernelInfo& kernel : plan_kernels(graph)) {
    CHECK(kernel.node != id("a_add"));
    CHECK(kernel.node != id("c_add"));
    if (kernel.node == id("c1")) {  // reads c0 and b_add after its own input, writes c_add
      CHECK(kernel.inputs == std::vector<int>{id("b_add"), id("c0"), id("b_add")});
      CHECK(kernel.fold == id("c1_bn"));
      CHECK(kernel.written_node() == id("c_add"));
    }
    if (kernel.node == id("b_proj")) CHECK(kernel.inputs == std::vector<int>{id("a_add"), id("b2_bn")});
    residual_kernels += kernel.residual >= 0;
  }
  CHECK(residual_kernels == 5);
  // Training keeps the adds as kernels of their own and the convolutions' forward unfolded.
  Plan plan = make_plan(graph, false);
  for (const KernelInfo& kernel : plan.training) {
    CHECK(kernel.residual < 0);
    if (kernel.node == id("b_proj") && kernel.kind == KernelKind::Forward) CHECK(!kernel.reuses_inference_kernel);
  }
  // Each written node against the reference (the folded ones computed by it), batches 1, 7, 32, 3.
  check_model("tests/models/ops_residual.yaml");
}

TEST_CASE("kernels: depthwise and separable convolutions in tasks of several rows match the reference", "[kernels]") {
  test::BuiltModel built = test::build_model("tests/models/depthwise_rows.yaml");
  // The inference kernels' schedules (the manifest) say what they do: tall's tasks of 6 rows,
  // sep's and valid's of 4; wide's windows are less work than a task's worth: images.
  std::map<std::string, std::string> schedules = manifest_schedules(built);
  CHECK_THAT(schedules["depthwise_rows_k1_tall"], Catch::Contains("tasks of 6 rows"));
  CHECK_THAT(schedules["depthwise_rows_k2_sep"], Catch::Contains("tasks of 4 output rows"));
  CHECK_THAT(schedules["depthwise_rows_k5_valid"], Catch::Contains("tasks of 4 output rows"));
  CHECK_THAT(schedules["depthwise_rows_k3_wide"], Catch::Contains("images as tasks"));
  // wide's input gradient (stride 2) by the stride's phases, each with its own taps (its
  // gradients against the reference: tests/test_random_nets.cpp).
  CHECK_THAT(schedules["depthwise_rows_b3_wide"], Catch::Contains("input gradient by the 4 phases of the stride"));
  check_model("tests/models/depthwise_rows.yaml");
}

TEST_CASE("kernels: backward at the window maxima over ragged input channels (whole vectors) matches the reference", "[kernels]") {
  test::BuiltModel built = test::build_model("tests/models/ragged_pool.yaml");
  std::map<std::string, std::string> schedules = manifest_schedules(built);
  int vector = host_vector_floats();
  for (auto [kernel, channels] : {std::pair{"ragged_pool_b2_p37", 20}, std::pair{"ragged_pool_b3_v21", 37}}) {
    INFO(kernel << ": " << schedules[kernel]);
    CHECK_THAT(schedules[kernel], Catch::Contains("window maxima only"));
    if (channels % vector != 0)
      CHECK_THAT(schedules[kernel], Catch::Contains("sums over " + std::to_string(channels) + " input channels padded to " +
                                                    std::to_string((channels + vector - 1) / vector * vector)));
  }
  check_model("tests/models/ragged_pool.yaml");
}

// Winograd's backward reads the output's gradient in place where its tiles and register tiles
// cover it exactly; it and the strided backward (col2im) add their input gradient to one another
// consumer wrote as they store it (the gradients themselves: "random networks: Winograd, strided
// and batchnorm training gradients match the reference at batches 1, 7 and 32").
TEST_CASE("kernels: backward kernels in place where tiles and vectors cover the tensors (whole vectors, even maps)",
          "[kernels]") {
  test::BuiltModel built = test::build_model("tests/models/winograd_residual.yaml");
  std::map<std::string, std::string> schedules = manifest_schedules(built);
  for (const char* kernel : {"winograd_residual_b2_b", "winograd_residual_b5_d"}) {
    INFO(kernel << ": " << schedules[kernel]);
    CHECK_THAT(schedules[kernel], Catch::Contains("the output's gradient read in place"));
    CHECK_THAT(schedules[kernel], Catch::Contains("added to the previous gradient as stored"));
  }
  CHECK_THAT(schedules["winograd_residual_b7_s"], Catch::Contains("then col2im, added to the previous gradient as stored"));
  // e's gradient passes its elu first: Winograd, not in place. The dilated conv's 4x4 blocks
  // cover 2.1 times its 6x5 output: direct by rule, its input gradient the padded gradient
  // convolved (with the knob, Winograd's blocks that do not cover 5 rows: "kernels: Winograd by
  // rule only where ...").
  CHECK_THAT(schedules["winograd_residual_b12_e"], Catch::Contains("input gradient: Winograd"));
  CHECK_THAT(schedules["winograd_residual_b12_e"], !Catch::Contains("read in place"));
  CHECK_THAT(schedules["winograd_residual_b10_dil"], Catch::Contains("input gradient: the padded gradient convolved"));
  check_model("tests/models/winograd_residual.yaml");
}

TEST_CASE("kernels: Winograd's shapes (tests/models/winograd.yaml) match the reference", "[kernels]") {
  check_model("tests/models/winograd.yaml");
}

TEST_CASE("kernels: Winograd F(2x2, 5x5)'s shapes (tests/models/winograd5.yaml) match the reference", "[kernels]") {
  check_model("tests/models/winograd5.yaml");
}

TEST_CASE("kernels: Winograd convolutions with a fused pooling match the reference", "[kernels]") {
  test::BuiltModel built = test::build_model("tests/models/winograd_pool.yaml");
  std::map<std::string, std::string> schedules = manifest_schedules(built);
  // Inference: the pooled convolutions by Winograd, b by F(4x4) (32 channels on 20x19); c
  // (dilated 2 on 22x21: its 4x4 blocks cover 1.25 times the output) direct by rule, and by
  // Winograd with the knob (below).
  for (const char* kernel : {"winograd_pool_k2_a", "winograd_pool_k4_b", "winograd_pool_k6_d"}) {
    INFO(kernel);
    CHECK_THAT(schedules[kernel], Catch::Contains("Winograd") && Catch::Contains("then the pooling"));
  }
  CHECK_THAT(schedules["winograd_pool_k5_c"], Catch::Contains("fused pooling") && !Catch::Contains("Winograd"));
  CHECK_THAT(schedules["winograd_pool_k4_b"], Catch::Contains("F(4x4, 3x3)"));
  // Training: Winograd where only the maxima's positions are kept (a, b), direct where the
  // activation is (c: overlapping windows, d: average pooling).
  CHECK_THAT(schedules["winograd_pool_t2_a"], Catch::Contains("then the pooling"));
  CHECK_THAT(schedules["winograd_pool_t4_b"], Catch::Contains("then the pooling"));
  CHECK_THAT(schedules["winograd_pool_t5_c"], !Catch::Contains("Winograd"));
  CHECK_THAT(schedules["winograd_pool_t6_d"], !Catch::Contains("Winograd"));
  // Backward behind the max poolings with indices (at_maxima): a's tile of 16 input channels x 9
  // taps and 22x21x16 image fit (the maxima alone); b's 20x19x32 image does not (Winograd).
  CHECK_THAT(schedules["winograd_pool_b2_a"], Catch::Contains("window maxima only"));
  CHECK_THAT(schedules["winograd_pool_b4_b"], Catch::Contains("input gradient: Winograd"));
  // Poolings folded into the inference kernel before them: after a swish node, after a folded
  // batchnorm (with its elu); by Winograd (e, f) and direct (g: 8 input channels).
  const Graph& graph = built.graph;
  auto id = [&](const std::string& name) { return node_id(graph, name); };
  std::vector<int> folds = inference_folds(graph);
  CHECK(folds[size_t(id("e"))] == id("e_swish"));
  CHECK(folds[size_t(id("e_swish"))] == id("e_pool"));
  CHECK(folds[size_t(id("f"))] == id("f_bn"));
  CHECK(folds[size_t(id("f_bn"))] == id("f_pool"));
  CHECK(folds[size_t(id("g_swish"))] == id("g_pool"));
  for (const KernelInfo& kernel : plan_kernels(graph))
    if (kernel.node == id("f")) CHECK(kernel.written_node() == id("f_pool"));
  CHECK_THAT(schedules["winograd_pool_k7_e_e_swish_e_pool"], Catch::Contains("Winograd") && Catch::Contains("then the pooling"));
  CHECK_THAT(schedules["winograd_pool_k10_f_f_bn_f_pool"], Catch::Contains("Winograd") && Catch::Contains("then the pooling"));
  CHECK_THAT(schedules["winograd_pool_k13_g_g_swish_g_pool"], Catch::Contains("fused pooling"));
  check_model("tests/models/winograd_pool.yaml");
  // c with the knob: Winograd's dilated blocks, then the overlapping pooling, compute what the
  // direct rule computes (batches 8, 1, 7).
  int checked = 0;
  for (KernelInfo kernel : plan_kernels(graph)) {
    if (kernel.function != "winograd_pool_k5_c") continue;
    KernelTiming rule = timed_with(graph, kernel, ""), winograd = timed_with(graph, kernel, "winograd");
    CHECK_THAT(winograd.schedule, Catch::Contains("Winograd") && Catch::Contains("then the pooling"));
    check_same_outputs(rule, winograd);
    ++checked;
  }
  CHECK(checked == 1);
}

TEST_CASE("kernels: a batchnorm folded into the convolution or dense before it matches the reference", "[kernels]") {
  test::BuiltModel built = test::build_model("tests/models/ops_fold.yaml");
  const Graph& graph = built.graph;
  auto id = [&](const std::string& name) { return node_id(graph, name); };
  std::vector<int> folds = inference_folds(graph);
  // Folded, with their fused activations: a + a_bn (+ relu), b + b_bn (+ relu6), c + c_bn
  // (+ leaky_relu), f + f_bn (+ tanh). Not: d (its own relu), e (two consumers), sum (an add).
  CHECK(folds[size_t(id("a"))] == id("a_bn"));
  CHECK(folds[size_t(id("b"))] == id("b_bn"));
  CHECK(folds[size_t(id("c"))] == id("c_bn"));
  CHECK(folds[size_t(id("f"))] == id("f_bn"));
  CHECK(folds[size_t(id("d"))] == -1);
  CHECK(folds[size_t(id("e"))] == -1);
  CHECK(folds[size_t(id("sum"))] == -1);
  // The activation nodes: gelu after g, and h's `activation: swish`, split off as h_swish.
  CHECK(folds[size_t(id("g"))] == id("g_gelu"));
  CHECK(folds[size_t(id("h"))] == id("h_swish"));
  CHECK(std::count_if(folds.begin(), folds.end(), [](int into) { return into >= 0; }) == 6);
  std::vector<KernelInfo> kernels = plan_kernels(graph);
  for (const KernelInfo& kernel : kernels) {
    CHECK(kernel.node != id("a_bn"));  // no kernel of its own at inference
    if (kernel.node == id("c")) {
      CHECK(kernel.fold == id("c_bn"));
      CHECK(kernel.fold_params == std::vector<std::string>{"gamma", "beta", "moving_mean", "moving_variance"});
    }
  }
  // Training keeps both kernels: the convolution's forward is a kernel of its own, not the folded one.
  Plan plan = make_plan(graph, false);
  bool own_forward = false;
  for (const KernelInfo& kernel : plan.training)
    if (kernel.node == id("a") && kernel.kind == KernelKind::Forward)
      own_forward = !kernel.reuses_inference_kernel && kernel.fold < 0 && kernel.function == "ops_fold_t1_a";
  CHECK(own_forward);
  // Random moving statistics (randomize_params draws variances in [0.5, 1.5]): the check
  // compares each folded kernel's output with the reference convolution then batchnorm.
  check_model("tests/models/ops_fold.yaml");
}

TEST_CASE("fusion: the reference network runs as 4 kernels, conv+bias+relu+pool fused", "[kernels]") {
  test::BuiltModel built = test::build_model("models/mnist_cnn.yaml");
  const Graph& graph = built.graph;
  std::vector<std::string> kernels;
  for (const Node& node : graph.nodes)
    if (node.id > 0 && !node.is_view) kernels.push_back(node.name);
  CHECK(kernels == std::vector<std::string>{"conv2d", "conv2d_1", "dense", "dense_1"});
  REQUIRE(graph.nodes[1].fused.size() == 2);
  CHECK(graph.nodes[1].fused[0].def->name == "relu");
  CHECK(graph.nodes[1].fused[1].def->name == "maxpool2d");
  CHECK(graph.nodes[1].shape == Shape{13, 13, 32});
  CHECK(graph.nodes[1].unfused_shape == Shape{26, 26, 32});
}

// The plan runs Halide's parallel loops on its own spinning thread pool. Its answers must not
// depend on the thread count, and two application threads using models of one package at once
// (one of them then runs its loops serially) must both get the answers of a lone caller.
TEST_CASE("thread pool: any thread count, and two callers at once, give the same outputs", "[kernels]") {
  test::BuiltModel built = test::build_model("models/mnist_cnn.yaml");
  const int batch = 32;
  std::vector<float> input = test::random_input(batch * built.package->input_elements(), 7);
  rt::Network first(built.package), second(built.package);
  test::randomize_params(first, 11);
  test::randomize_params(second, 12);
  built.package->set_threads(1);
  std::vector<float> expected_first = first.forward(input, batch), expected_second = second.forward(input, batch);
  for (int threads : {2, 3, 0}) {
    built.package->set_threads(threads);
    CHECK(first.forward(input, batch) == expected_first);
  }
  built.package->set_threads(2);
  std::vector<float> got_first, got_second;
  std::thread other([&] {
    for (int i = 0; i < 50; ++i) got_second = second.forward(input, batch);
  });
  for (int i = 0; i < 50; ++i) got_first = first.forward(input, batch);
  other.join();
  CHECK(got_first == expected_first);
  CHECK(got_second == expected_second);
  CHECK(expected_first != expected_second);
}

// Each thread keeps its tasks' small blocks for the next task (plan_runtime.c); a thread's blocks
// are freed when it exits, and every thread's when the package is unloaded, after which a thread's
// exit must not call into the unloaded code. Winograd with a fused pooling allocates per-task tiles.
TEST_CASE("thread pool: threads that exit, and a package unloaded under a live thread, keep the outputs right and do not crash", "[kernels]") {
  test::BuiltModel built = test::build_model("tests/models/winograd_pool.yaml");
  const int batch = 7;
  std::vector<float> input = test::random_input(batch * built.package->input_elements(), 5);
  auto forward = [&](const std::shared_ptr<rt::Package>& package) {
    rt::Network network(package);
    test::randomize_params(network, 9);
    std::vector<float> output;
    for (int i = 0; i < 3; ++i) output = network.forward(input, batch);  // blocks reused from the 2nd on
    return output;
  };
  std::vector<float> expected = forward(built.package);
  for (int i = 0; i < 3; ++i) {
    std::vector<float> got;
    std::thread other([&] { got = forward(built.package); });
    other.join();
    CHECK(got == expected);
  }
  std::mutex lock;
  std::condition_variable changed;
  bool ran = false, unloaded = false;
  std::vector<float> got;
  std::thread other([&, package = built.package]() mutable {
    got = forward(package);
    package.reset();
    std::unique_lock<std::mutex> hold(lock);
    ran = true;
    changed.notify_all();
    changed.wait(hold, [&] { return unloaded; });
  });  // exits after the package is gone
  {
    std::unique_lock<std::mutex> hold(lock);
    changed.wait(hold, [&] { return ran; });
    built.package.reset();  // the last reference: dlclose
    unloaded = true;
    changed.notify_all();
  }
  other.join();
  CHECK(got == expected);
}

// Kernels flush denormals to zero (docs/c-api.md), but the caller's floating-point mode is its own.
TEST_CASE("thread pool: the caller's floating-point mode is the same after a forward pass", "[kernels]") {
#if defined(__x86_64__)
  test::BuiltModel built = test::build_model("models/mnist_cnn.yaml");
  rt::Network network(built.package);
  test::randomize_params(network, 3);
  std::vector<float> input = test::random_input(4 * built.package->input_elements(), 4);
  unsigned before = _mm_getcsr();
  REQUIRE((before & 0x8040u) == 0);  // (FTZ and DAZ are off by default)
  network.forward(input, 4);
  CHECK(_mm_getcsr() == before);
  // A denormal still survives arithmetic here.
  volatile float tiny = 1e-39f;
  CHECK(tiny * 0.5f > 0.0f);
#else
  SUCCEED("x86-64 only");
#endif
}


// Register tiles of channels (channel_block): by default the count of whole vectors that computes
// the fewest channels (35 channels: tiles of one vector, computing 48, not of two, computing 64);
// a tuned channel_vectors knob as asked, so that cnnc tune measures the tiles the rule passes
// over. Both compute the same outputs, at batch 1 and 7.
TEST_CASE("kernels: register tiles of ragged channel counts follow the rule by default and the knob when tuned", "[kernels]") {
  Graph graph = compile_graph(parse_model_text(R"(name: ragged_tiles
input: {shape: [9, 8, 5]}
layers:
  - conv2d: {name: c, filters: 35, kernel: 5, padding: same, activation: relu}
  - flatten: {}
  - dense: {units: 3, activation: softmax}
)", "ragged_tiles.yaml"));
  TargetInfo target = resolve_target("host");
  int vector = host_vector_floats();
  KernelInfo kernel = plan_kernels(graph).front();
  REQUIRE(graph.nodes[kernel.node].name == "c");
  KernelTiming rule = time_kernel(graph, kernel, target, 7, 1, {1});
  REQUIRE(rule.ok);
  kernel.knobs.channel_vectors = 2;
  kernel.knobs.pixel_tile = 4;
  KernelTiming tuned = time_kernel(graph, kernel, target, 7, 1, {1});
  INFO(rule.schedule << " / " << tuned.schedule);
  REQUIRE(tuned.ok);
  // 35 channels: one vector's tiles compute the fewest (16 floats: 48 against 64; 8: 40 against
  // 48; 4: 36 against 40).
  CHECK(rule.schedule.find("register tile " + std::to_string(vector) + " channels") != std::string::npos);
  CHECK(tuned.schedule.find("register tile " + std::to_string(2 * vector) + " channels") != std::string::npos);
  check_same_outputs(rule, tuned);
}

// The register-tile knobs cnnc tune tries on a Winograd backward kernel (1 to 3 vectors of
// output channels, tiles of 2 to 16), where 64 channels split unevenly into blocks of 48, 48 into
// blocks of 32 and a 7-wide map into tiles: each within 1e-4 of the direct algorithm's gradients,
// at batch 8, 1, 7.
TEST_CASE("kernels: Winograd gradients with every register-tile knob match the direct algorithm", "[kernels]") {
  Graph graph = compile_graph(parse_model_file(test::source_path("tests/models/winograd_blocks.yaml")));
  TargetInfo target = resolve_target("host");
  int64_t floats = 0;
  for (const Node& node : graph.nodes) floats += node.param_count();
  int checked = 0;
  for (KernelInfo kernel : plan_training_kernels(graph, floats)) {
    if (kernel.kind != KernelKind::Backward || graph.nodes[kernel.node].op_name() != "conv2d") continue;
    kernel.knobs.algorithm = "direct";
    KernelTiming direct = time_kernel(graph, kernel, target, 8, 1, {1, 7});
    REQUIRE(direct.ok);
    for (int vectors : {1, 2, 3})
      for (int tile : {2, 5, 16}) {
        kernel.knobs = ScheduleKnobs{};
        kernel.knobs.channel_vectors = vectors;
        kernel.knobs.pixel_tile = tile;
        KernelTiming winograd = time_kernel(graph, kernel, target, 8, 1, {1, 7});
        INFO(kernel.function << " " << kernel.knobs.str() << ": " << winograd.error);
        REQUIRE(winograd.ok);
        CHECK(winograd.schedule.find("weight gradient: Winograd") != std::string::npos);
        check_same_outputs(direct, winograd);
        ++checked;
      }
  }
  CHECK(checked == 18);  // two convolutions x 9 knob settings
}

// Winograd F(2x2, 3x3) and F(4x4, 3x3), forward and input gradient, and F(3x3, 2x2), the weight
// gradient, against the direct algorithm on the same
// kernel and the same seeded inputs, at batch 32 and then 1 and 7 (time_kernel's outputs), on
// shapes the rule would and would not give it (1 to 33 channels, odd sizes, 'valid' and 'same',
// no bias, fused activations, a folded batchnorm). Each output value within 1e-4 of the
// direct one, relative to the largest value of that output; and the schedule says which ran.
TEST_CASE("kernels: Winograd computes what the direct algorithm computes: forward, input and weight gradients", "[kernels]") {
  Graph graph = compile_graph(parse_model_file(test::source_path("tests/models/winograd.yaml")));
  TargetInfo target = resolve_target("host");
  int forward = 0, backward = 0;
  for (KernelInfo kernel : test::all_kernels(graph)) {
    const Node& node = graph.nodes[kernel.node];
    if (node.op_name() != "conv2d" || node.attrs.get_pair("kernel").first != 3 || node.attrs.get_pair("stride").first != 1)
      continue;
    kernel.knobs.algorithm = "direct";
    KernelTiming direct = time_kernel(graph, kernel, target, 32, 1, {1, 7});
    REQUIRE(direct.ok);
    CHECK(direct.schedule.find("Winograd") == std::string::npos);
    // F(2x2, 3x3) and F(4x4, 3x3) (forward and input gradient; the weight gradient is F(3x3, 2x2) in both).
    for (const std::string algorithm : {"winograd", "winograd4"}) {
      kernel.knobs.algorithm = algorithm;
      KernelTiming winograd = time_kernel(graph, kernel, target, 32, 1, {1, 7});
      INFO(kernel.function << " " << algorithm << ": " << direct.error << winograd.error);
      REQUIRE(winograd.ok);
      CHECK(winograd.schedule.find("Winograd") != std::string::npos);
      bool input_side = kernel.kind != KernelKind::Backward || kernel.input_grad.at(0);
      CHECK((winograd.schedule.find("F(4x4, 3x3)") != std::string::npos) == (algorithm == "winograd4" && input_side));
      check_same_outputs(direct, winograd);
    }
    (kernel.kind == KernelKind::Backward ? backward : forward) += 1;
  }
  // c20, c33, c16 (with the batchnorm folded), c17, one, c1, d2 and d23, and the training
  // forward of c16, c17 and d23 (c16's inference kernel folds the batchnorm; a fused swish keeps
  // its input); the backward of c33, c16, c17, c1, d2 and d23, and of c20 and one (they read the
  // network's input: a weight gradient only).
  CHECK(forward == 11);
  CHECK(backward == 8);
}

// 'same' convolutions at stride 1 take their input gradient as the padded output gradient
// convolved with the flipped kernel, and kernels of 16 taps or more their weight gradient over
// blocks of rows (ops/conv2d.cpp, padded_input_gradient); the knob algorithm=columns (a tuning
// candidate) takes the input gradient by GEMM and col2im: the same gradients within 1e-4, at
// batches 8, 1 and 7. The gradients themselves: big_taps.yaml in "gradients: ..." and "random
// networks: ... at batches 1, 7 and 32".
TEST_CASE("kernels: the padded input gradient and row-blocked weight gradients compute what col2im and the column sums compute",
          "[kernels]") {
  Graph graph = compile_graph(parse_model_file(test::source_path("tests/models/big_taps.yaml")));
  int64_t floats = 0;
  for (const Node& node : graph.nodes) floats += node.param_count();
  std::map<std::string, std::string> expected_weights = {
      {"big_taps_b2_b", "summed over 6 rows at a time"}, {"big_taps_b3_c", "register tile"},
      {"big_taps_b4_d", "summed over 6 rows at a time"}, {"big_taps_b6_e", "summed over 6 rows at a time"}};
  int checked = 0;
  for (KernelInfo kernel : plan_training_kernels(graph, floats)) {
    if (kernel.kind != KernelKind::Backward || !expected_weights.count(kernel.function)) continue;
    KernelTiming rule = timed_with(graph, kernel, "");
    INFO(kernel.function << ": " << rule.schedule);
    CHECK(rule.schedule.find(expected_weights[kernel.function]) != std::string::npos);
    bool strided = kernel.function == "big_taps_b6_e";
    CHECK(rule.schedule.find(strided ? "then col2im" : "input gradient: the padded gradient convolved") != std::string::npos);
    if (strided) continue;
    KernelTiming columns = timed_with(graph, kernel, "columns");
    INFO(columns.schedule);
    CHECK(columns.schedule.find("then col2im") != std::string::npos);
    check_same_outputs(rule, columns);
    ++checked;
  }
  CHECK(checked == 3);
}

// The rule gives Winograd only where its tiles cover little more than the output
// (winograd_work_ratio: 0.6 of the direct algorithm's products, 0.5 with dilation): forward and
// backward kernels of tests/models/winograd_cover.yaml by rule, then with the algorithm the rule
// did not pick (both tuning candidates), the same outputs within 1e-4 at batches 8, 1 and 7.
TEST_CASE("kernels: Winograd by rule only where its tiles cover little more than the output", "[kernels]") {
  Graph graph = compile_graph(parse_model_file(test::source_path("tests/models/winograd_cover.yaml")));
  int64_t floats = 0;
  for (const Node& node : graph.nodes) floats += node.param_count();
  std::vector<KernelInfo> kernels = plan_kernels(graph);
  for (const KernelInfo& kernel : plan_training_kernels(graph, floats))
    if (kernel.kind == KernelKind::Backward) kernels.push_back(kernel);
  int checked = 0;
  for (KernelInfo kernel : kernels) {
    const std::string& name = graph.nodes[kernel.node].name;
    if (graph.nodes[kernel.node].op_name() != "conv2d") continue;
    bool winograd = name[0] == 'w';
    KernelTiming rule = timed_with(graph, kernel, ""), other = timed_with(graph, kernel, winograd ? "direct" : "winograd");
    INFO(kernel.function << ": " << rule.schedule << " / " << other.schedule);
    CHECK((rule.schedule.find("Winograd") != std::string::npos) == winograd);
    CHECK((other.schedule.find("Winograd") != std::string::npos) == !winograd);
    check_same_outputs(rule, other);
    ++checked;
  }
  CHECK(checked == 12);  // six convolutions, forward and backward
}

// Winograd F(2x2, 5x5) and F(5x5, 2x2) against the direct algorithm on the same kernel and the
// same seeded inputs, at batch 8 and then 1 and 7: forward kernels (with a fused pooling, 'valid',
// dilation 2, 5 input channels), training forward kernels, and backward kernels (the input
// gradient by F(2x2, 5x5), the weight gradient by F(5x5, 2x2); a's backward, the first layer's,
// only the weight gradient, over 5 input channels; e's behind the pooling's maxima). The schedule
// says which ran.
TEST_CASE("kernels: Winograd F(2x2, 5x5) and F(5x5, 2x2) compute what the direct algorithm computes: forward and both "
          "gradients",
          "[kernels]") {
  Graph graph = compile_graph(parse_model_file(test::source_path("tests/models/winograd5.yaml")));
  int checked = 0;
  for (KernelInfo kernel : test::all_kernels(graph)) {
    const Node& node = graph.nodes[kernel.node];
    if (node.op_name() != "conv2d") continue;
    KernelTiming direct = timed_with(graph, kernel, "direct"), winograd = timed_with(graph, kernel, "winograd");
    INFO(kernel.function << ": " << direct.schedule << " / " << winograd.schedule);
    CHECK(direct.schedule.find("Winograd") == std::string::npos);
    if (kernel.kind == KernelKind::Backward) {
      CHECK(winograd.schedule.find("weight gradient: Winograd F(5x5, 2x2)") != std::string::npos);
      CHECK((winograd.schedule.find("input gradient: Winograd F(2x2, 5x5)") != std::string::npos) ==
            kernel.input_grad.at(0));
    } else {
      CHECK(winograd.schedule.find("Winograd F(2x2, 5x5)") != std::string::npos);
    }
    check_same_outputs(direct, winograd);
    ++checked;
  }
  // Forward a, b, c, d, e; training forward c and e; backward a, b, c, d and e.
  CHECK(checked == 12);
}
