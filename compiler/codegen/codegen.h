// Code generation: fused graph nodes to Halide pipelines, compiled ahead of time.
// This header is free of Halide; only codegen/*.cpp include Halide.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "codegen/target.h"
#include "graph/graph.h"

namespace cnnc {

// The tunable schedule choices of a kernel (its search space is schedule_space below). Zero
// means the target's default; `autoscheduler` replaces the hand schedule altogether.
struct ScheduleKnobs {
  int channel_vectors = 0;  // vectors of output channels (or units) in the register tile
  int pixel_tile = 0;       // output pixels (or input channels / batch rows) in the register tile
  int batch_chunks = 0;     // weight gradients: fixed batch split reduced in parallel, then summed in order
  std::string autoscheduler;  // "Mullapudi2016", "Adams2019", "Li2018", or "" for the hand schedule

  // "default", "channel_vectors=2 pixel_tile=6", "autoscheduler=Li2018".
  std::string str() const;
  // Parses str(); throws UserError on malformed text.
  static ScheduleKnobs parse(const std::string& text);
  bool operator==(const ScheduleKnobs& other) const { return str() == other.str(); }
};

enum class KernelKind {
  Forward,       // inference: (inputs..., params...) -> output
  ForwardTrain,  // training forward of a node that must keep something for backward, or dropout:
                 // (inputs..., params..., [seed, step: dropout]) -> output, [saved]
  Backward,      // (gradient, [saved], output, inputs..., params..., previous gradients to add to...,
                 //  [seed, step: dropout]) -> input gradients..., parameter gradients...
  Loss,          // softmax + categorical cross-entropy: (logits, labels int32) -> logit gradient, loss per example
  Adam,          // (params, grads, m, v, lr_t, beta_1, beta_2, epsilon) -> params, m, v   (flat blocks)
  Sgd,           // (params, grads, velocity, learning_rate, momentum) -> params, velocity
};

// One compiled kernel: a Halide function over float32 buffers in NHWC layout (Halide dims
// c, x, y, n; vectors: i, n), batch extent dynamic. Arguments as listed for its kind.
struct KernelInfo {
  KernelKind kind = KernelKind::Forward;
  std::string function;             // C symbol
  int node = 0;                     // graph node it computes (the output node for Loss)
  std::vector<int> inputs;          // graph nodes whose outputs it reads (views included)
  std::vector<std::string> params;  // parameter tensors of the node, in argument order
  // Backward: for each input, whether its gradient is computed, and whether it is added to a
  // gradient that another consumer of the same tensor already wrote.
  std::vector<bool> input_grad, accumulate;
  // Backward of the loss node: the gradient given is with respect to the pre-softmax logits.
  bool from_logits = false;
  // ForwardTrain / Backward: the node keeps a tensor for backward (see saved_shape).
  bool has_saved = false;
  int64_t param_floats = 0;         // Adam / Sgd: size of the flat parameter block
  bool reuses_inference_kernel = false;  // a training-forward call of the inference kernel (compiled once)
  std::string schedule;             // human-readable schedule summary, recorded in the manifest
  std::string schedule_origin = "default";  // "default", "tuned" or "autoscheduler"
  ScheduleKnobs knobs;
};

// Identifies a kernel's computation independently of names: its kind, op, attributes, fused ops,
// shapes and gradient flags. The tuning database is keyed by it (with the target and Halide version).
std::string kernel_signature(const Graph& graph, const KernelInfo& kernel);

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

// Result of timing one kernel with the Halide JIT on random data.
struct KernelTiming {
  bool ok = false;
  std::string error;                       // why it failed to compile or run
  double seconds = 0;                      // best of the repetitions
  std::vector<std::vector<float>> outputs; // every output's values (for checking candidates)
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
// This runs generated code in the calling process: a schedule that traps, crashes or loops ends
// or stops it. cnnc tune calls it only in a child process (time_kernel_in_child, child_timing.h).
KernelTiming time_kernel(const Graph& graph, const KernelInfo& kernel, const TargetInfo& target, int batch,
                         int repetitions, const std::vector<int>& check_batches = {},
                         InjectedFault fault = InjectedFault::None);

// Whether a node's output is a view of its input while training (flatten; not dropout, which
// computes a mask while training).
bool is_training_view(const Node& node);
// Whether a node keeps a tensor from its training forward pass for backward: with a
// fused pooling, its activation before pooling; for the loss node with a fused softmax, its logits.
bool node_keeps_saved(const Node& node, bool is_loss_node);
// Whether a node with a fused max pooling (an op with traits.pool_index: conv2d) keeps only the index of each window's maximum
// instead of its whole activation: non-overlapping windows (stride = size), valid padding. Its
// backward then visits only those positions (a quarter of them for 2x2 windows) where there are
// at least 8 input channels to vectorize over, else rebuilds the sparse gradient from the index.
bool saves_pool_index(const Node& node);
// The shape (per example) of the kept tensor: the pooled shape for an index (int32), else the
// node's shape before its fused pooling.
const Shape& saved_shape(const Node& node);

// The inference kernels of a fused graph (one per non-view node except the input), in execution order.
std::vector<KernelInfo> plan_kernels(const Graph& graph);

// Why this graph cannot be trained, as the error to report at the layer at fault (none if it can):
// the loss needs a softmax output over a vector, and batchnorm has no training kernels yet.
std::optional<UserError> training_blocker(const Graph& graph);
// The same as text ("" if it can be trained), for the manifest and the C API's error.
std::string training_unsupported_reason(const Graph& graph);

// The training kernels: training forward variants, the loss, backward kernels in reverse order,
// and the optimizer kernels. Requires training_unsupported_reason(graph) == "".
std::vector<KernelInfo> plan_training_kernels(const Graph& graph, int64_t param_floats);

// Compiles every kernel into one object file without a Halide runtime, and the target's
// standalone Halide runtime into another. Records each kernel's schedule in `kernels`.
void compile_kernels(const Graph& graph, std::vector<KernelInfo>& kernels, const TargetInfo& target,
                     const std::string& kernels_object, const std::string& runtime_object);

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
