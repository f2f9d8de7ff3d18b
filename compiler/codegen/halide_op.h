// The Halide half of an op: its forward and backward definitions with their schedules, its
// schedule space, and for an element-wise activation the function and its derivative. One file
// per op family under codegen/ops/ defines them and registers them under the op's name
// (register_halide_op), beside the op's front-end half in ops/<family>.cpp. The kernel builders
// (halide_kernels.cpp, halide_training.cpp) do everything that is the same for every op: the
// arguments, the fused epilogue (activation, pooling) and its gradient, adding gradients in place,
// the outputs. Includes Halide.h: only the Halide translation units include this.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "codegen/halide_common.h"

namespace cnnc {

// What every kernel definition works with: the graph, the kernel and its node, the target and
// its schedule parameters (with the kernel's knobs), and the pipeline being built.
struct KernelContext {
  KernelContext(const Graph& graph, const KernelInfo& kernel, const Target& target, PipelineBuild& build);

  const Graph& graph;
  const KernelInfo& kernel;
  const Node& node;
  Target target;
  ScheduleParams sched;
  bool hand = true;  // schedule by hand (false: an autoscheduler schedules the pipeline)
  PipelineBuild& build;
  // Set by an op whose algorithm does other work than the layer as written (Winograd): the FLOPs
  // per example it executes (2 per multiply-add); 0: the layer's own.
  int64_t executed_flops = 0;
};

// What an op's forward definition works with (Forward and ForwardTrain kernels): the kernel's
// input and parameter buffers, already declared as arguments. The op defines its output with
// the node's fused ops applied (an element-wise op does it through elementwise_kernel), sets what
// the kernel keeps for backward and its training state, and schedules it all where `hand` (else
// an autoscheduler will).
struct ForwardContext : KernelContext {
  ForwardContext(const Graph& graph, const KernelInfo& kernel, const Target& target, PipelineBuild& build)
      : KernelContext(graph, kernel, target, build), train(kernel.kind == KernelKind::ForwardTrain) {}

  bool train = false;  // a ForwardTrain kernel
  std::vector<ImageParam> inputs;           // one per kernel input, (c, x, y, n) or (i, n)
  std::map<std::string, ImageParam> params;  // by parameter name
  // Arguments of ops with traits.random: the seed, the step and the index of the batch's first
  // example in the global batch (data-parallel shards draw the masks one process would).
  Param<int32_t> seed{"seed"}, step{"step"}, example_offset{"example_offset"};
  // An inference kernel with a folded batchnorm (kernel.fold, see inference_folds): its
  // parameters, by name.
  std::map<std::string, ImageParam> fold_params;
  bool folded = false;  // (set by fold: checks that the op called it)
  bool pooled = false;  // (set by an op that pooled its value for kernel.pool: checks that it did)

  // The op's value with the folded nodes applied (inference_folds): a batchnorm and its fused
  // activation, or an activation node (kernel.fold), then a residual add and its fused activation
  // (kernel.residual, its other inputs in `inputs` after the node's). An op that absorbs_affine
  // calls it on its value (over (c, x, y, n) or (i, n), channels first) before its own fused ops
  // (a node with folds has none); `value` itself without a fold.
  Func fold(Func value);
  Func fold_affine(Func value);  // (kernel.fold's part)

  // Set by the op.
  Func saved;                // kernel.has_saved: the tensor kept for backward (its own output)...
  bool tuple_saved = false;  // ... or the output is a Tuple whose second value is it
  // traits.training_form, training: the new value of each non-trainable parameter, in order.
  std::vector<Func> state;
  std::string schedule;      // a one-line summary of the hand schedule, for the manifest
  Var gpu_thread{"thread"};  // (set by schedule_elementwise on GPU targets)

  const Shape& input_shape(size_t i = 0) const { return graph.nodes[kernel.inputs[i]].shape; }
  // Output channels per register tile (halide_common.h): whole vectors only.
  int channel_block(int channels) const { return cnnc::channel_block(sched, channels, sched.channel_vectors); }
  // Memory-bound kernels: vectorize the innermost dim, parallelize the outer ones.
  void schedule_elementwise(Func output, const std::vector<Var>& vars);
};

// The usual forward kernel of an element-wise or whole-tensor op over any rank: `define` gives
// the op's value at `at` (the output's coordinates, Halide order) and may add Funcs to `inner`
// that are computed per row; the node's fused activation follows, then the element-wise schedule.
Func elementwise_kernel(ForwardContext& ctx,
                        const std::function<Func(const std::vector<Var>& vars, std::vector<Func>& inner)>& define);

// A softmax over the channels (Halide dim 0, `channels` of them) of logits(c, x, y, n), as
// `activation: softmax` on a convolution: the value, and the per-pixel maximum, exponentials and
// sum it is built from (for the op's schedule).
struct ChannelSoftmax {
  Func value, max, exp, sum;
};
ChannelSoftmax channel_softmax(Func logits, int channels);

// What an op's backward definition works with: the kernel's arguments (see KernelKind::Backward)
// and `pre`, the gradient with respect to the op's own result, before its fused epilogue
// (activation, pooling, softmax), which the builder has already undone -- except behind a fused
// max pooling that kept only its indices (saves_pool_index), which the op handles itself. The
// op sets input_grads[i] for every input (Funcs over the input's dims; the builder adds them to
// a previous gradient where needed) and param_grads for every trainable parameter.
struct BackwardContext : KernelContext {
  using KernelContext::KernelContext;

