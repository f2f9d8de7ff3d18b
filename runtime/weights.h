// Parameters: Keras-default initialization and safetensors files.
//
// safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the raw
// little-endian data. Readable by PyTorch (safetensors.torch.load_file) and NumPy users.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "package.h"

namespace cnnc::rt {

// Keras defaults: Glorot-uniform kernels, zero biases and betas, unit gammas and moving
// variances, zero moving means. Deterministic for a seed.
void init_params(Network& network, uint64_t seed);

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Writes atomically: to a temporary file in the same directory, then renamed over `path`.
void save_safetensors(const std::string& path, const std::map<std::string, const Tensor*>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// Reads every tensor (F32 only). Rejects truncated, oversized or malformed files with a clear error.
std::map<std::string, Tensor> load_safetensors(const std::string& path,
                                               std::map<std::string, std::string>* metadata = nullptr);

// The network's parameters as named tensors, and back. load_weights requires every parameter,
// with the same shape.
// `classes`, when given, travel in the file's metadata ("classes": a JSON list of names).
void save_weights(const Network& network, const std::string& path, const std::vector<std::string>& classes = {});
// The class names a weights or checkpoint file carries; empty when it has none.
std::vector<std::string> load_class_names(const std::string& path);
// With `classes`, also the class names the file carries (empty when it has none).
void load_weights(Network& network, const std::string& path, std::vector<std::string>* classes = nullptr);
// Sets every parameter from `tensors` (by name, same shapes); `source` names them in errors.
void set_params(Network& network, const std::map<std::string, Tensor>& tensors, const std::string& source);

}  // namespace cnnc::rt
