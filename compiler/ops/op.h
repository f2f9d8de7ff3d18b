// The op interface: what the compiler knows about each kind of layer, independent of code generation.
//
// An op is one OpDef: data plus hooks, registered once (ops/<family>.cpp) and found by the
// compiler through the OpDef itself, never by comparing names. The data (name, attribute schema,
// input arity) drives the front end: unknown attributes, wrong types, missing required values and
// defaults are all handled from the schema, so an op never parses YAML itself. The hooks infer the
// output shape, list the parameter tensors with their initializers and count FLOPs; the traits
// tell the later passes how to fuse, store and train it. The op's Halide half (forward,
// backward, schedule space) is registered under the same name in compiler/codegen/ops/ (kept out
// of here so that the front end and the tests that use it never include Halide.h); the two are
// checked against each other at start-up (check_op_registry, codegen.h).
//
// Shapes are per example, batch excluded: [H, W, C] for images, [N] for vectors.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "support/diagnostics.h"

namespace cnnc {

using Shape = std::vector<int64_t>;

// "(None, 26, 26, 32)": the Keras way of printing a shape with its dynamic batch.
std::string shape_str(const Shape& shape);
// Number of elements, saturating at INT64_MAX instead of overflowing.
int64_t shape_elements(const Shape& shape);
// a * b, saturating at INT64_MAX for non-negative operands.
int64_t saturating_mul(int64_t a, int64_t b);

// Tensors beyond 2^31 elements are rejected: no sane CNN needs them, and the kernels index with int32.
constexpr int64_t kMaxTensorElements = int64_t(1) << 31;

enum class AttrKind {
  Int,      // integer
  IntPair,  // integer or [a, b]: kernel sizes, strides (stored as a pair)
  Float,    // number
  Bool,     // true / false
  Enum,     // one of AttrSpec::choices
  Padding,  // n, [h, w] or [[top, bottom], [left, right]] (stored as {top, bottom, left, right})
};

using Padding4 = std::array<int64_t, 4>;  // top, bottom, left, right
using AttrValue = std::variant<int64_t, std::pair<int64_t, int64_t>, double, bool, std::string, Padding4>;

struct AttrSpec {
  AttrSpec(std::string name_, AttrKind kind_, bool required_ = false)
      : name(std::move(name_)), kind(kind_), required(required_) {}

  std::string name;
  AttrKind kind = AttrKind::Int;
  bool required = false;
  AttrValue default_value{int64_t(0)};
  // Int and IntPair: inclusive bounds. Float: bounds, with max exclusive when max_exclusive.
  double min = 1, max = 2147483647.0;
  bool max_exclusive = false;
  std::vector<std::string> choices;  // Enum only
  bool activation_choices = false;   // Enum: choices are activation_names() (see activation_attr)
  std::string help;                  // one line, for docs and error messages
};

// Attribute values of one layer, complete: the front end fills every default.
class Attrs {
 public:
  void set(const std::string& key, AttrValue value, SourceLoc loc);
  bool has(const std::string& key) const { return values_.count(key) != 0; }

