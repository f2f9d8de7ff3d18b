// Training kernels: backward of every op (hand-written, so each has its own schedule and no
// autodiff pitfalls), softmax + categorical cross-entropy, and the Adam and SGD updates.
//
// Conventions (see KernelKind in codegen.h): a backward kernel receives the gradient of its
// node's output, what the node kept from the training forward pass, the node's output and inputs
// and its parameters, and writes the gradients of its inputs and parameters. Reductions over the
// batch and the pixels run in a fixed order inside each output element, never split across
// threads, so results are bit-identical for any thread count.
//
// Tails (every channel count must work; docs/architecture.md, "Shapes a schedule must serve"):
// register tiles of channels are whole vectors (channel_block), the last one overlapping the
// one before in pure stages only; update stages vectorized over a whole row of channels guard
// their last vector (vectorize_update); a gradient accumulated in place guards its last vector;
// the batch is clamped (weight-gradient chunks) or rounded up on internal Funcs only (align_bounds).
#include "codegen/codegen.h"
#include "codegen/fast_math.h"
#include "codegen/halide_op.h"

#include <algorithm>
#include <tuple>

namespace cnnc {

namespace {

// The gradient with respect to a node's own result from the gradient of its output: undoes the
// fused epilogue (pooling, then the activation) of a conv2d / dense / add / batchnorm. Left inline:
// conv2d and dense materialize it once as `dpre`; element-wise ops use it pointwise.
Func epilogue_backward(BackwardContext& ctx) {
  const Node& node = ctx.node;
  size_t rank = node.unfused_shape.size();
  std::vector<Var> vars = make_vars(rank + 1);
  std::vector<Expr> at = as_exprs(vars);
  Func g("g");
  g(at) = ctx.gradient(at);
  if (ctx.kernel.from_logits) return g;  // the loss gave d(logits)
  bool pooled = false;
  for (auto it = node.fused.rbegin(); it != node.fused.rend(); ++it) {
    const Node::FusedOp& fused = *it;
    if (fused.def->traits.pooling != Pooling::None) {
      Func activation("activation");
      activation(at) = ctx.saved(at);
      g = ctx.pool_backward(fused.def->traits.pooling, g, activation, node.unfused_shape, node.shape, fused.attrs);
      pooled = true;
    } else if (fused.def->traits.softmax) {
      g = ctx.softmax_backward(g, ctx.output, vars);
    } else {
      // The activation's own output: kept before pooling, else the node's output.
      Expr activated = pooled ? ctx.saved(at) : ctx.output(at);
      Func d(fused.def->name + "_gradient");
      d(at) = g(at) * halide_op(*fused.def).derivative(activated, fused.attrs);
      g = d;
    }
  }
  return g;
}

class TrainingKernelBuilder {
 public:
  TrainingKernelBuilder(const Graph& graph, const KernelInfo& kernel, const Target& target, PipelineBuild& build)
      : graph_(graph), kernel_(kernel), node_(graph.nodes[kernel.node]), target_(target),
        sched_(schedule_params(target, kernel.knobs)), build_(build), hand_(build.hand) {}

  void define_all() {
    switch (kernel_.kind) {
      case KernelKind::Backward: backward(); break;
      case KernelKind::Loss: loss(); break;
      case KernelKind::Adam: adam(); break;
      case KernelKind::Sgd: sgd(); break;
      default: CNNC_ASSERT(false, "not a training kernel");
    }
    build_.schedule = hand_ ? schedule_ : "";
    build_.executed_flops = hand_ ? executed_flops_ : 0;
  }

 private:
  ImageParam batched(const Shape& shape, const std::string& name) {
    return build_.buffer(Float(32), halide_extents(shape), true, name);
  }

  // ---------------------------------------------------------------------------------------------
  // Backward: the arguments, the epilogue's gradient, then the op's backward (HalideOp::backward),
  // then the outputs: input gradients (added to a previous gradient where another consumer wrote
  // one) and parameter gradients.

