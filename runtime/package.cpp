#include "package.h"

#include <dlfcn.h>

#include <fstream>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "manifest_schema.h"
#include "support/diagnostics.h"

namespace cnnc::rt {

int64_t TensorInfo::elements() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

std::shared_ptr<Package> Package::open(const std::string& dir, const std::string& expected_model_hash) {
  std::string manifest_path = dir + "/manifest.json";
  std::ifstream in(manifest_path);
  if (!in)
    throw UserError(SourceLoc{manifest_path, 0, 0}, "cannot open the package manifest; build the package with cnnc build");
  nlohmann::json json;
  try {
    in >> json;
  } catch (const nlohmann::json::exception& error) {
    throw UserError(SourceLoc{manifest_path, 0, 0}, fmt::format("the manifest is not valid JSON: {}", error.what()));
  }
  std::shared_ptr<Package> package(new Package());
  package->dir_ = dir;
  if (!manifest::known_format(json))
    throw UserError(SourceLoc{manifest_path, 0, 0}, "unknown package format; rebuild with this cnnc");
  manifest::Manifest manifest;
  try {
    manifest = json.get<manifest::Manifest>();
  } catch (const nlohmann::json::exception& error) {
    throw UserError(SourceLoc{manifest_path, 0, 0}, fmt::format("the manifest is incomplete: {}", error.what()));
  }
  if (!expected_model_hash.empty() && manifest.model_hash != expected_model_hash)
    throw UserError(SourceLoc{manifest_path, 0, 0},
                    fmt::format("this package was built from a different model (hash {}, expected {}); "
                                "rebuild it with cnnc build",
                                manifest.model_hash, expected_model_hash));
  package->model_name_ = manifest.model;
  package->target_ = manifest.target.name;
  if (manifest.target.arch != "x86-64")
    throw UserError(SourceLoc{manifest_path, 0, 0},
                    fmt::format("the package is for {} and cannot run on this machine", package->target_));
  for (const manifest::Param& param : manifest.params)
    package->params_.push_back({param.name, param.shape, param.offset, param.trainable, param.initializer});
  package->param_floats_ = manifest.param_floats;
  for (const manifest::Buffer& buffer : manifest.buffers) {
    NodeInfo info;
    info.name = buffer.name;
    info.op = buffer.op;
    info.shape = buffer.shape;
    info.inputs = buffer.inputs;
    for (const manifest::FusedOp& fused : buffer.fused) info.fused.push_back(fused.op);
    info.view = buffer.view;
    info.flops = buffer.flops;
    package->nodes_.push_back(info);
  }
  package->output_node_ = manifest.output.node;
  package->untrainable_reason_ = manifest.untrainable_reason;
  for (const manifest::Kernel& kernel : manifest.kernels) {
    package->kernel_flops_.emplace_back(kernel.function, kernel.flops_per_example);
    package->kernel_executed_flops_.emplace_back(kernel.function, kernel.schedule.executed_flops);
  }
  for (const manifest::TrainingKernel& kernel : manifest.training_kernels) {
    package->kernel_flops_.emplace_back(kernel.function, kernel.flops_per_example);
    package->kernel_executed_flops_.emplace_back(kernel.function, kernel.schedule.executed_flops);
  }

  std::string library = dir + "/kernels.so";
  package->handle_ = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!package->handle_) throw UserError(SourceLoc{library, 0, 0}, fmt::format("cannot load the kernels: {}", dlerror()));
  Package& p = *package;
  // Every function of the C API (c_api.def) must be there.
#define CNNC_API_DOC(text)
#define CNNC_API(return_type, name, parameters) p.name##_ = reinterpret_cast<decltype(p.name##_)>(p.resolve(#name));
#include "codegen/c_api.def"
#undef CNNC_API
#undef CNNC_API_DOC
  return package;
}

Package::~Package() {
  if (handle_) dlclose(handle_);
}

void* Package::resolve(const std::string& suffix) const {
  std::string symbol = model_name_ + "_" + suffix;
  void* address = dlsym(handle_, symbol.c_str());
  if (!address)
    throw UserError(SourceLoc{dir_ + "/kernels.so", 0, 0}, fmt::format("missing symbol {}; rebuild the package", symbol));
  return address;
}

int64_t Package::input_elements() const {
  int64_t count = 1;
  for (int64_t dim : nodes_[0].shape) count *= dim;
  return count;
}

int64_t Package::output_elements() const {
  int64_t count = 1;
  for (int64_t dim : nodes_[output_node_].shape) count *= dim;
  return count;
}

void Package::set_threads(int threads) const { set_threads_(threads); }

bool Package::trainable() const { return trainable_() != 0; }

int64_t Package::kernel_flops(const std::string& function) const {
  for (const auto& [name, flops] : kernel_flops_)
    if (name == function) return flops;
  return 0;
}