  int64_t get_int(const std::string& key) const;
  std::pair<int64_t, int64_t> get_pair(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const Padding4& get_padding(const std::string& key) const;
  // Where the user wrote this attribute; the layer's own position when it came from a default.
  const SourceLoc* loc(const std::string& key) const;

  const std::map<std::string, AttrValue>& values() const { return values_; }

 private:
  const AttrValue& get(const std::string& key) const;
  std::map<std::string, AttrValue> values_;
  std::map<std::string, SourceLoc> locs_;
};

// A shape that does not work for this op. `attr` names the attribute at fault ("" for the inputs),
// so the error can point at the line where the user wrote it.
struct ShapeError {
  std::string message;
  std::string attr;
};

// How a parameter tensor starts, as in Keras: the op declares it, the manifest records it and
// the runtime applies it (cnnc train without --resume).
enum class Initializer {
  Zeros,
  Ones,
  GlorotUniform,  // uniform in +-sqrt(6 / (fan_in + fan_out)); the fans of [kh, kw, in, out] or [in, out]
};
// "zeros", "ones", "glorot_uniform": the Keras names, as in manifest.json.
const char* initializer_name(Initializer initializer);

// A parameter tensor of a layer, e.g. conv2d's "kernel" [kh, kw, cin, filters] and "bias" [filters].
struct ParamSpec {
  std::string name;
  Shape shape;
  bool trainable = true;
  Initializer initializer = Initializer::Zeros;
  bool non_negative = false;  // its values are never negative (a variance): tuning's random inputs respect it
};

// A window reduction over H and W (maxpool2d, avgpool2d).
enum class Pooling { None, Max, Average };

// How the passes after shape inference treat an op, beyond its math. All false for a plain op
// with its own kernel in inference and training, which is what a new op gets by default.
struct OpTraits {
  // Fusion (graph/fuse_kernels.cpp). An element-wise activation is a value of `activation:` and,
  // as a layer right after an op that takes_activation, becomes part of that op's kernel.
  bool activation = false;
  // An activation whose derivative needs its input, not only its output (swish, gelu,
  // hard_swish): never fused into the op before it; as a value of `activation:` it becomes a
  // node of its own after that op (fuse_kernels), whose backward reads its input.
  bool derivative_needs_input = false;
  // The softmax over the last axis: a value of `activation:` (fused only that way), and what a
  // classifier trained with categorical cross-entropy must end in.
  bool softmax = false;
  bool takes_activation = false;    // a following activation layer fuses into its kernel
  Pooling pooling = Pooling::None;  // a pooling: fuses into a preceding op that absorbs_pooling
  bool absorbs_pooling = false;
  // With an absorbed non-overlapping max pooling, training keeps only where each window's maximum
  // is, and backward visits those positions alone (conv2d; see saves_pool_index in codegen.h).
  bool pool_index = false;
  // Memory (codegen planning). A view's output is its input reinterpreted: no kernel, one buffer.
  bool view = false;               // always (flatten)
  bool view_at_inference = false;  // at inference only; computes while training (dropout)
  // Training. Its training forward differs from inference (own kernel); that kernel also writes
  // the new value of every non-trainable parameter, in place (batchnorm's moving statistics).
  bool training_form = false;
  bool random = false;  // training kernels take the model's seed and step (dropout)
  // Inference. At inference the op is a per-channel affine map of its one input, (x - moving_mean)
  // * gamma / sqrt(moving_variance + epsilon) + beta (batchnorm): folded into the inference kernel
  // of an op before it that absorbs_affine, together with its fused activation (see
  // inference_folds, codegen/plan_kernels.h). Training keeps the two kernels. (An activation
  // left a node of its own, derivative_needs_input, is folded the same way.)
  bool inference_affine = false;
  bool absorbs_affine = false;  // conv2d, depthwise_conv2d, separable_conv2d, dense
  // The element-wise sum of its inputs (add): at inference, folded with its fused activation into
  // the kernel of an op that absorbs_affine whose value (after its folded batchnorm, if any) is
  // one of the inputs, the others read there (a residual block's shortcut; inference_folds).
  bool inference_sum = false;
};

struct OpDef {
  std::string name;     // as written in YAML: "conv2d"
  std::string summary;  // one line
  std::vector<AttrSpec> attrs;
  int min_inputs = 1;
  int max_inputs = 1;  // -1: any number
  int input_rank = 0;  // required rank of every input; 0: any

  // Output shape from the input shapes; throws ShapeError when the inputs do not fit.
  std::function<Shape(const std::vector<Shape>& inputs, const Attrs& attrs)> infer_shape;
  // Parameter tensors, in checkpoint order. Empty for ops without parameters.
  std::function<std::vector<ParamSpec>(const std::vector<Shape>& inputs, const Attrs& attrs)> params;
  // Forward floating-point operations per example: 2 per multiply-accumulate in conv2d and dense,
  // about 1 per element visited elsewhere.
  std::function<int64_t(const std::vector<Shape>& inputs, const Shape& output, const Attrs& attrs)> flops;
  // FLOPs per example of its backward kernel, from the forward FLOPs and whether an input gradient
  // is computed; unset: the forward FLOPs (conv2d and dense: twice them with an input gradient).
  std::function<int64_t(int64_t forward_flops, bool input_gradient)> backward_flops;
  OpTraits traits;

  const AttrSpec* find_attr(const std::string& key) const;
};

// Every op of the model language, built-in ones in documentation order, then any added with
// register_op. The OpDefs never move: a pointer to one identifies the op for good.
std::vector<const OpDef*> all_ops();
// The op called `name`, or nullptr.
const OpDef* find_op(const std::string& name);
std::vector<std::string> op_names();
// Adds an op to the language (the built-in ones register themselves; tests add toy ops). Call it
// before compiling a model that uses it, together with its Halide half (register_halide_op,
// codegen/halide_op.h). Throws std::logic_error if the name is taken.
const OpDef& register_op(OpDef op);

// Values accepted by `activation:` on conv2d and dense: "linear" and "none" (no activation),
// then every op with the activation or softmax trait.
const std::vector<std::string>& activation_names();

// Registration hooks, one per op family file (ops/<family>.cpp).
void register_conv_ops(std::vector<OpDef>& ops);
void register_pooling_ops(std::vector<OpDef>& ops);
void register_dense_ops(std::vector<OpDef>& ops);
void register_activation_ops(std::vector<OpDef>& ops);
void register_shape_ops(std::vector<OpDef>& ops);
void register_normalization_ops(std::vector<OpDef>& ops);
void register_merge_ops(std::vector<OpDef>& ops);

// Shared attribute specs. activation_attr's choices are activation_names(), filled in once every
// built-in op is registered.
AttrSpec activation_attr();
AttrSpec padding_attr();
// Keras output size of a sliding window along one axis (valid: floor, same: ceil).
int64_t window_output_size(int64_t input, int64_t window, int64_t stride, const std::string& padding);
// Keras 'same' padding along one axis for a window spanning `span` inputs: (before, after), the
// odd one after (ONNX's SAME_UPPER), so that the output is ceil(input / stride).
std::pair<int64_t, int64_t> same_padding(int64_t input, int64_t span, int64_t stride);

}  // namespace cnnc