  Expr batch;                                // the batch extent
  ImageParam gradient, saved, output;        // d(output), the kept tensor (if has_saved), the output
  std::vector<ImageParam> inputs;
  std::map<std::string, ImageParam> params;
  Param<int32_t> seed{"seed"}, step{"step"}, example_offset{"example_offset"};  // ops with traits.random
  Func pre;                                  // see above (undefined behind an index-keeping pooling)
  // The gradient another consumer of input 0 already wrote (undefined where there is none). An
  // op whose input_grads[0] is direct may add it itself (plus_previous, which sets
  // previous_added): the kernel then writes that buffer in place with no pass of its own.
  Func previous0;

  // Set by the op.
  std::vector<Func> input_grads;
  std::vector<std::pair<std::string, Func>> param_grads;
  bool direct_input_grad = false;  // input_grads[0] is a root Func that can be the output itself
  bool previous_added = false;     // input_grads[0] includes previous0 (with direct_input_grad)
  std::string schedule;

  // Shared pieces of backward definitions (halide_training.cpp).
  // Memory-bound passes over small tensors cost less run by one thread than the thread pool's
  // wake-up for each of them (a training step has dozens): parallel only from 4096 values per example.
  static bool worth_parallel(const Shape& shape) { return shape_elements(shape) >= 4096; }
  Func compute_root(Func f, const std::vector<Var>& vars, const Shape& shape);
  // Whether f(args) only reads a buffer at the same coordinates (e.g. `pre` with no fused
  // activation or pooling): its readers can read the buffer itself instead of a copy.
  static bool plain_read(Func f);
  // An input gradient's value at `at`, plus previous0 where there is one and `each_value_once`
  // (no value of the input gradient is computed twice, so none is added twice); sets
  // previous_added. previous_note() is the schedule description's words for it.
  Expr plus_previous(Expr value, const std::vector<Expr>& at, bool each_value_once);
  const char* previous_note() const { return previous_added ? ", added to the previous gradient as stored" : ""; }
  // The gradient through a softmax over Halide dim 0 whose output is `y`.
  Func softmax_backward(Func g, ImageParam y, const std::vector<Var>& vars);
  // Pooling backward: each activation gets the gradient of every window it is the (first)
  // maximum of, or its share of every window's average.
  Func pool_backward(Pooling pooling, Func g, Func activation, const Shape& in_shape, const Shape& out_shape,
                     const Attrs& attrs);
  void schedule_elementwise(Func f, const std::vector<Var>& vars, const Shape& shape, bool in_place = false);
};

// A weight gradient's sum over the batch and the pixels, in `count` fixed chunks of images
// reduced in parallel (one task each) and then added in order, so that the result is the same
// for any thread count (one chunk on GPU targets). For chunk k: `r` runs over width x height x
// the chunk's images, and `image` is the image r.z stands for.
struct BatchChunks {
  BatchChunks(const BackwardContext& ctx, Var k, int width, int height, const std::string& name);
  int count;
  RDom r;
  Expr image;
  // partial(0) + partial(1) + ... + partial(count - 1), in that order.
  Expr in_order(const std::function<Expr(int)>& partial) const;
};

// The Halide half of an op. forward is required of every op except views (traits.view); backward
// of every op that is not a view; activate and derivative of an activation (traits.activation).
struct HalideOp {
  std::function<Func(ForwardContext&)> forward;
  std::function<void(BackwardContext&)> backward;
  // An activation: its value, and its derivative from its own output. `attrs` are the layer's
  // (an activation layer, fused or not), or empty for a value of `activation:` on another op:
  // then the op's defaults for that use (leaky_relu: 0.2, as Keras's activation; 0.3 as a layer).
  std::function<Expr(Expr value, const Attrs& attrs)> activate;
  std::function<Expr(Expr activated, const Attrs& attrs)> derivative;
  // Knob settings cnnc tune measures for one of the op's kernels besides the default (see
  // schedule_space, codegen.h); unset: none.
  std::function<std::vector<ScheduleKnobs>(const Node& node, const KernelInfo& kernel)> schedule_space;
  // Identifies this build of the definition: part of the cache key of every package using the
  // op, so that a changed definition is never served an old package. Set it to
  // __DATE__ " " __TIME__ in the file that defines it.
  std::string stamp;
};

// Registers the Halide half of the op called `name` (its OpDef must be registered too, see
// register_op in ops/op.h). Throws std::logic_error if it already has one.
void register_halide_op(const std::string& name, HalideOp op);
// The Halide half of an op; an internal error if it has none (check_op_registry reports it first).
const HalideOp& halide_op(const OpDef& def);

// The register-tile knobs of conv2d and dense (channel_vectors x pixel_tile), without the default.
std::vector<ScheduleKnobs> register_tile_space();

// Registration hooks, one per file under codegen/ops/.
void register_conv2d_halide();
void register_dense_halide();
void register_pooling_halide();
void register_activation_halide();
void register_merge_halide();
void register_batchnorm_halide();
void register_dropout_halide();
void register_spatial_halide();
void register_depthwise_halide();

}  // namespace cnnc
