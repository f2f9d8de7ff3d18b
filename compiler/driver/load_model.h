// Shared by the subcommands that read a model: parse (YAML) or import (ONNX), compile (through
// the package cache) and open the package for this machine.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "graph/graph.h"
#include "onnx/onnx_import.h"
#include "weights.h"  // rt::Network, rt::Tensor

namespace cnnc {

// A model file: cnnc's YAML, or an ONNX file (by its .onnx extension), imported. For ONNX,
// *imported (when given) receives the import with the file's weights.
ModelSpec read_model_file(const std::string& path, std::shared_ptr<const OnnxImport>* imported = nullptr);

struct LoadedModel {
  Graph graph;
  std::shared_ptr<rt::Package> package;
  std::shared_ptr<const OnnxImport> onnx;  // set for an ONNX model: its weights and layouts
};

// Progress goes to stderr unless quiet. With use_tuning, the tuning database's schedules apply.
LoadedModel load_model(const std::string& model_path, const std::string& target, bool quiet, bool use_tuning = true);

// Imported weights as the runtime's tensors (rt::set_params, rt::save_safetensors).
std::map<std::string, rt::Tensor> as_tensors(const std::map<std::string, ImportedTensor>& weights);

// The weights a command starts from: the --weights file when given, else an ONNX model's own,
// else Keras-default initial weights from `seed`. Returns what it used, for messages. With
// `classes`, also the names of the model's outputs: those the weights file carries (cnnc train
// saves them), else the model's train: classes; empty when neither has one per output.
enum class InitialWeights { File, Onnx, Seed };
InitialWeights initial_weights(rt::Network& network, const LoadedModel& model, const std::string& weights_file,
                               uint64_t seed, std::vector<std::string>* classes = nullptr);

}  // namespace cnnc