int64_t Package::kernel_executed_flops(const std::string& function) const {
  for (const auto& [name, flops] : kernel_executed_flops_)
    if (name == function && flops > 0) return flops;
  return kernel_flops(function);
}

Network::Network(std::shared_ptr<Package> package) : package_(std::move(package)) {
  model_ = package_->create_();
  if (!model_) throw std::bad_alloc();
}

Network::~Network() {
  if (model_) package_->destroy_(model_);
}

float* Network::params() { return package_->param_data_(model_, 0); }
const float* Network::params() const { return package_->param_data_(model_, 0); }

float* Network::param(const std::string& name) {
  for (const TensorInfo& info : package_->params())
    if (info.name == name) return params() + info.offset;
  return nullptr;
}

void Network::params_changed() { package_->params_changed_(model_); }

void Network::forward(const float* input, int batch, float* output) {
  if (package_->forward_(model_, input, batch, output) != 0)
    throw UserError(SourceLoc{package_->dir(), 0, 0}, fmt::format("forward failed: {}", package_->error_(model_)));
}

std::vector<float> Network::forward(const std::vector<float>& input, int batch) {
  CNNC_ASSERT(int64_t(input.size()) == batch * package_->input_elements(), "input size does not match the batch");
  std::vector<float> output(static_cast<size_t>(batch * package_->output_elements()));
  forward(input.data(), batch, output.data());
  return output;
}

const float* Network::node_output(int node) const { return package_->node_output_(model_, node); }

int Network::kernel_count() const { return package_->kernel_count_(); }
std::string Network::kernel_name(int kernel) const { return package_->kernel_name_(kernel); }
double Network::kernel_seconds(int kernel) const { return package_->kernel_seconds_(model_, kernel); }

}  // namespace cnnc::rt

namespace cnnc::rt {

void Network::set_optimizer(const std::string& kind, float learning_rate, float beta_1, float beta_2, float epsilon,
                            float momentum) {
  if (package_->set_optimizer_(model_, kind.c_str(), learning_rate, beta_1, beta_2, epsilon, momentum) != 0)
    throw UserError(SourceLoc{package_->dir(), 0, 0}, package_->error_(model_));
}

void Network::training_call(const std::function<int()>& call, const char* what) {
  hook_error_ = nullptr;
  int failed = call();
  if (hook_error_) std::rethrow_exception(std::exchange(hook_error_, nullptr));
  if (failed != 0) throw UserError(SourceLoc{package_->dir(), 0, 0}, fmt::format("{}: {}", what, package_->error_(model_)));
}

Network::StepResult Network::train_step(const float* input, const int32_t* labels, int batch) {
  StepResult result;
  training_call([&] { return package_->train_step_(model_, input, labels, batch, &result.loss_sum, &result.correct); },
                "training step failed");
  return result;
}

Network::StepResult Network::compute_gradients(const float* input, const int32_t* labels, int batch) {
  StepResult result;
  training_call([&] { return package_->compute_gradients_(model_, input, labels, batch, &result.loss_sum, &result.correct); },
                "gradients failed");
  return result;
}

const float* Network::param_grads() const { return package_->param_grads_(model_); }

void Network::apply_gradients(float scale) {
  if (package_->apply_gradients_(model_, scale) != 0) throw UserError(SourceLoc{package_->dir(), 0, 0}, package_->error_(model_));
}

void Network::set_label_smoothing(float smoothing) {
  if (package_->set_label_smoothing_(model_, smoothing) != 0)
    throw UserError(SourceLoc{package_->dir(), 0, 0}, package_->error_(model_));
}
float* Network::optimizer_state(int slot) { return package_->optimizer_state_(model_, slot); }
int64_t Network::step() const { return package_->step_(model_); }
void Network::set_step(int64_t step) { package_->set_step_(model_, step); }
void Network::set_seed(uint32_t seed) { package_->set_seed_(model_, seed); }
void Network::set_example_offset(int64_t offset) { package_->set_example_offset_(model_, offset); }
float* Network::mutable_param_grads() { return package_->param_grads_data_(model_); }

void Network::call_gradient_hook(void* self, int param) {
  Network& network = *static_cast<Network*>(self);
  if (network.hook_error_) return;  // (the C code cannot unwind: the first error is kept)
  try {
    network.gradient_hook_(param);
  } catch (...) {
    network.hook_error_ = std::current_exception();
  }
}

void Network::set_gradient_hook(std::function<void(int param)> hook) {
  gradient_hook_ = std::move(hook);
  package_->set_gradient_hook_(model_, gradient_hook_ ? &Network::call_gradient_hook : nullptr, this);
}
int Network::train_kernel_count() const { return package_->train_kernel_count_(); }
std::string Network::train_kernel_name(int kernel) const { return package_->train_kernel_name_(kernel); }
double Network::train_kernel_seconds(int kernel) const { return package_->train_kernel_seconds_(model_, kernel); }
double Network::optimizer_seconds() const { return package_->optimizer_seconds_(model_); }

}  // namespace cnnc::rt
