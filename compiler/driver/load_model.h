// Shared by the subcommands that run a model: parse, compile (through the package cache) and
// open the package for this machine.
#pragma once

#include <memory>
#include <string>

#include "graph/graph.h"
#include "package.h"

namespace cnnc {

struct LoadedModel {
  Graph graph;
  std::shared_ptr<rt::Package> package;
};

// Progress goes to stderr unless quiet. With use_tuning, the tuning database's schedules apply.
LoadedModel load_model(const std::string& model_path, const std::string& target, bool quiet, bool use_tuning = true);

}  // namespace cnnc
