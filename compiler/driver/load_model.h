// Shared by the subcommands that read a model: parse (YAML) or import (ONNX), compile (through
// the package cache) and open the package for this machine.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "graph/graph.h"
#include "onnx/onnx_import.h"
#include "package.h"

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

// Sets the network's parameters to imported ones (every parameter, same shapes).
void set_params(rt::Network& network, const std::map<std::string, ImportedTensor>& weights, const std::string& source);

// The weights a command starts from: the --weights file when given, else an ONNX model's own,
// else Keras-default initial weights from `seed`. Returns what it used, for messages.
enum class InitialWeights { File, Onnx, Seed };
// The class names for a model's outputs: those the weights file carries (cnnc train saves them),
// else the model's train: classes; empty when neither has them.
std::vector<std::string> class_names(const LoadedModel& model, const std::string& weights_file);
InitialWeights initial_weights(rt::Network& network, const LoadedModel& model, const std::string& weights_file,
                               uint64_t seed);

}  // namespace cnnc