  void backward() {
    BackwardContext ctx(graph_, kernel_, target_, build_);
    const Shape& given_shape = kernel_.from_logits ? node_.unfused_shape : node_.shape;
    ctx.gradient = batched(given_shape, "gradient");
    bool sparse = saves_pool_index(node_);
    int window_size = 0;  // the index's values, for the JIT timer's random data
    for (const Node::FusedOp& fused : node_.fused)
      if (fused.def->traits.pooling == Pooling::Max)
        window_size = int(fused.attrs.get_pair("size").first * fused.attrs.get_pair("size").second);
    if (kernel_.has_saved)
      ctx.saved = build_.buffer(sparse ? Int(32) : Float(32), halide_extents(saved_shape(node_)), true, "saved",
                                sparse ? window_size : 0);
    ctx.output = batched(node_.shape, "output");
    for (size_t i = 0; i < node_.inputs.size(); ++i)
      ctx.inputs.push_back(batched(graph_.nodes[node_.inputs[i]].shape, fmt::format("input{}", i)));
    for (const ParamSpec& spec : node_.params) {
      ctx.params[spec.name] = build_.buffer(Float(32), halide_extents(spec.shape), false, spec.name);
      build_.args.back().non_negative = spec.non_negative;
    }
    std::vector<ImageParam> previous(node_.inputs.size());
    for (size_t i = 0; i < node_.inputs.size(); ++i)
      if (kernel_.accumulate[i]) previous[i] = batched(graph_.nodes[node_.inputs[i]].shape, fmt::format("previous{}", i));
    if (node_.def->traits.random) {
      build_.scalar(ctx.seed, 1);
      build_.scalar(ctx.step, 1);
      build_.scalar(ctx.example_offset, 0);
    }
    // The op may add input 0's previous gradient itself where that input is used once.
    if (kernel_.accumulate[0] && hand_ && std::count(node_.inputs.begin(), node_.inputs.end(), node_.inputs[0]) == 1)
      ctx.previous0 = previous[0];
    ctx.batch = ctx.gradient.dim(int(given_shape.size())).extent();
    ctx.input_grads.resize(node_.inputs.size());
    // Behind a fused pooling that kept only its indices, the op undoes the epilogue itself.
    if (!sparse) ctx.pre = epilogue_backward(ctx);
    halide_op(*node_.def).backward(ctx);

    for (size_t i = 0; i < node_.inputs.size(); ++i) {
      if (!kernel_.input_grad[i]) continue;
      CNNC_ASSERT(ctx.input_grads[i].defined(), fmt::format("the backward of {} gives no gradient of input {}", node_.name, i));
      const Shape& shape = graph_.nodes[node_.inputs[i]].shape;
      std::vector<Var> vars = make_vars(shape.size() + 1);
      std::vector<Expr> at = as_exprs(vars);
      Func result(fmt::format("input{}_gradient", i));
      Expr sum = kernel_.accumulate[i] ? previous[i](at) + ctx.input_grads[i](at) : ctx.input_grads[i](at);
      bool alone = !kernel_.accumulate[i];
      for (size_t j = i + 1; j < node_.inputs.size(); ++j)
        if (node_.inputs[j] == node_.inputs[i]) {
          sum = sum + ctx.input_grads[j](at);  // the same tensor used again
          alone = false;
        }
      if (i == 0 && ctx.previous_added) {
        // The op added the previous gradient as it stored each value: the output is that buffer,
        // updated in place, with no pass of its own.
        CNNC_ASSERT(ctx.previous0.defined() && ctx.direct_input_grad, "a previous gradient added where there is none");
        build_.output(ctx.input_grads[i], halide_extents(shape), true);
        continue;
      }
      if (alone && i == 0 && ctx.direct_input_grad && hand_) {
        // The gradient is computed straight into the output buffer: no copy.
        build_.output(ctx.input_grads[i], halide_extents(shape), true);
        continue;
      }
      result(at) = sum;
      // Accumulating, the output is the `previous` buffer itself (updated in place): a value
      // computed twice, as an overlapping last vector would, would be added twice.
      if (hand_) ctx.schedule_elementwise(result, vars, shape, kernel_.accumulate[i]);
      build_.output(result, halide_extents(shape), true);
    }
    for (const ParamSpec& spec : node_.params) {
      if (!spec.trainable) continue;
      bool found = false;
      for (auto& [name, func] : ctx.param_grads)
        if (name == spec.name) {
          build_.output(func, halide_extents(spec.shape), false);
          found = true;
        }
      CNNC_ASSERT(found, "the backward of " + node_.name + " gives no gradient of " + spec.name);
    }
    CNNC_ASSERT(!build_.outputs.empty(), "backward kernel of " + node_.name + " computes nothing");
    schedule_ = ctx.schedule;
    executed_flops_ = ctx.executed_flops;
  }

