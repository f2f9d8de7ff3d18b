// manifest.json, the description of a package: its schema, in one place. The code generator
// fills a Manifest and writes it (compiler/codegen/manifest.cpp); the runtime reads it back
// (package.cpp). The JSON keys are the field names and appear only in manifest_schema.cpp (to_json,
// from_json). Needs neither Halide nor the rest of the runtime.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace cnnc::manifest {

// The value of "format"; a package of another format is not opened.
inline constexpr const char* kFormat = "cnnc-package-1";

struct Target {
  std::string name;    // as given to cnnc build --target
  std::string halide;  // the Halide target string
  bool gpu = false;
  std::string arch;    // "x86-64", "arm-64"
};

struct Tensor {  // the input or the output
  int node = 0;
  std::vector<int64_t> shape;  // per example
};

struct FusedOp {
  std::string op, layer;
};

struct Buffer {  // a graph node's output
  int id = 0;
  std::string name, op;
  std::vector<int64_t> shape;  // per example
  std::vector<int> inputs;
  std::vector<FusedOp> fused;
  int storage = 0;             // the node owning the memory
  bool view = false;
  int64_t flops = 0;           // per example
};

struct Param {
  std::string name;            // "conv2d.kernel"
  std::string layer;
  std::vector<int64_t> shape;  // Keras layout
  int64_t offset = 0;          // in floats, into the parameter block
  bool trainable = true;
  std::string initializer;     // "glorot_uniform", "zeros", "ones"; "" if absent (older packages)
};

struct Schedule {
  std::string origin;       // "default", "tuned" or "autoscheduler"
  std::string knobs;        // ScheduleKnobs::str()
  std::string description;  // human-readable
  // FLOPs per example the kernel's algorithm executes where they differ from the layer's own
  // (flops_per_example, what the direct algorithm does): Winograd's products. 0: the same.
  int64_t executed_flops = 0;
};

struct Kernel {  // an inference kernel
  std::string function;
  int node = 0;
  std::string op;
  std::vector<std::string> fused;
  std::vector<std::string> arguments;
  std::vector<int> inputs;
  int output = 0;
  int64_t flops_per_example = 0;
  Schedule schedule;
};

struct TrainingKernel {
  std::string function;
  std::string kind;  // "forward", "forward_train", "backward", "loss", "adam", "sgd"
  int node = 0;
  int64_t flops_per_example = 0;
  Schedule schedule;
};

struct Manifest {
  std::string format = kFormat;
  std::string cnnc_version, halide_version;
  std::string model, model_file, model_hash;
  Target target;
  std::string layout;
  Tensor input, output;
  std::vector<Buffer> buffers;
  std::vector<Param> params;
  int64_t param_floats = 0;
  std::vector<Kernel> kernels;
  bool trainable = false;
  std::string untrainable_reason;  // written only where not trainable
  std::vector<TrainingKernel> training_kernels;
  std::vector<std::string> plan;   // the inference kernels' functions in execution order
};

// Whether `json` is a manifest of this format (checked before reading it: a package of another
// format is to be rebuilt, not reported as incomplete).
bool known_format(const nlohmann::json& json);

// nlohmann::json conversions (found by argument-dependent lookup). from_json throws
// nlohmann::json::exception where a key is missing or has the wrong type.
void to_json(nlohmann::json& json, const Manifest& manifest);
void from_json(const nlohmann::json& json, Manifest& manifest);

}  // namespace cnnc::manifest
