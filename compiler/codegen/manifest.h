// manifest.json: what a package holds and how it was made -- target, buffers, parameters (with
// their initializers), kernels and their schedules, training kernels, the model's hash. The
// runtime (runtime/package.cpp) reads it to open a package.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "codegen/plan.h"
#include "codegen/target.h"

namespace cnnc {

// The manifest of a plan whose kernels are compiled (their schedules recorded). `fingerprint`:
// model_fingerprint(graph).
nlohmann::json generate_manifest(const Plan& plan, const TargetInfo& target, const std::string& fingerprint);

}  // namespace cnnc
