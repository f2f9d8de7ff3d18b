// cnnc build: a fused graph to a model package for one target.
//
// A package is a directory holding
//   kernels.a, kernels.so  every kernel, one standalone Halide runtime and the execution plan
//   <name>.h               the C API (create, parameters, forward, errors)
//   manifest.json          kernels, arguments, buffers, parameters, plan, target, schedules, hash
// Packages are cached by content hash under cache_directory(), so an unchanged model for the same
// target is not compiled again.
#pragma once

#include <iosfwd>
#include <string>

#include "codegen/target.h"
#include "graph/graph.h"

namespace cnnc {

struct BuildOptions {
  std::string target = "host";
  std::string output_dir;     // "" : leave the package in the cache only
  bool use_cache = true;
  bool use_tuning = true;       // apply the best schedules of the tuning database, where it has them
  std::ostream* log = nullptr;  // progress lines, or nullptr
  // `log` is a terminal: the kernel being compiled is shown on one line rewritten in place
  // (else a plain line now and then, at most one every few seconds).
  bool log_in_place = false;
  // Test builds: every buffer of the plan between guard zones checked after each kernel; a
  // kernel that writes outside its buffers fails with its name (see tests/random_nets.cpp).
  bool guard_zones = false;
  // Where to print the plan of kernels once planned (`--dump-after plan-kernels`), or nullptr.
  std::ostream* dump_kernel_plan = nullptr;
};

struct PackageResult {
  std::string dir;        // where the package is (output_dir, or the cache entry)
  std::string cache_key;
  bool from_cache = false;
  double seconds = 0;
};

// Builds (or fetches from the cache) the package of a graph that went through fuse_kernels, in
// steps: plan the kernels, choose schedules, then (unless the cache has the package) generate
// kernels, emit the plan's C, the header and the manifest, compile and link, store in the cache.
PackageResult build_package(const Graph& graph, const BuildOptions& options);

// Identifies a model's computation: the fused graph's ops, attributes, shapes and parameter
// layouts (not its file name). Stored in the manifest as "model_hash".
std::string model_fingerprint(const Graph& graph);

// $CNNC_CACHE, else $XDG_CACHE_HOME/cnnc, else ~/.cache/cnnc.
std::string cache_directory();

}  // namespace cnnc
