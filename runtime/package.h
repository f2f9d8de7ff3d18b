// libcnnrt: loads a model package built by `cnnc build` and runs it. Needs neither libHalide nor
// LLVM: the kernels and their Halide runtime are inside the package's kernels.so.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cnnc::rt {

struct TensorInfo {
  std::string name;            // "conv2d.kernel"
  std::vector<int64_t> shape;  // Keras layout
  int64_t offset = 0;          // in floats, into the model's parameter block
  bool trainable = true;
  std::string initializer;     // "glorot_uniform", "zeros" or "ones" (Keras), declared by the op
  int64_t elements() const;
};

struct NodeInfo {
  std::string name;
  std::string op;
  std::vector<int64_t> shape;  // per example
  std::vector<int> inputs;
  std::vector<std::string> fused;
  bool view = false;
  int64_t flops = 0;
};

// An opened package: kernels.so loaded, manifest read and checked.
class Package {
 public:
  // Opens the package in `dir`. If `expected_model_hash` is not empty, the package must have been
  // built from that model (see model_fingerprint), else an error says to rebuild it.
  static std::shared_ptr<Package> open(const std::string& dir, const std::string& expected_model_hash = "");
  ~Package();
  Package(const Package&) = delete;
  Package& operator=(const Package&) = delete;

  const std::string& dir() const { return dir_; }
  const std::string& model_name() const { return model_name_; }
  const std::string& target() const { return target_; }
  const std::vector<TensorInfo>& params() const { return params_; }
  const std::vector<NodeInfo>& nodes() const { return nodes_; }
  int64_t param_floats() const { return param_floats_; }
  // FLOPs per example of each kernel (by C symbol), inference and training, from the manifest.
  int64_t kernel_flops(const std::string& function) const;
  // What its algorithm executes where that differs (Winograd), else kernel_flops.
  int64_t kernel_executed_flops(const std::string& function) const;
  int64_t input_elements() const;
  int64_t output_elements() const;
  int output_node() const { return output_node_; }

  // Threads for the kernels (0: one per core). Applies to this package's runtime.
  void set_threads(int threads) const;
  // Whether the package has training kernels, and why not.
  bool trainable() const;
  const std::string& untrainable_reason() const { return untrainable_reason_; }

 private:
  friend class Network;
  Package() = default;
  void* resolve(const std::string& suffix) const;

  std::string dir_, model_name_, target_;
  void* handle_ = nullptr;
  std::vector<TensorInfo> params_;
  std::vector<NodeInfo> nodes_;
  int64_t param_floats_ = 0;
  int output_node_ = 0;
  std::string untrainable_reason_;
  std::vector<std::pair<std::string, int64_t>> kernel_flops_, kernel_executed_flops_;

  // The package's C API (see the generated <name>.h), one pointer per function of c_api.def,
  // named after it (create_, forward_, ...); the model is opaque here.
#define MODEL void
#define CNNC_API_DOC(text)
#define CNNC_API(return_type, name, parameters) return_type(*name##_) parameters = nullptr;
#include "codegen/c_api.def"
#undef CNNC_API
#undef CNNC_API_DOC
#undef MODEL
};

// One instance of a network: its parameters and activations.
class Network {
 public:
  explicit Network(std::shared_ptr<Package> package);
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  const Package& package() const { return *package_; }
  // All parameters, one contiguous block in the order of package().params().
  float* params();
  const float* params() const;
  float* param(const std::string& name);
  // Call after changing parameters.
  void params_changed();

  // input: batch x input_elements floats (NHWC); output: batch x output_elements floats.
  void forward(const float* input, int batch, float* output);
  std::vector<float> forward(const std::vector<float>& input, int batch);
  // A node's output from the last forward call: batch x nodes()[node] elements.
  const float* node_output(int node) const;

  // Training. A step: forward, softmax cross-entropy, backward, optimizer update.
  struct StepResult {
    float loss_sum = 0;  // summed over the batch
    int correct = 0;
  };
  // kind "adam" or "sgd"; Keras semantics (see docs/c-api.md).
  void set_optimizer(const std::string& kind, float learning_rate, float beta_1, float beta_2, float epsilon,
                     float momentum);
  StepResult train_step(const float* input, const int32_t* labels, int batch);
  // Forward and backward only: param_grads() receives the gradient of the mean loss.
  StepResult compute_gradients(const float* input, const int32_t* labels, int batch);
  const float* param_grads() const;
  // The optimizer update from those gradients, each times `scale` (the second half of a step).
  void apply_gradients(float scale);
  // Keras's label smoothing of the training loss: targets (1 - s) one-hot + s / classes.
  void set_label_smoothing(float smoothing);
  // Slot 0: Adam's m or SGD's velocity; slot 1: Adam's v. param_floats() each.
  float* optimizer_state(int slot);
  int64_t step() const;
  void set_step(int64_t step);
  void set_seed(uint32_t seed);
  // Data-parallel training (docs/distributed.md): the position of the batch's first example in
  // the global batch (dropout masks), the gradients writable, and a hook told on compute_gradients'
  // thread as each parameter's gradient becomes final (-1: a backward kernel finished none). An
  // exception from the hook ends compute_gradients with it once the kernels have run.
  void set_example_offset(int64_t offset);
  float* mutable_param_grads();
  void set_gradient_hook(std::function<void(int param)> hook);
  int train_kernel_count() const;
  std::string train_kernel_name(int kernel) const;
  double train_kernel_seconds(int kernel) const;
  double optimizer_seconds() const;

  // Kernels in execution order (C symbol names) and their time in the last forward call.
  int kernel_count() const;
  std::string kernel_name(int kernel) const;
  double kernel_seconds(int kernel) const;

 private:
  static void call_gradient_hook(void* self, int param);
  // A training call of the package: an exception the gradient hook kept during it comes first,
  // then the call's own failure, as "<what>: <the package's error>".
  void training_call(const std::function<int()>& call, const char* what);
  std::shared_ptr<Package> package_;
  void* model_ = nullptr;
  std::function<void(int)> gradient_hook_;
  std::exception_ptr hook_error_;
};

}  // namespace cnnc::rt
