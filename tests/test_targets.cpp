// Packages for every target: the cache, the manifest, ARM64 under qemu against the host's
// answer, CUDA compiled (and run against the host where a GPU is present).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "test_support.h"

using namespace cnnc;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("cnnc-test-" + name + "-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void write_floats(const std::string& path, const float* data, size_t count) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(data), std::streamsize(count * sizeof(float)));
}

std::vector<float> read_floats(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::vector<float> values(static_cast<size_t>(in.tellg()) / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(values.data()), std::streamsize(values.size() * sizeof(float)));
  return values;
}

int run(const std::string& command) {
  int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

// Runs the ARM package under qemu-aarch64 and compares every node's output, and with
// `gradients` one training step's parameter gradients, with the host package's, on the same
// parameters, input and labels.
namespace cnnc::test {
void check_arm_matches_host(const test::BuiltModel& host, const test::BuiltModel& arm, int batch, bool gradients) {
  std::string dir = temp_dir("arm-" + host.graph.name);

  rt::Network network(host.package);
  test::randomize_params(network, 7);
  std::vector<float> input = test::random_input(batch * host.package->input_elements(), 8);
  network.forward(input, batch);
  write_floats(dir + "/params.bin", network.params(), size_t(host.package->param_floats()));
  write_floats(dir + "/input.bin", input.data(), input.size());
  std::vector<int32_t> labels;
  for (int i = 0; i < batch; ++i) labels.push_back(int32_t((i * 7 + 3) % host.package->output_elements()));
  write_floats(dir + "/labels.bin", reinterpret_cast<const float*>(labels.data()), labels.size());

  std::string name = host.graph.name;
  std::string compile = "aarch64-linux-gnu-gcc -O1 -static -DMODEL=" + name + " '-DMODEL_HEADER=\"" + name + ".h\"' -I" +
                        arm.result.dir + " " + test::source_path("tests/cross/run_package.c") + " " + arm.result.dir +
                        "/kernels.a -lpthread -lm -ldl -o " + dir + "/run_package 2>" + dir + "/compile.log";
  INFO("compile: " << compile);
  REQUIRE(run(compile) == 0);
  std::string execute = "qemu-aarch64 " + dir + "/run_package " + dir + "/params.bin " + dir + "/input.bin " +
                        std::to_string(batch) + " " + dir + "/nodes.bin" +
                        (gradients ? " " + dir + "/labels.bin " + dir + "/grads.bin" : "");
  INFO("run: " << execute);
  REQUIRE(run(execute) == 0);

  std::vector<float> arm_nodes = read_floats(dir + "/nodes.bin");
  size_t offset = 0;
  for (size_t node = 0; node < host.package->nodes().size(); ++node) {
    int64_t count = batch * shape_elements(host.graph.nodes[node].shape);
    REQUIRE(offset + size_t(count) <= arm_nodes.size());
    const float* expected = network.node_output(int(node));
    if (!test::written_at_inference(host.graph, host.graph.nodes[node])) {  // (its buffer holds nothing)
      offset += size_t(count);
      continue;
    }
    double worst = 0;
    for (int64_t i = 0; i < count; ++i) {
      double error = std::fabs(double(expected[i]) - double(arm_nodes[offset + size_t(i)]));
      if (!(error <= worst)) worst = std::isnan(error) ? INFINITY : error;
    }
    INFO("node '" << host.graph.nodes[node].name << "': worst ARM vs host difference " << worst);
    CHECK(worst <= 1e-4);
    offset += size_t(count);
  }
  CHECK(offset == arm_nodes.size());
  if (gradients) {
    network.compute_gradients(input.data(), labels.data(), batch);
    std::vector<float> arm_grads = read_floats(dir + "/grads.bin");
    REQUIRE(int64_t(arm_grads.size()) == host.package->param_floats());
    const float* expected = network.param_grads();
    double largest = 0;
    for (size_t i = 0; i < arm_grads.size(); ++i) largest = std::max(largest, std::fabs(double(expected[i])));
    for (const rt::TensorInfo& info : host.package->params()) {
      if (!info.trainable) continue;
      double worst = 0;
      for (int64_t i = info.offset; i < info.offset + info.elements(); ++i) {
        double error = std::fabs(double(expected[i]) - double(arm_grads[size_t(i)]));
        if (!(error <= worst)) worst = std::isnan(error) ? INFINITY : error;
      }
      INFO("gradient of " << info.name << ": worst ARM vs host difference " << worst << " (largest gradient " << largest
                          << ")");
      CHECK(worst <= 1e-5 + 1e-4 * largest);
    }
  }
  fs::remove_all(dir);
}
}  // namespace cnnc::test

namespace {

void check_arm_matches_host(const std::string& model, int batch) {
  test::check_arm_matches_host(test::build_model(model, "host"), test::build_model(model, "arm-64-linux"), batch, false);
}

}  // namespace

TEST_CASE("build: packages are cached by content and rebuilt when the model changes", "[package]") {
  std::string cache = temp_dir("cache");
  const char* previous = std::getenv("CNNC_CACHE");
  std::string saved = previous ? previous : "";
  setenv("CNNC_CACHE", cache.c_str(), 1);
  Graph graph = compile_graph(parse_model_file(test::source_path("models/mnist_cnn.yaml")));
  BuildOptions options;
  options.output_dir = cache + "/out";
  PackageResult first = build_package(graph, options);
  CHECK_FALSE(first.from_cache);
  for (const char* file : {"kernels.a", "kernels.so", "mnist_cnn.h", "manifest.json"})
    CHECK(fs::is_regular_file(options.output_dir + "/" + file));
  PackageResult second = build_package(graph, options);
  CHECK(second.from_cache);
  CHECK(second.cache_key == first.cache_key);

  // Another model (one attribute changed) gets another package.
  ModelSpec changed = parse_model_text("input: {shape: [28, 28, 1]}\nlayers:\n  - conv2d: {filters: 8, kernel: 3}\n"
                                       "  - flatten: {}\n  - dense: {units: 10}\n",
                                       "a.yaml");
  Graph other = compile_graph(changed);
  BuildOptions other_options;
  PackageResult third = build_package(other, other_options);
  CHECK(third.cache_key != first.cache_key);

  // A package opened for the wrong model is refused with an error that says to rebuild.
  CHECK_THROWS_WITH(rt::Package::open(options.output_dir, model_fingerprint(other)),
                    Catch::Contains("different model") && Catch::Contains("rebuild"));

  std::ifstream in(options.output_dir + "/manifest.json");
  nlohmann::json manifest = nlohmann::json::parse(in);
  CHECK(manifest["model_hash"] == model_fingerprint(graph));
  CHECK(manifest["kernels"].size() == 4);
  CHECK(manifest["kernels"][0]["fused"] == nlohmann::json({"relu", "maxpool2d"}));
  CHECK(manifest["kernels"][0]["schedule"]["origin"] == "default");
  CHECK(manifest["param_floats"] == 225034);
  CHECK(manifest["plan"].size() == 4);
  if (previous) setenv("CNNC_CACHE", saved.c_str(), 1);
  else unsetenv("CNNC_CACHE");
  fs::remove_all(cache);
}

TEST_CASE("build: every target compiles; an unknown target is a clear error", "[package]") {
  for (const char* target : {"x86-64-linux-avx2", "x86-64-linux-avx512", "arm-64-linux",
                             "x86-64-linux-cuda-cuda_capability_80"}) {
    INFO("target " << target);
    test::BuiltModel built = test::build_model("models/mnist_cnn.yaml", target);
    CHECK(fs::file_size(built.result.dir + "/kernels.a") > 0);
    CHECK(fs::file_size(built.result.dir + "/kernels.so") > 0);
  }
  CHECK_THROWS_WITH(resolve_target("arm-64-lnux"), Catch::Contains("unknown target") && Catch::Contains("did you mean"));
}

// Every newer op compiles for CUDA (running a CUDA package needs a GPU: the cuda test below).
TEST_CASE("build: global pooling, the newer activations, padding, upsampling, dilation, depthwise and separable convolutions compile for CUDA", "[package]") {
  for (const char* model : {"tests/models/grad_activations.yaml", "tests/models/grad_spatial.yaml",
                            "tests/models/grad_dilated.yaml", "tests/models/grad_swish.yaml",
                            "tests/models/grad_depthwise.yaml"}) {
    INFO(model);
    test::BuiltModel built = test::build_model(model, "x86-64-linux-cuda-cuda_capability_80");
    CHECK(fs::file_size(built.result.dir + "/kernels.so") > 0);
  }
}

TEST_CASE("arm64: the ARM NEON package under qemu gives the host's answer", "[arm]") {
  check_arm_matches_host("models/mnist_cnn.yaml", 7);
  check_arm_matches_host("tests/models/ops_conv.yaml", 3);
  check_arm_matches_host("tests/models/ops_dag.yaml", 2);
  check_arm_matches_host("tests/models/ops_dense.yaml", 5);
}

// Outputs and one training step's gradients of the models that hold the newer ops (global
// pooling, relu6, leaky_relu, elu, hard_sigmoid, swish, silu, gelu, hard_swish, zero_padding2d,
// upsampling2d, dilation, depthwise_conv2d, separable_conv2d), and winograd_residual.yaml's
// backward kernels in place (NEON's 4-float vectors decide which read and add in place), Winograd
// F(2x2, 5x5) (winograd5.yaml), large kernels' padded input gradients and row-blocked weight
// gradients (big_taps.yaml).
TEST_CASE("arm64: global pooling, the newer activations, padding, upsampling, dilation, depthwise and separable convolutions give the host's answer", "[arm]") {
  for (const char* model : {"tests/models/grad_activations.yaml", "tests/models/grad_spatial.yaml",
                            "tests/models/grad_dilated.yaml", "tests/models/grad_swish.yaml",
                            "tests/models/grad_depthwise.yaml", "tests/models/winograd.yaml",
                            "tests/models/winograd_residual.yaml", "tests/models/winograd5.yaml",
                            "tests/models/big_taps.yaml"}) {
    INFO(model);
    test::check_arm_matches_host(test::build_model(model, "host"), test::build_model(model, "arm-64-linux"), 3, true);
  }
}

// The zoo's networks besides mnist_cnn (above), whole (docs/models.md): outputs and one training
// step's gradients at batch 2.
TEST_CASE("arm64: lenet5, resnet_small, resnet20, mobilenet and dilated_swish give the host's answer", "[arm]") {
  for (const char* model : {"models/lenet5.yaml", "models/resnet_small.yaml", "models/resnet20.yaml", "models/mobilenet.yaml",
                            "models/dilated_swish.yaml"}) {
    INFO(model);
    test::check_arm_matches_host(test::build_model(model, "host"), test::build_model(model, "arm-64-linux"), 2, true);
  }
}

TEST_CASE("cuda: the CUDA package gives the host's answer on a GPU, and a clear error without one", "[cuda]") {
  test::BuiltModel host = test::build_model("models/mnist_cnn.yaml", "host");
  test::BuiltModel cuda = test::build_model("models/mnist_cnn.yaml", "x86-64-linux-cuda-cuda_capability_80");
  auto package = rt::Package::open(cuda.result.dir, model_fingerprint(cuda.graph));
  rt::Network gpu(package), cpu(host.package);
  test::randomize_params(cpu, 3);
  std::copy(cpu.params(), cpu.params() + host.package->param_floats(), gpu.params());
  gpu.params_changed();
  int batch = 5;
  std::vector<float> input = test::random_input(batch * host.package->input_elements(), 4);
  std::vector<float> expected = cpu.forward(input, batch);
  std::vector<float> actual(expected.size());
  bool ran = false;
  try {
    gpu.forward(input.data(), batch, actual.data());
    ran = true;
  } catch (const UserError& error) {
    std::string message = error.what();
    INFO(message);
    CHECK((message.find("cuda") != std::string::npos || message.find("CUDA") != std::string::npos));
  }
  if (ran) {
    WARN("a GPU is present: comparing the CUDA package with the host");
    for (size_t i = 0; i < expected.size(); ++i) CHECK(std::fabs(expected[i] - actual[i]) <= 1e-4);
  }
}