  // ---------------------------------------------------------------------------------------------
  // Loss: softmax + categorical cross-entropy from the logits, stable (log-sum-exp).

  void loss() {
    const Node& out = node_;
    const Shape& logits_shape = kernel_.from_logits && out.def->traits.softmax ? graph_.nodes[out.inputs[0]].shape
                                                                          : out.unfused_shape;
    CNNC_ASSERT(logits_shape.size() == 1, "the loss takes a vector of logits");
    int classes = int(logits_shape[0]);
    ImageParam logits = batched(logits_shape, "logits");
    ImageParam labels = build_.buffer(Int(32), {}, true, "labels", classes);
    // Keras's label smoothing: the target is (1 - s) one-hot + s / classes.
    Param<float> smoothing("label_smoothing");
    build_.scalar(smoothing, 0.0f);
    Expr batch = logits.dim(1).extent();
    Var u("u"), n("n");
    RDom k(0, classes, "k");
    Func top("top"), total("total"), log_sum("log_sum"), gradient("logit_gradient"), loss("loss");
    top(n) = maximum(logits(k, n));
    // One pass over the logits: the sum of exp(logit - top) and, for label smoothing, of the logits.
    total(n) = Tuple(0.0f, 0.0f);
    total(n) = Tuple(total(n)[0] + vector_exp(logits(k, n) - top(n)), total(n)[1] + logits(k, n));
    // log_sum(n)[0]: log sum_k exp(logit_k); [1]: sum_k logit_k (label smoothing's term).
    log_sum(n) = Tuple(top(n) + log(total(n)[0]), total(n)[1]);
    Expr label = clamp(labels(n), 0, classes - 1);
    Expr uniform = smoothing / float(classes);
    // -sum_k target_k log p_k, with log p_k = logits_k - log_sum.
    loss(n) = log_sum(n)[0] - (1.0f - smoothing) * logits(label, n) - uniform * log_sum(n)[1];
    // (1 - s) at the label and s / classes everywhere, written as one select.
    gradient(u, n) = (vector_exp(logits(u, n) - log_sum(n)[0]) - select(u == label, 1.0f - smoothing + uniform, uniform)) /
                     cast<float>(batch);
    build_.output(gradient, {classes}, true);
    build_.output(loss, {}, true);
    loss.output_buffer().dim(0).set_min(0);
    if (!hand_) return;
    log_sum.compute_root();
    top.compute_root();
    total.compute_root();
    if (sched_.gpu) {
      for (Func f : {top, total, log_sum}) f.gpu_tile(n, Var("b"), Var("t"), 32, TailStrategy::GuardWithIf);
      loss.gpu_tile(n, Var("b"), Var("t"), 32, TailStrategy::GuardWithIf);
      gradient.gpu_tile(u, n, Var("b0"), Var("b1"), Var("t0"), Var("t1"), std::min(32, classes), 4, TailStrategy::GuardWithIf);
    }
    schedule_ = "loss: one pass per example";
  }

