// Code generation: fused graph nodes to Halide pipelines, compiled ahead of time.
// This header is free of Halide; only codegen/*.cpp include Halide.h.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "codegen/plan_kernels.h"
#include "codegen/target.h"
#include "graph/graph.h"

namespace cnnc {

// The explicit search space of a kernel on a target: the knob settings `cnnc tune` measures,
// the default first. Autoscheduler candidates are added by the tuner.
std::vector<ScheduleKnobs> schedule_space(const Graph& graph, const KernelInfo& kernel, const TargetInfo& target);

// What `cnnc tune` measures for a kernel: its schedule space, then each of `autoschedulers` --
// except for a backward kernel that adds to another consumer's gradient, which the package
// updates in place: a schedule computing some values twice (an overlapping last vector) would
// add them twice, which the hand schedules guard against and timing with separate buffers
// cannot see. cnnc build does not apply an autoscheduler's schedule to such a kernel either.
std::vector<ScheduleKnobs> tuning_candidates(const Graph& graph, const KernelInfo& kernel, const TargetInfo& target,
                                             const std::vector<std::string>& autoschedulers);
bool adds_in_place(const KernelInfo& kernel);
// The kernels `cnnc tune` measures, in the order it measures them: one per signature, those with
// the most work first (their FLOPs per example, times how many kernels of the plan share the
// signature), so that a short budget goes where a step spends its time; memory-bound kernels
// (no FLOPs) last, in plan order. Each with its signature.
std::vector<std::pair<KernelInfo, std::string>> tuning_order(const Graph& graph, const std::vector<KernelInfo>& kernels);

// Result of timing one kernel with the Halide JIT on random data.
struct KernelTiming {
  bool ok = false;
  std::string error;                       // why it failed to compile or run
  double seconds = 0;                      // best of the repetitions
  double baseline_seconds = 0;             // paired timing: the baseline's best, timed alternately (0: none)
  std::vector<std::vector<float>> outputs; // every output's values (for checking candidates)
  std::string schedule;                    // the hand schedule's summary (KernelInfo::schedule)
};
// Test-only: a fault time_kernel commits on purpose right after the kernel's first run, as a
// broken schedule would (cnnc tune's CNNC_TUNE_TEST_FAULT; see child_timing.h). Abort raises
// SIGABRT, Segv touches an unmapped page, Hang never returns, OutOfBounds writes one value just
// past the end of the first output. Never set outside tests.
enum class InjectedFault { None, Abort, Segv, Hang, OutOfBounds };

// Compiles `kernel` with its knobs for `target` (which must run here) with the JIT and times it
// at `batch` examples, best of `repetitions` after a warm-up. Inputs are seeded random data.
// Then runs it once at each of `check_batches` (outputs appended after the timed run's): a
// schedule that fails at any of them is not ok. Every output buffer lies between two guard zones
// filled with a canary pattern, checked after every run: a schedule that writes outside its
// output is not ok ("wrote outside its output").
//
// With a `baseline` (the same kernel with other knobs, compiled by compile_baseline: cnnc tune's
// default schedule), their repetitions alternate, baseline then kernel, on the same inputs: the
// ratio of the two bests (`baseline_seconds`) holds where the machine's speed drifts between
// processes (on the shared 2-vCPU machines here, the same kernel timed in processes seconds apart
// varied by up to 1.6x; a ratio taken milliseconds apart does not see that drift).
//
// This runs generated code in the calling process: a schedule that traps, crashes or loops ends
// or stops it. cnnc tune calls it only in a child process (time_kernel_in_child, child_timing.h).
struct CompiledBaseline;  // a JIT-compiled pipeline and its arguments (halide_kernels.cpp)
KernelTiming time_kernel(const Graph& graph, const KernelInfo& kernel, const TargetInfo& target, int batch,
                         int repetitions, const std::vector<int>& check_batches = {},
                         InjectedFault fault = InjectedFault::None, const CompiledBaseline* baseline = nullptr);

// Compiles `kernel` (with its knobs) with the JIT for time_kernel's paired timing, without running
// it: cnnc tune compiles the default schedule once per kernel, and each candidate's child process
// inherits it (fork), instead of compiling it again.
std::shared_ptr<const CompiledBaseline> compile_baseline(const Graph& graph, const KernelInfo& kernel,
                                                         const TargetInfo& target);

// Compiles every kernel into one object file without a Halide runtime, and the target's
// standalone Halide runtime into another. Records each kernel's schedule in `kernels`.
// `progress`, if set, is called before each kernel is compiled, with its number (1-based) among
// the `count` compiled and the kernel, then once with (count + 1, count, nullptr) before the
// machine code of them all is generated.
using CompileProgress = std::function<void(size_t number, size_t count, const KernelInfo* kernel)>;
void compile_kernels(const Graph& graph, std::vector<KernelInfo>& kernels, const TargetInfo& target,
                     const std::string& kernels_object, const std::string& runtime_object,
                     const CompileProgress& progress = {});

// Every registered op (ops/op.h) has the Halide half its traits call for (codegen/halide_op.h):
// a forward and a backward definition unless it is a view, an activation function and its
// derivative for an activation; and every Halide half belongs to an op. The problems found, as
// sentences ("op 'x' has no Halide backward"); check_op_registry raises an InternalError naming
// them. cnnc runs the check at start-up, the tests before they start.
std::vector<std::string> op_registry_problems();
// The build stamps (HalideOp::stamp) of the Halide halves of every op a graph uses, fused ones
// included: part of its packages' cache key.
std::string op_build_stamps(const Graph& graph);
void check_op_registry();

// The Halide version cnnc generates code with, e.g. "14.0.0".
std::string halide_version();
// Identifies this build of the code generator; part of every package's cache key.
std::string codegen_build_stamp();

}  // namespace cnnc
