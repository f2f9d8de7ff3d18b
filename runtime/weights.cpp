#include "weights.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "support/diagnostics.h"

namespace cnnc::rt {

namespace {

// Uniform in [-limit, limit) from 24 random bits: the same on every platform and standard library.
float uniform(std::mt19937_64& random, float limit) {
  float unit = float(random() >> 40) / float(1 << 24);
  return (2.0f * unit - 1.0f) * limit;
}

}  // namespace

void init_params(Network& network, uint64_t seed) {
  std::mt19937_64 random(seed);
  float* data = network.params();
  for (const TensorInfo& info : network.package().params()) {
    float* values = data + info.offset;
    int64_t count = info.elements();
    if (info.initializer == "glorot_uniform") {
      // Keras: conv kernel [kh, kw, in, out] has fan_in = kh*kw*in, fan_out = kh*kw*out;
      // dense kernel [in, out] has fan_in = in, fan_out = out.
      int64_t receptive = 1;
      for (size_t d = 0; d + 2 < info.shape.size(); ++d) receptive *= info.shape[d];
      double fan_in = double(receptive * info.shape[info.shape.size() - 2]);
      double fan_out = double(receptive * info.shape.back());
      float limit = float(std::sqrt(6.0 / (fan_in + fan_out)));
      for (int64_t i = 0; i < count; ++i) values[i] = uniform(random, limit);
    } else if (info.initializer == "zeros" || info.initializer == "ones") {
      std::fill(values, values + count, info.initializer == "ones" ? 1.0f : 0.0f);
    } else {
      throw UserError(SourceLoc{network.package().dir() + "/manifest.json", 0, 0},
                      fmt::format("parameter {}: unknown initializer '{}' (a package built by another cnnc?): rebuild "
                                  "it with cnnc build",
                                  info.name, info.initializer));
    }
  }
  network.params_changed();
}

void save_safetensors(const std::string& path, const std::map<std::string, const Tensor*>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    uint64_t bytes = tensor->data.size() * sizeof(float);
    header[name] = {{"dtype", "F32"}, {"shape", tensor->shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8 != 0) text += ' ';  // align the data to 8 bytes, as the format recommends
  std::string temporary = fmt::format("{}.tmp-{}", path, ::getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) throw UserError(SourceLoc{path, 0, 0}, fmt::format("cannot write: {}", std::strerror(errno)));
    uint64_t length = text.size();
    unsigned char prefix[8];
    for (int i = 0; i < 8; ++i) prefix[i] = (unsigned char)(length >> (8 * i));
    out.write(reinterpret_cast<const char*>(prefix), 8);
    out.write(text.data(), std::streamsize(text.size()));
    for (const auto& [name, tensor] : tensors)
      out.write(reinterpret_cast<const char*>(tensor->data.data()), std::streamsize(tensor->data.size() * sizeof(float)));
    out.flush();
    if (!out) {
      std::remove(temporary.c_str());
      throw UserError(SourceLoc{path, 0, 0}, "cannot write (disk full?)");
    }
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) {
    std::remove(temporary.c_str());
    throw UserError(SourceLoc{path, 0, 0}, fmt::format("cannot replace the file: {}", error.message()));
  }
}

std::map<std::string, Tensor> load_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  SourceLoc where{path, 0, 0};
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(where, fmt::format("cannot open: {}", std::strerror(errno)));
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  in.seekg(0);
  if (size < 8) throw UserError(where, "not a safetensors file (shorter than its 8-byte header length)");
  unsigned char prefix[8];
  in.read(reinterpret_cast<char*>(prefix), 8);
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i) length |= uint64_t(prefix[i]) << (8 * i);
  if (length > uint64_t(size) - 8 || length > (100u << 20))
    throw UserError(where, fmt::format("not a safetensors file, or truncated: header length {} but the file has {} bytes",
                                       length, size));
  std::string text(length, '\0');
  in.read(text.data(), std::streamsize(length));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    throw UserError(where, "not a safetensors file: the header is not JSON");
  }
  if (!header.is_object()) throw UserError(where, "not a safetensors file: the header is not a JSON object");
  uint64_t data_size = uint64_t(size) - 8 - length;
  std::map<std::string, Tensor> tensors;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (metadata && entry.is_object())
        for (auto& [key, value] : entry.items())
          if (value.is_string()) (*metadata)[key] = value.get<std::string>();
      continue;
    }
    try {
      if (entry.at("dtype") != "F32")
        throw UserError(where, fmt::format("tensor '{}' has dtype {}; only F32 is supported", name,
                                           entry.at("dtype").dump()));
      Tensor tensor;
      tensor.shape = entry.at("shape").get<std::vector<int64_t>>();
      uint64_t begin = entry.at("data_offsets").at(0), end = entry.at("data_offsets").at(1);
      uint64_t elements = 1;
      for (int64_t dim : tensor.shape) {
        if (dim < 0 || dim > (int64_t(1) << 31)) throw UserError(where, fmt::format("tensor '{}' has a bad shape", name));
        elements *= uint64_t(dim);
        if (elements > (uint64_t(1) << 31)) throw UserError(where, fmt::format("tensor '{}' is too large", name));
      }
      if (end < begin || end > data_size || end - begin != elements * 4)
        throw UserError(where, fmt::format("tensor '{}': its data [{}, {}) does not fit its shape or the file ({} data "
                                           "bytes); the file may be truncated",
                                           name, begin, end, data_size));
      tensor.data.resize(elements);
      in.seekg(std::streamoff(8 + length + begin));
      in.read(reinterpret_cast<char*>(tensor.data.data()), std::streamsize(elements * 4));
      if (!in) throw UserError(where, fmt::format("tensor '{}': the file is truncated", name));
      tensors[name] = std::move(tensor);
    } catch (const nlohmann::json::exception&) {
      throw UserError(where, fmt::format("tensor '{}': malformed entry in the header", name));
    }
  }
  return tensors;
}

