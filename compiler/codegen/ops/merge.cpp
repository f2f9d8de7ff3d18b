// The Halide half of add and concat. The ops themselves: ops/merge.cpp.
#include "codegen/halide_op.h"

namespace cnnc {

namespace {

Func add_forward(ForwardContext& ctx) {
  return elementwise_kernel(ctx, [&](const std::vector<Var>& vars, std::vector<Func>&) {
    std::vector<Expr> at = as_exprs(vars);
    Expr sum = ctx.inputs[0](at);
    for (size_t i = 1; i < ctx.inputs.size(); ++i) sum = sum + ctx.inputs[i](at);
    Func value("value");
    value(at) = sum;
    return value;
  });
}

// Where concat joins, in the Keras shape (batch excluded) and in Halide dims.
std::pair<int, int> concat_axis(const Node& node) {
  int64_t rank = int64_t(node.shape.size());
  int64_t axis = node.attrs.get_int("axis");
  int index = int(axis < 0 ? rank + axis : axis - 1);
  return {index, int(rank) - 1 - index};
}

Func concat_forward(ForwardContext& ctx) {
  return elementwise_kernel(ctx, [&](const std::vector<Var>& vars, std::vector<Func>&) {
    std::vector<Expr> at = as_exprs(vars);
    auto [index, dim] = concat_axis(ctx.node);
    // Input i covers [offset_i, offset_i + extent_i) along `dim`; later inputs override.
    Expr result;
    int offset = 0;
    for (size_t i = 0; i < ctx.inputs.size(); ++i) {
      int extent = int(ctx.input_shape(i)[size_t(index)]);
      std::vector<Expr> shifted = at;
      shifted[size_t(dim)] = clamp(at[size_t(dim)] - offset, 0, extent - 1);
      Expr value_i = ctx.inputs[i](shifted);
      result = result.defined() ? select(at[size_t(dim)] >= offset, value_i, result) : value_i;
      offset += extent;
    }
    Func value("value");
    value(at) = result;
    return value;
  });
}

void concat_backward(BackwardContext& ctx) {
  std::vector<Var> vars = make_vars(ctx.node.shape.size() + 1);
  std::vector<Expr> at = as_exprs(vars);
  auto [index, dim] = concat_axis(ctx.node);
  int offset = 0;
  for (size_t k = 0; k < ctx.inputs.size(); ++k) {
    std::vector<Expr> shifted = at;
    shifted[size_t(dim)] = at[size_t(dim)] + offset;
    Func slice(fmt::format("slice{}", k));
    slice(at) = ctx.pre(shifted);
    ctx.input_grads[k] = slice;
    offset += int(ctx.graph.nodes[ctx.node.inputs[k]].shape[size_t(index)]);
  }
}

}  // namespace

void register_merge_halide() {
  HalideOp add;
  add.stamp = __DATE__ " " __TIME__;
  add.forward = add_forward;
  add.backward = [](BackwardContext& ctx) {
    for (Func& g : ctx.input_grads) g = ctx.pre;
  };
  register_halide_op("add", add);

  HalideOp concat;
  concat.stamp = __DATE__ " " __TIME__;
  concat.forward = concat_forward;
  concat.backward = concat_backward;
  register_halide_op("concat", concat);
}

}  // namespace cnnc
