// Code-generation targets: the names users give to `--target` and what they mean.
#pragma once

#include <string>
#include <vector>

namespace cnnc {

struct TargetInfo {
  std::string name;        // as the user wrote it: "host", "arm-64-linux", ...
  std::string halide;      // full Halide target string, without no_runtime
  std::string arch;        // "x86-64" or "arm-64"
  bool gpu = false;        // CUDA
  std::string c_compiler;  // compiles the package's plan (C) and links kernels.so
  bool runs_here = false;  // can this machine run the package directly?
};

// The accepted names, for --help: host, x86-64-linux-avx2, x86-64-linux-avx512, arm-64-linux,
// x86-64-linux-cuda-cuda_capability_80, host-cuda; any other valid Halide target string is accepted too.
const std::vector<std::string>& known_target_names();

// Resolves a target name; throws UserError naming the choices for an unknown one.
TargetInfo resolve_target(const std::string& name);

}  // namespace cnnc
