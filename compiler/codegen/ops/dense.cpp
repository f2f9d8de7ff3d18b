// dense's Halide half: the forward kernel with its fused activation (softmax included), the
// backward kernel, and their schedule space. The op itself: ops/dense.cpp.
#include "codegen/fast_math.h"
#include "codegen/halide_op.h"

namespace cnnc {

namespace {

// dense + bias, then the fused activation (softmax included).
Func dense_forward(ForwardContext& ctx) {
  int inputs = int(ctx.input_shape()[0]), units = int(ctx.node.shape[0]);
  Var u("u"), n("n");
  RDom r(0, inputs, "r");
  Func acc("acc");
  acc(u, n) = ctx.node.attrs.get_bool("use_bias") ? ctx.params.at("bias")(u) : Expr(0.0f);
  acc(u, n) += ctx.params.at("kernel")(u, r) * ctx.inputs[0](r, n);

  Func value("value");
  value(u, n) = acc(u, n);
  value = ctx.fold(value);  // the nodes folded into this inference kernel (inference_folds)
  bool softmax = false;
  for (const Node::FusedOp& fused : ctx.node.fused) {
    if (fused.def->traits.softmax) {
      softmax = true;
      continue;
    }
    Func activated(fused.def->name);
    activated(u, n) = halide_op(*fused.def).activate(value(u, n), fused.attrs);
    value = activated;
  }
  Func output("output");
  Func logits = value;
  Func maximum_("max"), exps("exp"), sum_("sum");
  if (softmax) {
    logits = Func("logits");
    logits(u, n) = value(u, n);
    RDom k(0, units, "k");
    maximum_(n) = maximum(logits(k, n));
    exps(u, n) = vector_exp(logits(u, n) - maximum_(n));
    sum_(n) = Halide::sum(exps(k, n));
    output(u, n) = exps(u, n) / sum_(n);
  } else {
    output(u, n) = value(u, n);
  }
  Func tiled = softmax ? logits : output;  // the Func that carries the matrix product's schedule
  if (softmax && ctx.train) ctx.saved = logits;  // the loss starts from the logits
  if (!ctx.hand) return output;

  if (ctx.sched.gpu) {
    Var uo("uo"), no("no"), ui("ui"), ni("ni");
    tiled.gpu_tile(u, n, uo, no, ui, ni, std::min(64, units), 1, TailStrategy::GuardWithIf);
    acc.compute_at(tiled, ui);
    if (softmax) {
      if (!ctx.train) logits.compute_root();
      output.gpu_tile(u, n, uo, no, ui, ni, std::min(64, units), 1, TailStrategy::GuardWithIf);
      maximum_.compute_at(output, ui);
      sum_.compute_at(output, ui);
    }
    ctx.schedule = "gpu: one thread per output";
    return output;
  }
  // Register tile: `block` units x `rows` examples (8 or the tuned pixel_tile, fewer where the
  // registers run out);
  // weights for a block of units are a contiguous vector, each input value is broadcast. Small
  // batches use one row per task.
  int block = ctx.channel_block(units), vec = std::min(ctx.sched.vector, block);
  int vectors = (block + vec - 1) / vec;
  int rows = std::max(1, std::min(ctx.sched.pixel_tile_tuned ? ctx.sched.pixel_tile : 8, (ctx.sched.registers - vectors - 1) / vectors));
  Var uo("uo"), ui("ui"), no("no"), ni("ni");
  tiled.split(u, uo, ui, block).vectorize(ui, vec).unroll(ui);
  if (!softmax) {
    Expr batch = output.output_buffer().dim(1).extent();
    tiled.specialize(batch >= rows).split(n, no, ni, rows).reorder(ui, ni, uo, no).unroll(ni).parallel(no);
  }
  tiled.reorder(ui, uo, n).parallel(n);
  acc.compute_at(tiled, uo).vectorize(u, vec).unroll(u);
  acc.update().reorder(u, n, r).vectorize(u, vec).unroll(u);
  if (softmax) {
    if (!ctx.train) logits.compute_root();
    output.parallel(n);
    maximum_.compute_at(output, n);
    sum_.compute_at(output, n);
    exps.compute_at(output, n);
  }
  ctx.schedule = fmt::format("cpu: register tile {} units x {} examples", block, softmax ? 1 : rows);
  return output;
}

// dense: d(bias)(u) = sum over the batch; d(kernel)(u, i) = sum over the batch of pre * input;
// d(input)(i, n) = sum over u of w(u, i) * pre(u, n).
void dense_backward(BackwardContext& ctx, Func pre, ImageParam input, std::map<std::string, ImageParam>& params, Func& input_grad,
                    std::vector<std::pair<std::string, Func>>& param_grads) {
  int features = int(ctx.graph.nodes[ctx.node.inputs[0]].shape[0]), units = int(ctx.node.shape[0]);
  Var u("u"), i("i"), n("n");
  Func dpre("dpre");
  dpre(u, n) = pre(u, n);
  ctx.compute_root(dpre, {u, n}, ctx.node.shape);
  RDom examples(0, ctx.batch, "examples");
  int block = channel_block(ctx.sched, units, ctx.sched.channel_vectors), vec = std::min(block, ctx.sched.vector);
  if (ctx.node.attrs.get_bool("use_bias")) {
    Func bias_sum("bias_sum"), bias_grad("bias_gradient");
    bias_sum(u) = 0.0f;
    bias_sum(u) += dpre(u, examples);
    bias_grad(u) = bias_sum(u);
    if (!ctx.hand) {
    } else if (ctx.sched.gpu) {
      bias_grad.gpu_tile(u, Var("b"), Var("t"), std::min(64, units), TailStrategy::GuardWithIf);
      bias_sum.compute_at(bias_grad, Var("t"));
    } else {
      bias_sum.compute_at(bias_grad, Var::outermost()).vectorize(u, vec);
      vectorize_update(bias_sum.update(), u, vec, units);
    }
    param_grads.emplace_back("bias", bias_grad);
  }
  Func kernel_sum("kernel_sum"), kernel_grad("kernel_gradient");
  kernel_sum(u, i) = 0.0f;
  kernel_sum(u, i) += dpre(u, examples) * input(i, examples);
  kernel_grad(u, i) = kernel_sum(u, i);
  int in_tile = std::min(features, ctx.sched.pixel_tile);
  if (!ctx.hand) {
  } else if (ctx.sched.gpu) {
    kernel_grad.gpu_tile(u, i, Var("b0"), Var("b1"), Var("t0"), Var("t1"), std::min(32, units), 4, TailStrategy::GuardWithIf);
    kernel_sum.compute_at(kernel_grad, Var("t0"));
  } else {
    Var uo("uo"), ui("ui"), io("io"), ii("ii");
    kernel_grad.split(u, uo, ui, block).split(i, io, ii, in_tile).reorder(ui, ii, uo, io).vectorize(ui, vec)
        .unroll(ui).unroll(ii).parallel(io);
    kernel_sum.compute_at(kernel_grad, uo).vectorize(u, vec).unroll(u).unroll(i);
    kernel_sum.update().reorder(u, i, examples).vectorize(u, vec).unroll(u).unroll(i);
  }
  param_grads.emplace_back("kernel", kernel_grad);

  if (!ctx.kernel.input_grad[0]) return;
  const ImageParam& weights = params.at("kernel");
  if (!ctx.sched.gpu && ctx.hand) {
    // d(input) as a GEMM with the batch vectorized: acc(n, i) = sum over u of pre(u, n) * w(u, i).
    // A register tile of `block` examples x `tile` features takes each weight as a broadcast
    // operand of the FMAs (both operands are contiguous over the units as stored), then one
    // cheap transpose writes d(input)(i, n). The batch is rounded up to whole tiles (the extra
    // rows repeat the last example and are never stored).
    int lanes = ctx.sched.vector, batch_block = ctx.sched.channel_vectors * lanes;
    int tile = std::min(features, pick_tile(features, ctx.sched.pixel_tile, ctx.sched.channel_vectors, ctx.sched.registers));
    Var no("no"), ni("ni"), nio("nio"), nii("nii"), io("io"), ii("ii");
    Func pre_t("pre_by_example"), input_acc("input_acc"), input_t("input_gradient_by_example");
    pre_t(n, u) = dpre(u, clamp(n, 0, ctx.batch - 1));
    RDom r(0, units, "r");
    input_acc(n, i) = 0.0f;
    input_acc(n, i) += pre_t(n, r) * weights(r, i);
    input_t(n, i) = input_acc(n, i);
    input_grad = Func("input_gradient");
    input_grad(i, n) = input_t(n, i);
    pre_t.compute_root().align_bounds(n, batch_block).vectorize(n, lanes);
    input_t.compute_root().align_bounds(n, batch_block).split(n, no, ni, batch_block).split(i, io, ii, tile)
        .reorder(ni, ii, no, io).split(ni, nio, nii, lanes).vectorize(nii).unroll(nio).unroll(ii).parallel(io);
    input_acc.compute_at(input_t, no).vectorize(n, lanes).unroll(n).unroll(i);
    input_acc.update().reorder(n, i, r).vectorize(n, lanes).unroll(n).unroll(i);
    input_grad.compute_root().vectorize(i, std::min(lanes, features)).parallel(n);
    ctx.direct_input_grad = true;
    ctx.schedule += fmt::format("; input gradient: GEMM over {} examples x {} features, then transposed", batch_block, tile);
    return;
  }
  Func transposed("transposed");
  transposed(i, u) = weights(u, i);
  RDom r(0, units, "r");
  Func input_sum("input_sum");
  input_sum(i, n) = 0.0f;
  input_sum(i, n) += transposed(i, r) * dpre(r, n);
  input_grad = Func("input_gradient");
  input_grad(i, n) = input_sum(i, n);
  if (!ctx.hand) return;  // (an autoscheduler's; the CPU hand schedule returned above)
  transposed.compute_root();
  input_grad.compute_root().gpu_tile(i, n, Var("b0"), Var("b1"), Var("t0"), Var("t1"), std::min(64, features), 1,
                                     TailStrategy::GuardWithIf);
  input_sum.compute_at(input_grad, Var("t0"));
}

}  // namespace

void register_dense_halide() {
  HalideOp op;
  op.stamp = __DATE__ " " __TIME__;
  op.forward = dense_forward;
  op.backward = [](BackwardContext& ctx) {
    dense_backward(ctx, ctx.pre, ctx.inputs[0], ctx.params, ctx.input_grads[0], ctx.param_grads);
  };
  op.schedule_space = [](const Node&, const KernelInfo&) { return register_tile_space(); };
  register_halide_op("dense", op);
}

}  // namespace cnnc