namespace {

// The "classes" entry of a weights file's metadata (a JSON list of names); empty without one.
std::vector<std::string> classes_in(const std::map<std::string, std::string>& metadata, const std::string& path) {
  auto it = metadata.find("classes");
  if (it == metadata.end()) return {};
  nlohmann::json names = nlohmann::json::parse(it->second, nullptr, false);
  std::vector<std::string> result;
  if (!names.is_array()) throw UserError(SourceLoc{path, 0, 0}, "corrupt metadata: 'classes' is not a list of names");
  for (const auto& name : names) {
    if (!name.is_string()) throw UserError(SourceLoc{path, 0, 0}, "corrupt metadata: 'classes' is not a list of names");
    result.push_back(name.get<std::string>());
  }
  return result;
}

}  // namespace

void save_weights(const Network& network, const std::string& path, const std::vector<std::string>& classes) {
  std::map<std::string, Tensor> copies;
  std::map<std::string, const Tensor*> tensors;
  for (const TensorInfo& info : network.package().params()) {
    const float* data = network.params() + info.offset;
    copies[info.name] = Tensor{info.shape, std::vector<float>(data, data + info.elements())};
  }
  for (auto& [name, tensor] : copies) tensors[name] = &tensor;
  std::map<std::string, std::string> metadata = {{"format", "cnnc-weights-1"}, {"model", network.package().model_name()}};
  if (!classes.empty()) metadata["classes"] = nlohmann::json(classes).dump();
  save_safetensors(path, tensors, metadata);
}

std::vector<std::string> load_class_names(const std::string& path) {
  std::map<std::string, std::string> metadata;
  load_safetensors(path, &metadata);
  return classes_in(metadata, path);
}

void load_weights(Network& network, const std::string& path, std::vector<std::string>* classes) {
  std::map<std::string, std::string> metadata;
  set_params(network, load_safetensors(path, &metadata), path);
  if (classes) *classes = classes_in(metadata, path);
}

void set_params(Network& network, const std::map<std::string, Tensor>& tensors, const std::string& path) {
  for (const TensorInfo& info : network.package().params()) {
    auto it = tensors.find(info.name);
    if (it == tensors.end())
      throw UserError(SourceLoc{path, 0, 0},
                      fmt::format("no tensor '{}' for model '{}'; these weights belong to another model", info.name,
                                  network.package().model_name()));
    if (it->second.shape != info.shape || int64_t(it->second.data.size()) != info.elements())
      throw UserError(SourceLoc{path, 0, 0},
                      fmt::format("tensor '{}' has shape [{}], but the model needs [{}]", info.name,
                                  fmt::join(it->second.shape, ", "), fmt::join(info.shape, ", ")));
    std::copy(it->second.data.begin(), it->second.data.end(), network.params() + info.offset);
  }
  network.params_changed();
}

}  // namespace cnnc::rt