  // ---------------------------------------------------------------------------------------------
  // Optimizers over the flat parameter block (every parameter is trainable here).

  void adam() {
    int size = int(kernel_.param_floats);
    ImageParam p = build_.buffer(Float(32), {size}, false, "params");
    ImageParam g = build_.buffer(Float(32), {size}, false, "grads");
    ImageParam m = build_.buffer(Float(32), {size}, false, "m");
    ImageParam v = build_.buffer(Float(32), {size}, false, "v");
    build_.args.back().non_negative = true;
    Param<float> lr_t("lr_t"), beta_1("beta_1"), beta_2("beta_2"), epsilon("epsilon");
    build_.scalar(lr_t, 0.001f);
    build_.scalar(beta_1, 0.9f);
    build_.scalar(beta_2, 0.999f);
    build_.scalar(epsilon, 1e-7f);
    // Keras: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr_t m / (sqrt(v) + eps), with
    // lr_t = lr sqrt(1 - b2^t) / (1 - b1^t) computed by the caller. One Func of three values, so
    // that a single pass reads p, g, m, v and writes the three results.
    Var i("i");
    Func update("adam_update");  // one Func of three values: one pass reads p, g, m, v and writes all three
    Expr m_new = beta_1 * m(i) + (1.0f - beta_1) * g(i);
    Expr v_new = beta_2 * v(i) + (1.0f - beta_2) * g(i) * g(i);
    update(i) = Tuple(p(i) - lr_t * m_new / (sqrt(v_new) + epsilon), m_new, v_new);
    build_.output(update, {size}, false);
    schedule_optimizer(update, i);
  }

  void sgd() {
    int size = int(kernel_.param_floats);
    ImageParam p = build_.buffer(Float(32), {size}, false, "params");
    ImageParam g = build_.buffer(Float(32), {size}, false, "grads");
    ImageParam velocity = build_.buffer(Float(32), {size}, false, "velocity");
    Param<float> learning_rate("learning_rate"), momentum("momentum");
    build_.scalar(learning_rate, 0.01f);
    build_.scalar(momentum, 0.9f);
    // Keras: velocity = momentum velocity - lr g; p += velocity.
    Var i("i");
    Func update("sgd_update");
    Expr velocity_new = momentum * velocity(i) - learning_rate * g(i);
    update(i) = Tuple(p(i) + velocity_new, velocity_new);
    build_.output(update, {size}, false);
    schedule_optimizer(update, i);
  }

  void schedule_optimizer(Func f, Var i) {
    if (!hand_) return;
    Var io("io"), ii("ii");
    if (sched_.gpu) {
      f.gpu_tile(i, io, ii, 256, TailStrategy::GuardWithIf);
      schedule_ = "optimizer: gpu, 256 threads per block";
      return;
    }
    f.split(i, io, ii, 8192, TailStrategy::GuardWithIf).vectorize(ii, sched_.vector, TailStrategy::GuardWithIf).parallel(io);
    schedule_ = "optimizer: one pass, vectorized, parallel chunks of 8192";
  }

