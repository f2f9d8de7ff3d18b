// Planning the kernels of a fused graph: which kernels a package runs, for inference and for
// training, with their arguments, gradient flags and kept tensors. No Halide here: this is a
// pass over the graph (`cnnc build --dump-after plan-kernels` prints its result), and the code
// generator (codegen.h) compiles what it plans.
//
// Every Node-level decision the package build makes from an op's name lives in
// plan_kernels.cpp, together, so that it is easy to find (and to replace by the op registry).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "graph/graph.h"

namespace cnnc {

// The tunable schedule choices of a kernel (its search space is schedule_space below). Zero
// means the target's default; `autoscheduler` replaces the hand schedule altogether.
struct ScheduleKnobs {
  int channel_vectors = 0;  // vectors of output channels (or units) in the register tile
  int pixel_tile = 0;       // output pixels (or input channels / batch rows) in the register tile
  int batch_chunks = 0;     // weight gradients: fixed batch split reduced in parallel, then summed in order
  // conv2d: "winograd" (F(2x2, 3x3)), "winograd4" (F(4x4, 3x3)), "direct"; backward also
  // "columns" / "padded" (the input gradient by GEMM and col2im / by the padded gradient
  // convolved, ops/conv2d.cpp); "": the rule.
  std::string algorithm;
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
  // Forward (inference): the node after `node` that this kernel computes too (see
  // inference_folds), writing its output, or -1; its parameters, after the node's.
  int fold = -1;
  std::vector<std::string> fold_params;
  // Forward (inference): an add (traits.inference_sum) after `node`, or after `fold`, that this
  // kernel computes too, writing its output, or -1. Its other inputs follow the node's in
  // `inputs`; its fused activation is applied after the sum.
  int residual = -1;
  // Forward (inference): a pooling after `node`, or after `fold`, that this kernel computes too
  // (pooling its value), writing its output, or -1. Never with `residual`.
  int pool = -1;
  int64_t param_floats = 0;         // Adam / Sgd: size of the flat parameter block
  bool reuses_inference_kernel = false;  // a training-forward call of the inference kernel (compiled once)
  std::string schedule;             // human-readable schedule summary, recorded in the manifest
  int64_t executed_flops = 0;       // per example, where the algorithm's work differs (Winograd); 0: the layer's
  std::string schedule_origin = "default";  // "default", "tuned" or "autoscheduler"
  ScheduleKnobs knobs;

  // The node whose output the kernel writes: the residual add or the pooling, else the folded
  // node, else its own.
  int written_node() const { return residual >= 0 ? residual : pool >= 0 ? pool : fold >= 0 ? fold : node; }
};

// Identifies a kernel's computation independently of names: its kind, op, attributes, fused ops,
// shapes and gradient flags. The tuning database is keyed by it (with the target and Halide version).
std::string kernel_signature(const Graph& graph, const KernelInfo& kernel);

// Whether a node keeps a tensor from its training forward pass for backward: with a
// fused pooling, its activation before pooling; for the loss node with a fused softmax, its logits.
bool node_keeps_saved(const Node& node, bool is_loss_node);
// Whether a node with a fused max pooling (an op with traits.pool_index: conv2d) keeps only the
// index of each window's maximum
// instead of its whole activation: non-overlapping windows (stride = size), valid padding. Its
// backward then visits only those positions (a quarter of them for 2x2 windows) where there are
// at least 8 input channels to vectorize over, else rebuilds the sparse gradient from the index.
bool saves_pool_index(const Node& node);
// The shape (per example) of the kept tensor: the pooled shape for an index (int32), else the
// node's shape before its fused pooling.
const Shape& saved_shape(const Node& node);

// For each node, the node after it that its inference kernel computes as well (-1: none): a
// node with a fold is never written at inference (Network::node_output has nothing for it), its
// value goes on inside the kernel; training keeps every kernel. Two kinds, which chain:
// * A node with traits.inference_affine (batchnorm), or an activation left a node of its own
//   (swish, gelu, ...: derivative_needs_input), is folded into the inference kernel of the node
//   before it where that node's op absorbs_affine, has no fused ops of its own, is not the output
//   and feeds nothing else: that kernel applies the affine map and the batchnorm's fused
//   activation (or the activation) to its value.
// * An add (traits.inference_sum) is folded after such a node (or after its folded batchnorm)
//   where that value feeds the add alone, once, and every other input of the add is computed
//   before that node (kernels run in node order): the kernel reads them and writes the sum with
//   the add's fused activation -- a residual block's conv, batchnorm, add and relu in one pass.
// * A max or average pooling (traits.pooling) is folded after such a node (or after its folded
//   node) where the node's op absorbs_pooling and that value feeds the pooling alone: the kernel
//   pools its value as the op's own fused pooling would (conv2d, activation: swish, maxpool).
std::vector<int> inference_folds(const Graph& graph);

// The inference kernels of a fused graph (one per non-view node except the input and the folded
// ones), in execution order.
std::vector<KernelInfo> plan_kernels(const Graph& graph);

// Why this graph cannot be trained, as the error to report at the layer at fault (none if it can):
// the loss needs a softmax output over a vector.
std::optional<UserError> training_blocker(const Graph& graph);
// The same as text ("" if it can be trained), for the manifest and the C API's error.
std::string training_unsupported_reason(const Graph& graph);

// The training kernels: training forward variants, the loss, backward kernels in reverse order,
// and the optimizer kernels. Requires training_unsupported_reason(graph) == "".
std::vector<KernelInfo> plan_training_kernels(const Graph& graph, int64_t param_floats);

// Training kernel arguments, decided by the node's op traits (used by the plan's C, emit_c.cpp).
// An op with traits.random (dropout: its mask) takes the seed and the step in its training
// forward and backward kernels.
bool kernel_takes_seed(const Node& node);
// An op with traits.training_form writes the new value of each non-trainable parameter in its
// training forward kernel, in place (batchnorm's moving statistics: two more outputs).
bool updates_state(const Node& node);
// A node that is a view while training too (it shares its input's memory and gradient): flatten.
// (Dropout is a view at inference only: while training it computes its mask.)
bool is_training_view(const Node& node);
// For each node, the node owning the memory of its output (and gradient) while training: itself,
// or for a training view the owner of its input.
std::vector<int> training_storage_owners(const Graph& graph);

// FLOPs per example of a training kernel, counted like the forward ones: a backward conv2d or
// dense does its forward FLOPs once for the weight gradient and once more for the input gradient.
int64_t training_kernel_flops(const Graph& graph, const KernelInfo& kernel);

// "forward", "forward_train", "backward", "loss", "adam" or "sgd".
const char* kernel_kind_name(KernelKind kind);

// One kernel as a line of text (`--dump-after plan-kernels`, see format_kernel_plan in plan.h):
// function, kind, node, inputs, parameters, gradient flags ("grad", "grad+" when added to
// another consumer's gradient, "-" for none), kept tensor.
std::string format_kernel(const Graph& graph, const KernelInfo& kernel);

}  // namespace cnnc
