// Helpers shared by the code-generation tests: build a model's package, fill it with random
// parameters and inputs.
#pragma once

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "codegen/codegen.h"
#include "codegen/package.h"
#include "codegen/plan_kernels.h"
#include "frontend/parse_model.h"
#include "graph/pipeline.h"
#include "package.h"
#include "reference/reference_ops.h"

namespace cnnc::test {

inline std::string source_path(const std::string& relative) { return std::string(CNNC_SOURCE_DIR) + "/" + relative; }

// A graph's inference kernels, then its training kernels other than those it reuses from inference.
inline std::vector<KernelInfo> all_kernels(const Graph& graph) {
  std::vector<KernelInfo> kernels = plan_kernels(graph);
  int64_t floats = 0;
  for (const Node& node : graph.nodes) floats += node.param_count();
  for (const KernelInfo& kernel : plan_training_kernels(graph, floats))
    if (!kernel.reuses_inference_kernel) kernels.push_back(kernel);
  return kernels;
}

// An empty directory cnnc-NAME-PID under the system's temporary directory, removed afterwards.
struct Scratch {
  std::filesystem::path path;
  explicit Scratch(const std::string& name)
      : path(std::filesystem::temp_directory_path() / ("cnnc-" + name + "-" + std::to_string(getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~Scratch() { std::filesystem::remove_all(path); }
};

struct BuiltModel {
  Graph graph;
  PackageResult result;
  std::shared_ptr<rt::Package> package;
};

// Builds (through the cache, with guard zones) the package of a compiled graph.
inline BuiltModel build_graph(Graph graph, const std::string& target) {
  BuiltModel built;
  built.graph = std::move(graph);
  BuildOptions options;
  options.target = target;
  options.guard_zones = true;  // a kernel writing outside its buffers fails, naming itself
  built.result = build_package(built.graph, options);
  if (target == "host") built.package = rt::Package::open(built.result.dir, model_fingerprint(built.graph));
  return built;
}

// Builds a model given as YAML text (`file` names it in messages).
inline BuiltModel build_model_text(const std::string& yaml, const std::string& file, const std::string& target = "host") {
  return build_graph(compile_graph(parse_model_text(yaml, file)), target);
}

// Under qemu-aarch64, the ARM package's node outputs (and with `gradients`, one training step's
// parameter gradients) against the host package's (test_targets.cpp).
void check_arm_matches_host(const BuiltModel& host, const BuiltModel& arm, int batch, bool gradients);

inline BuiltModel build_model(const std::string& relative_path, const std::string& target = "host") {
  return build_graph(compile_graph(parse_model_file(source_path(relative_path))), target);
}

// Whether the package writes a node's output at inference: not that of a node whose inference
// kernel also computes the batchnorm after it (inference_folds), nor the input's.
inline bool written_at_inference(const Graph& graph, const Node& node) {
  return node.id != 0 && inference_folds(graph)[size_t(node.id)] < 0;
}

// The double-precision reference (tests/reference) of `node`, fed the package's own outputs of
// the nodes before it and its parameters, after network.forward at `batch`. The input of a
// folded batchnorm, never written at inference, is the reference's own output of that node.
inline std::vector<double> reference_output(const BuiltModel& built, const rt::Network& network, const Node& node,
                                            int batch) {
  std::vector<int> folds = inference_folds(built.graph);
  std::vector<std::vector<float>> computed;
  computed.reserve(node.inputs.size());  // (pointers into it are kept)
  std::vector<const float*> inputs;
  for (int from : node.inputs) {
    if (folds[size_t(from)] != node.id) {
      inputs.push_back(network.node_output(from));
      continue;
    }
    std::vector<double> before = reference_output(built, network, built.graph.nodes[size_t(from)], batch);
    computed.emplace_back(before.begin(), before.end());
    inputs.push_back(computed.back().data());
  }
  std::map<std::string, const float*> params;
  for (const rt::TensorInfo& info : built.package->params())
    if (info.name.rfind(node.name + ".", 0) == 0) params[info.name.substr(node.name.size() + 1)] = network.params() + info.offset;
  return reference::run_node(built.graph, node, inputs, params, batch);
}

// The models whose gradients test_gradients.cpp checks against finite differences, each with the
// seed of its check (one test case per model, which finds its entry here by path). Every op of
// the language must appear in one of them (test_op_registry.cpp).
struct GradientModel {
  std::string path;  // relative to the source tree
  uint32_t seed;
};
inline const std::vector<GradientModel>& gradient_check_models() {
  static const std::vector<GradientModel> models = {
      {"tests/models/grad_conv.yaml", 11},   {"tests/models/grad_dag.yaml", 12},
      {"tests/models/grad_relu.yaml", 13},   {"tests/models/ops_dense.yaml", 14},
      {"tests/models/grad_sparse.yaml", 15}, {"tests/models/grad_bn.yaml", 17},
      {"tests/models/grad_activations.yaml", 18}, {"tests/models/grad_spatial.yaml", 19},
      {"tests/models/grad_dilated.yaml", 20},     {"tests/models/grad_swish.yaml", 21},
      {"tests/models/grad_depthwise.yaml", 22},   {"tests/models/winograd.yaml", 23},
      {"tests/models/winograd_pool.yaml", 24},    {"tests/models/big_taps.yaml", 25},
      {"tests/models/winograd5.yaml", 26},
  };
  return models;
}

inline bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Random parameters at the scale of a real network: kernels uniform within the Glorot limit,
// every other parameter (biases included, so that they are tested) in [-0.5, 0.5], variances in
// [0.5, 1.5] so that batchnorm stays finite.
inline void randomize_params(rt::Network& network, uint32_t seed) {
  std::mt19937 random(seed);
  for (const rt::TensorInfo& info : network.package().params()) {
    float* data = network.params() + info.offset;
    float limit = 0.5f, shift = ends_with(info.name, ".moving_variance") ? 1.0f : 0.0f;
    if (ends_with(info.name, ".kernel")) {
      int64_t receptive = 1;
      for (size_t d = 0; d + 2 < info.shape.size(); ++d) receptive *= info.shape[d];
      double fans = double(receptive * (info.shape[info.shape.size() - 2] + info.shape.back()));
      limit = float(std::sqrt(6.0 / fans));
    }
    std::uniform_real_distribution<float> uniform(-limit, limit);
    for (int64_t i = 0; i < info.elements(); ++i) data[i] = uniform(random) + shift;
  }
  network.params_changed();
}

inline std::vector<float> random_input(int64_t count, uint32_t seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = uniform(random);
  return values;
}

}  // namespace cnnc::test