  const Graph& graph_;
  const KernelInfo& kernel_;
  const Node& node_;
  Target target_;
  ScheduleParams sched_;
  PipelineBuild& build_;
  bool hand_ = true;
  std::string schedule_;
  int64_t executed_flops_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// BackwardContext: the pieces op backward definitions share

BatchChunks::BatchChunks(const BackwardContext& ctx, Var k, int width, int height, const std::string& name)
    : count(ctx.sched.gpu ? 1 : ctx.sched.batch_chunks) {
  Expr chunk = (ctx.batch + count - 1) / count;
  r = RDom(0, width, 0, height, 0, chunk, name);
  r.where(k * chunk + r.z < ctx.batch);
  image = min(k * chunk + r.z, ctx.batch - 1);  // the clamp only bounds the region: `where` skips the rest
}

Expr BatchChunks::in_order(const std::function<Expr(int)>& partial) const {
  Expr total = partial(0);
  for (int j = 1; j < count; ++j) total = total + partial(j);
  return total;
}

// An ImageParam's reads are calls of its own wrapper Func, whose value reads the buffer.
bool BackwardContext::plain_read(Func f) {
  auto reads_args = [](const Internal::Call* call, const std::vector<std::string>& names) {
    if (!call || call->args.size() != names.size()) return false;
    for (size_t i = 0; i < names.size(); ++i) {
      const Internal::Variable* variable = call->args[i].as<Internal::Variable>();
      if (!variable || variable->name != names[i]) return false;
    }
    return true;
  };
  if (!f.defined() || f.has_update_definition() || f.outputs() != 1) return false;
  std::vector<std::string> names;
  for (const Var& v : f.args()) names.push_back(v.name());
  const Internal::Call* call = f.value().as<Internal::Call>();
  if (!reads_args(call, names)) return false;
  if (call->call_type == Internal::Call::Image) return true;
  if (call->call_type != Internal::Call::Halide || !call->func.defined()) return false;
  Internal::Function wrapper(call->func);
  if (wrapper.has_update_definition() || wrapper.values().size() != 1) return false;
  const Internal::Call* image = wrapper.values()[0].as<Internal::Call>();
  return image && image->call_type == Internal::Call::Image && reads_args(image, wrapper.args());
}

Expr BackwardContext::plus_previous(Expr value, const std::vector<Expr>& at, bool each_value_once) {
  previous_added = previous0.defined() && each_value_once;
  return previous_added ? value + previous0(at) : value;
}

Func BackwardContext::compute_root(Func f, const std::vector<Var>& vars, const Shape& shape) {
  if (!hand) return f;
  if (sched.gpu) {
    f.compute_root();
    Var block("block"), thread("thread");
    f.gpu_tile(vars[0], block, thread, std::min<int>(64, int(shape.back())), TailStrategy::GuardWithIf);
    f.gpu_blocks(vars.back());
    return f;
  }
  f.compute_root();
  if (shape.back() >= sched.vector) f.vectorize(vars[0], sched.vector);
  if (worth_parallel(shape)) f.parallel(vars.back());
  return f;
}

Func BackwardContext::softmax_backward(Func g, ImageParam y, const std::vector<Var>& vars) {
  std::vector<Expr> at = as_exprs(vars);
  int extent = int(node.shape.back());
  RDom k(0, extent, "k");
  std::vector<Expr> reduced = at;
  reduced[0] = k;
  std::vector<Var> rest(vars.begin() + 1, vars.end());
  Func dot("dot"), d("softmax_gradient");
  dot(as_exprs(rest)) = Halide::sum(g(reduced) * y(reduced));
  d(at) = y(at) * (g(at) - dot(as_exprs(rest)));
  if (!hand) return d;
  if (sched.gpu) dot.compute_root().gpu_blocks(rest.back());
  else dot.compute_root().parallel(rest.back());
  return d;
}

Func BackwardContext::pool_backward(Pooling pooling, Func g, Func activation, const Shape& in_shape,
                                    const Shape& out_shape, const Attrs& attrs) {
  auto [ph, pw] = attrs.get_pair("size");
  auto [sh, sw] = attrs.get_pair("stride");
  bool same = attrs.get_string("padding") == "same";
  int height = int(in_shape[0]), width = int(in_shape[1]);
  int out_height = int(out_shape[0]), out_width = int(out_shape[1]);
  int top = same ? same_padding_before(height, out_height, int(ph), int(sh)) : 0;
  int left = same ? same_padding_before(width, out_width, int(pw), int(sw)) : 0;
  Var c("c"), x("x"), y("y"), n("n"), px("px"), py("py");

  Func argmax("argmax");
  if (pooling == Pooling::Max) {
    Expr best_value, best_index;
    for (int dy = 0; dy < ph; ++dy)
      for (int dx = 0; dx < pw; ++dx) {
        Expr xx = px * int(sw) - left + dx, yy = py * int(sh) - top + dy;
        Expr value = activation(c, clamp(xx, 0, width - 1), clamp(yy, 0, height - 1), n);
        if (same) value = select(xx >= 0 && xx < width && yy >= 0 && yy < height, value, -std::numeric_limits<float>::infinity());
        Expr index = int(dy * pw + dx);
        if (!best_value.defined()) {
          best_value = value;
          best_index = index;
          continue;
        }
        best_index = select(value > best_value, index, best_index);  // strict: the first maximum wins
        best_value = max(best_value, value);
      }
    argmax(c, px, py, n) = best_index;
    if (!hand) {
    } else if (sched.gpu) argmax.compute_root().gpu_tile(c, px, Var("b0"), Var("b1"), Var("t0"), Var("t1"), std::min<int>(32, int(in_shape[2])), 1, TailStrategy::GuardWithIf);
    else argmax.compute_root().vectorize(c, std::min<int>(sched.vector, int(in_shape[2]))).parallel(n);
  }

  int windows_y = int((ph + sh - 1) / sh), windows_x = int((pw + sw - 1) / sw);
  Expr sum = 0.0f;
  for (int jy = 0; jy < windows_y; ++jy)
    for (int jx = 0; jx < windows_x; ++jx) {
      Expr wy = (y + top) / int(sh) - jy, wx = (x + left) / int(sw) - jx;
      Expr oy = y + top - wy * int(sh), ox = x + left - wx * int(sw);
      Expr valid = wy >= 0 && wy < out_height && wx >= 0 && wx < out_width && oy < int(ph) && ox < int(pw);
      Expr cy = clamp(wy, 0, out_height - 1), cx = clamp(wx, 0, out_width - 1);
      Expr contribution;
      if (pooling == Pooling::Max) {
        contribution = select(valid && argmax(c, cx, cy, n) == oy * int(pw) + ox, g(c, cx, cy, n), 0.0f);
      } else {
        Expr count = Expr(float(ph * pw));
        if (same) {
          Expr y0 = cy * int(sh) - top, x0 = cx * int(sw) - left;
          count = cast<float>((min(y0 + int(ph), height) - max(y0, 0)) * (min(x0 + int(pw), width) - max(x0, 0)));
        }
        contribution = select(valid, g(c, cx, cy, n) / count, 0.0f);
      }
      sum = sum + contribution;
    }
  Func d("pool_gradient");
  d(c, x, y, n) = sum;
  return d;
}

void BackwardContext::schedule_elementwise(Func f, const std::vector<Var>& vars, const Shape& shape, bool in_place) {
  if (sched.gpu) {
    Var block("block"), thread("thread");
    f.gpu_tile(vars[0], block, thread, std::min<int>(64, int(shape.back())), TailStrategy::GuardWithIf);
    f.gpu_blocks(vars.back());
    return;
  }
  if (shape.back() >= sched.vector)
    f.vectorize(vars[0], sched.vector, in_place ? TailStrategy::GuardWithIf : TailStrategy::Auto);
  if (!worth_parallel(shape)) {
  } else if (vars.size() >= 3) {
    Var both("outer");
    f.fuse(vars[vars.size() - 2], vars.back(), both).parallel(both);
  } else {
    f.parallel(vars.back());
  }
  if (schedule.empty()) schedule = "element-wise: vectorized, parallel over the outer dims";
}

std::string training_build_stamp() { return __DATE__ " " __TIME__; }

void define_training_kernel(const Graph& graph, const KernelInfo& kernel, const Target& target, PipelineBuild& build) {
  TrainingKernelBuilder builder(graph, kernel, target, build);
  builder.define_all();
}

}  // namespace cnnc
