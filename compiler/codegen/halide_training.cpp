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
#include "codegen/halide_common.h"

#include <tuple>

namespace cnnc {

namespace {

Expr activation_derivative(const std::string& op, Expr activated) {
  if (op == "relu") return select(activated > 0.0f, 1.0f, 0.0f);
  if (op == "sigmoid") return activated * (1.0f - activated);
  if (op == "tanh") return 1.0f - activated * activated;
  CNNC_ASSERT(false, "no derivative for " + op);
}

class BackwardBuilder {
 public:
  BackwardBuilder(const Graph& graph, const KernelInfo& kernel, const Target& target, PipelineBuild& build)
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
  }

 private:
  ImageParam batched(const Shape& shape, const std::string& name) {
    return build_.buffer(Float(32), halide_extents(shape), true, name);
  }

  // ---------------------------------------------------------------------------------------------
  // Backward

  void backward() {
    const Shape& given_shape = kernel_.from_logits ? node_.unfused_shape : node_.shape;
    ImageParam gradient = batched(given_shape, "gradient");
    ImageParam saved;
    bool sparse = saves_pool_index(node_);
    int window_size = 0;  // the index's values, for the JIT timer's random data
    for (const Node::FusedOp& fused : node_.fused)
      if (fused.op == "maxpool2d") window_size = int(fused.attrs.get_pair("size").first * fused.attrs.get_pair("size").second);
    if (kernel_.has_saved)
      saved = build_.buffer(sparse ? Int(32) : Float(32), halide_extents(saved_shape(node_)), true, "saved",
                            sparse ? window_size : 0);
    ImageParam output = batched(node_.shape, "output");
    std::vector<ImageParam> inputs;
    for (size_t i = 0; i < node_.inputs.size(); ++i)
      inputs.push_back(batched(graph_.nodes[node_.inputs[i]].shape, fmt::format("input{}", i)));
    std::map<std::string, ImageParam> params;
    for (const ParamSpec& spec : node_.params)
      params[spec.name] = build_.buffer(Float(32), halide_extents(spec.shape), false, spec.name);
    std::vector<ImageParam> previous(node_.inputs.size());
    for (size_t i = 0; i < node_.inputs.size(); ++i)
      if (kernel_.accumulate[i]) previous[i] = batched(graph_.nodes[node_.inputs[i]].shape, fmt::format("previous{}", i));
    Param<int32_t> seed("seed"), step("step");
    if (node_.op == "dropout") {
      build_.scalar(seed, 1);
      build_.scalar(step, 1);
    }
    batch_ = gradient.dim(int(given_shape.size())).extent();

    // The op itself: gradients of the inputs (as Funcs over the input's dims) and parameters,
    // from the gradient with respect to the node's own op, before its fused epilogue.
    std::vector<Func> input_grads(node_.inputs.size());
    std::vector<std::pair<std::string, Func>> param_grads;
    const std::string& op = node_.op;
    bool at_maxima = sparse && graph_.nodes[node_.inputs[0]].shape[2] >= 8;
    if (at_maxima) {
      conv_backward_at_maxima(gradient, saved, output, inputs[0], params, input_grads[0], param_grads);
    } else if (Func pre = sparse ? gradient_from_index(gradient, saved, output) : epilogue_backward(gradient, saved, output);
               op == "conv2d") {
      conv_backward(pre, inputs[0], params, input_grads[0], param_grads);
    } else if (op == "dense") {
      dense_backward(pre, inputs[0], params, input_grads[0], param_grads);
    } else {
      elementwise_backward(pre, output, inputs, params, seed, step, input_grads, param_grads);
    }

    for (size_t i = 0; i < node_.inputs.size(); ++i) {
      if (!kernel_.input_grad[i]) continue;
      const Shape& shape = graph_.nodes[node_.inputs[i]].shape;
      std::vector<Var> vars = make_vars(shape.size() + 1);
      std::vector<Expr> at = as_exprs(vars);
      Func result(fmt::format("input{}_gradient", i));
      Expr sum = kernel_.accumulate[i] ? previous[i](at) + input_grads[i](at) : input_grads[i](at);
      bool alone = !kernel_.accumulate[i];
      for (size_t j = i + 1; j < node_.inputs.size(); ++j)
        if (node_.inputs[j] == node_.inputs[i]) {
          sum = sum + input_grads[j](at);  // the same tensor used again
          alone = false;
        }
      if (alone && i == 0 && direct_input_grad_ && hand_) {
        // The gradient is computed straight into the output buffer: no copy.
        build_.output(input_grads[i], halide_extents(shape), true);
        continue;
      }
      result(at) = sum;
      // Accumulating, the output is the `previous` buffer itself (updated in place): a value
      // computed twice, as an overlapping last vector would, would be added twice.
      if (hand_) schedule_elementwise(result, vars, shape, kernel_.accumulate[i]);
      build_.output(result, halide_extents(shape), true);
    }
    for (const ParamSpec& spec : node_.params)
      for (auto& [name, func] : param_grads)
        if (name == spec.name) build_.output(func, halide_extents(spec.shape), false);
    CNNC_ASSERT(!build_.outputs.empty(), "backward kernel of " + node_.name + " computes nothing");
  }

  // Undoes the fused epilogue (pooling, then the activation) of a conv2d / dense / add / batchnorm.
  Func epilogue_backward(ImageParam gradient, ImageParam saved, ImageParam output) {
    size_t rank = node_.unfused_shape.size();
    std::vector<Var> vars = make_vars(rank + 1);
    std::vector<Expr> at = as_exprs(vars);
    Func g("g");
    g(at) = gradient(at);
    if (kernel_.from_logits) return g;  // the loss gave d(logits)
    bool pooled = false;
    for (auto it = node_.fused.rbegin(); it != node_.fused.rend(); ++it) {
      const Node::FusedOp& fused = *it;
      if (fused.op == "maxpool2d" || fused.op == "avgpool2d") {
        Func activation("activation");
        activation(at) = saved(at);
        g = pool_backward(fused.op, g, activation, node_.unfused_shape, node_.shape, fused.attrs);
        pooled = true;
      } else if (fused.op == "softmax") {
        g = softmax_backward(g, output, vars);
      } else {
        // The activation's own output: kept before pooling, else the node's output.
        Expr activated = pooled ? saved(at) : output(at);
        Func d(fused.op + "_gradient");
        d(at) = g(at) * activation_derivative(fused.op, activated);
        g = d;
      }
    }
    // Left inline: conv2d and dense materialize it once as `dpre`; element-wise ops use it pointwise.
    return g;
  }

  // Memory-bound passes over small tensors cost less run by one thread than the thread pool's
  // wake-up for each of them (a training step has dozens): parallel only from 4096 values per example.
  static bool worth_parallel(const Shape& shape) { return shape_elements(shape) >= 4096; }

  Func compute_root(Func f, const std::vector<Var>& vars, const Shape& shape) {
    if (!hand_) return f;
    if (sched_.gpu) {
      f.compute_root();
      Var block("block"), thread("thread");
      f.gpu_tile(vars[0], block, thread, std::min<int>(64, int(shape.back())), TailStrategy::GuardWithIf);
      f.gpu_blocks(vars.back());
      return f;
    }
    f.compute_root();
    if (shape.back() >= sched_.vector) f.vectorize(vars[0], sched_.vector);
    if (worth_parallel(shape)) f.parallel(vars.back());
    return f;
  }

  Func softmax_backward(Func g, ImageParam y, const std::vector<Var>& vars) {
    std::vector<Expr> at = as_exprs(vars);
    int extent = int(node_.shape.back());
    RDom k(0, extent, "k");
    std::vector<Expr> reduced = at;
    reduced[0] = k;
    std::vector<Var> rest(vars.begin() + 1, vars.end());
    Func dot("dot"), d("softmax_gradient");
    dot(as_exprs(rest)) = Halide::sum(g(reduced) * y(reduced));
    d(at) = y(at) * (g(at) - dot(as_exprs(rest)));
    if (!hand_) return d;
    if (sched_.gpu) dot.compute_root().gpu_blocks(rest.back());
    else dot.compute_root().parallel(rest.back());
    return d;
  }

  // Pooling backward: each activation gets the gradient of every window it is the (first)
  // maximum of, or its share of every window's average.
  Func pool_backward(const std::string& op, Func g, Func activation, const Shape& in_shape, const Shape& out_shape,
                     const Attrs& attrs) {
    auto [ph, pw] = attrs.get_pair("size");
    auto [sh, sw] = attrs.get_pair("stride");
    bool same = attrs.get_string("padding") == "same";
    int height = int(in_shape[0]), width = int(in_shape[1]);
    int out_height = int(out_shape[0]), out_width = int(out_shape[1]);
    int top = same ? same_padding_before(height, out_height, int(ph), int(sh)) : 0;
    int left = same ? same_padding_before(width, out_width, int(pw), int(sw)) : 0;
    Var c("c"), x("x"), y("y"), n("n"), px("px"), py("py");

    Func argmax("argmax");
    if (op == "maxpool2d") {
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
      if (!hand_) {
      } else if (sched_.gpu) argmax.compute_root().gpu_tile(c, px, Var("b0"), Var("b1"), Var("t0"), Var("t1"), std::min<int>(32, int(in_shape[2])), 1, TailStrategy::GuardWithIf);
      else argmax.compute_root().vectorize(c, std::min<int>(sched_.vector, int(in_shape[2]))).parallel(n);
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
        if (op == "maxpool2d") {
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
    Func d(op + "_gradient");
    d(c, x, y, n) = sum;
    return d;
  }

  // The gradient with respect to the conv output of a conv + activation + max pooling that kept
  // the index of each window's maximum: the window's gradient (times the activation's derivative,
  // whose value there is the pooled output) at its maximum, zero elsewhere.
  // The conv's input as its kernel reads it: zero outside the image where the padding is 'same'.
  static Func conv_source(ImageParam input, int width, int height, bool same) {
    Var c("c"), x("x"), y("y"), n("n");
    Func source("source");
    if (same) {
      Expr inside = x >= 0 && x < width && y >= 0 && y < height;
      source(c, x, y, n) = select(inside, input(c, clamp(x, 0, width - 1), clamp(y, 0, height - 1), n), 0.0f);
    } else {
      source(c, x, y, n) = input(c, x, y, n);
    }
    return source;
  }

  // The fused max pooling's window (height, width) and the activation before it ("" for none).
  std::tuple<int, int, std::string> max_pool_window() const {
    std::pair<int64_t, int64_t> window;
    std::string activation;
    for (const Node::FusedOp& fused : node_.fused) {
      if (fused.op == "maxpool2d") window = fused.attrs.get_pair("size");
      else activation = fused.op;
    }
    return {int(window.first), int(window.second), activation};
  }

  Func gradient_from_index(ImageParam gradient, ImageParam index, ImageParam output) {
    auto [ph, pw, activation] = max_pool_window();
    int pooled_height = int(node_.shape[0]), pooled_width = int(node_.shape[1]);
    Var c("c"), x("x"), y("y"), n("n");
    Expr px = min(x / pw, pooled_width - 1), py = min(y / ph, pooled_height - 1);
    Expr inside = x < pooled_width * pw && y < pooled_height * ph;
    Expr hit = index(c, px, py, n) == (y - py * ph) * pw + (x - px * pw);
    Expr g = gradient(c, px, py, n);
    if (!activation.empty()) g = g * activation_derivative(activation, output(c, px, py, n));
    Func d("gradient_from_index");
    d(c, x, y, n) = select(inside && hit, g, 0.0f);
    // Each window's gradient lands once, at its maximum: sums over all positions (the bias
    // gradient) equal sums over the windows.
    Expr window_g = gradient(c, x, y, n);
    if (!activation.empty()) window_g = window_g * activation_derivative(activation, output(c, x, y, n));
    window_grad_ = Func("gradient_per_window");
    window_grad_(c, x, y, n) = window_g;
    window_extent_ = {pooled_width, pooled_height};
    return d;
  }

  // conv2d with a fused non-overlapping max pooling that kept the index of each window's
  // maximum: the gradient reaches only those positions (one per window), so the bias, weight and
  // input gradients visit the pooled positions alone instead of every conv output.
  void conv_backward_at_maxima(ImageParam gradient, ImageParam index, ImageParam output, ImageParam input,
                               std::map<std::string, ImageParam>& params, Func& input_grad,
                               std::vector<std::pair<std::string, Func>>& param_grads) {
    const Shape& in = graph_.nodes[node_.inputs[0]].shape;
    const Shape& conv_out = node_.unfused_shape;
    int height = int(in[0]), width = int(in[1]), in_channels = int(in[2]);
    int out_channels = int(conv_out[2]);
    int pooled_height = int(node_.shape[0]), pooled_width = int(node_.shape[1]);
    auto [kh, kw] = node_.attrs.get_pair("kernel");
    auto [sh, sw] = node_.attrs.get_pair("stride");
    bool same = node_.attrs.get_string("padding") == "same";
    int top = same ? same_padding_before(height, int(conv_out[0]), int(kh), int(sh)) : 0;
    int left = same ? same_padding_before(width, int(conv_out[1]), int(kw), int(sw)) : 0;
    auto [window_height, window_width, activation] = max_pool_window();
    int ph = window_height, pw = window_width;  // (lambdas below capture them)
    Var c("c"), x("x"), y("y"), n("n"), ci("ci"), kx("kx"), ky("ky"), co("co");

    // The gradient at each window's maximum: the pooled gradient times the activation's
    // derivative there, whose value is the pooled output.
    Func at_max("gradient_at_maximum");
    Expr g = gradient(c, x, y, n);
    at_max(c, x, y, n) = activation.empty() ? g : g * activation_derivative(activation, output(c, x, y, n));
    // Where the maximum of window (x, y) is, in conv output coordinates.
    auto max_x = [&](Expr channel, Expr px, Expr py, Expr image) {
      return px * pw + clamp(index(channel, px, py, image), 0, ph * pw - 1) % pw;
    };
    auto max_y = [&](Expr channel, Expr px, Expr py, Expr image) {
      return py * ph + clamp(index(channel, px, py, image), 0, ph * pw - 1) / pw;
    };
    Func source = conv_source(input, width, height, same);

    RDom windows(0, pooled_width, 0, pooled_height, 0, batch_, "windows");
    if (node_.attrs.get_bool("use_bias")) {
      Func bias_sum("bias_sum"), bias_grad("bias_gradient");
      bias_sum(c) = 0.0f;
      bias_sum(c) += at_max(c, windows.x, windows.y, windows.z);
      bias_grad(c) = bias_sum(c);
      param_grads.emplace_back("bias", bias_grad);
      if (hand_ && !sched_.gpu) {
        bias_sum.compute_at(bias_grad, Var::outermost()).vectorize(c, std::min(out_channels, sched_.vector));
        vectorize_update(bias_sum.update().reorder(c, windows.x, windows.y, windows.z), c,
                         std::min(out_channels, sched_.vector), out_channels);
      }
    }

    // d(kernel), input channels contiguous: per output channel, the input patch at each maximum.
    Func patch_acc("patch_acc"), patch_sum("patch_sum"), kernel_grad("kernel_gradient");
    Func per_image("patch_per_image"), partial("patch_partial");
    RDom images;
    Var k("k");
    int chunks = sched_.batch_chunks;
    bool per_image_tiles = hand_ && !sched_.gpu;
    if (per_image_tiles) {
      // CPU: image by image (the image, a few KB, stays in L1), one output channel's patch sums
      // in registers over the image's windows, then added to the channel's partial sum of the
      // batch chunk. Looping channels outside images instead streams the whole batch's input
      // through the cache once per output channel. Fixed batch chunks in parallel, summed in
      // order: the same result for any thread count.
      RDom win(0, pooled_width, 0, pooled_height, "win");
      Expr wx = max_x(co, win.x, win.y, n), wy = max_y(co, win.x, win.y, n);
      per_image(ci, kx, ky, co, n) = 0.0f;
      per_image(ci, kx, ky, co, n) += at_max(co, win.x, win.y, n) *
                                      source(ci, wx * int(sw) + kx - left, wy * int(sh) + ky - top, n);
      Expr chunk = (batch_ + chunks - 1) / chunks;
      images = RDom(0, chunk, "images");
      images.where(k * chunk + images < batch_);
      partial(ci, kx, ky, co, k) = 0.0f;
      partial(ci, kx, ky, co, k) += per_image(ci, kx, ky, co, min(k * chunk + images, batch_ - 1));
      Expr total = partial(ci, kx, ky, co, 0);
      for (int j = 1; j < chunks; ++j) total = total + partial(ci, kx, ky, co, j);
      kernel_grad(co, ci, kx, ky) = total;
      window_rvars_ = {win.x, win.y};
    } else {
      Expr mx = max_x(co, windows.x, windows.y, windows.z), my = max_y(co, windows.x, windows.y, windows.z);
      patch_acc(ci, kx, ky, co) = 0.0f;
      patch_acc(ci, kx, ky, co) += at_max(co, windows.x, windows.y, windows.z) *
                                   source(ci, mx * int(sw) + kx - left, my * int(sh) + ky - top, windows.z);
      patch_sum(ci, kx, ky, co) = patch_acc(ci, kx, ky, co);
      kernel_grad(co, ci, kx, ky) = patch_sum(ci, kx, ky, co);
    }
    param_grads.emplace_back("kernel", kernel_grad);

    Func transposed("transposed");
    transposed(ci, co, kx, ky) = params.at("kernel")(co, ci, kx, ky);
    if (kernel_.input_grad[0]) {
      // d(input): each maximum adds its gradient times the kernel to the input patch it read.
      // Output channel outermost, then the windows, then the taps: one channel's kernel slice
      // (taps x input channels) is reused at every window's maximum while it is in cache.
      RDom r(0, int(kw), 0, int(kh), 0, pooled_width, 0, pooled_height, 0, out_channels, "r");
      Expr cx = max_x(r[4], r[2], r[3], n), cy = max_y(r[4], r[2], r[3], n);
      Expr ix = cx * int(sw) + r[0] - left, iy = cy * int(sh) + r[1] - top;
      if (same) r.where(ix >= 0 && ix < width && iy >= 0 && iy < height);
      input_grad = Func("input_gradient");
      input_grad(ci, x, y, n) = 0.0f;
      input_grad(ci, clamp(ix, 0, width - 1), clamp(iy, 0, height - 1), n) +=
          at_max(r[4], r[2], r[3], n) * transposed(ci, r[4], r[0], r[1]);
      scatter_taps_ = {r[0], r[1]};
    }
    if (!hand_) return;
    int vec = std::min(sched_.vector, in_channels);
    at_max.compute_root().vectorize(c, std::min(sched_.vector, out_channels));
    if (worth_parallel(node_.shape)) at_max.parallel(n);
    transposed.compute_root();
    schedule_ = fmt::format("backward at the {}x{} window maxima only", ph, pw);
    if (sched_.gpu) {
      patch_sum.compute_root().gpu_tile(ci, co, Var("b0"), Var("b1"), Var("t0"), Var("t1"), std::min(32, in_channels), 1,
                                        TailStrategy::GuardWithIf);
      patch_acc.compute_at(patch_sum, Var("t0"));
      if (kernel_.input_grad[0]) {
        input_grad.compute_root().gpu_blocks(n).gpu_threads(ci);
        input_grad.update().gpu_blocks(n).gpu_threads(ci);
      }
      return;
    }
    // Per batch chunk (a task each), image by image, per output channel: a register tile of all
    // input channels x kernel taps.
    Var cio("cio"), cii("cii");
    bool split_channels = in_channels % vec == 0 && in_channels / vec <= 4;
    partial.compute_root().vectorize(ci, vec).parallel(k);
    Stage add = partial.update();
    add.reorder(ci, kx, ky, co, images, k);
    if (split_channels) add.split(ci, cio, cii, vec).vectorize(cii).unroll(cio);
    else vectorize_update(add, ci, vec, in_channels);
    add.unroll(kx).unroll(ky).parallel(k);
    per_image.compute_at(partial, co).vectorize(ci, vec).unroll(kx).unroll(ky);
    Stage sum = per_image.update();
    sum.reorder(ci, kx, ky, window_rvars_[0], window_rvars_[1]);
    if (split_channels) sum.split(ci, cio, cii, vec).vectorize(cii).unroll(cio);
    else vectorize_update(sum, ci, vec, in_channels);
    sum.unroll(kx).unroll(ky);
    kernel_grad.vectorize(co, std::min(sched_.vector, out_channels));
    if (kernel_.input_grad[0]) {
      // Images are independent: one task each, no two tasks write the same gradient. The image's
      // gradient (a few KB) stays in L1 while the windows add to it; the taps are unrolled so
      // that a window's maximum is located once for all of them.
      input_grad.compute_root().vectorize(ci, vec).parallel(n);
      Stage scatter = input_grad.update();
      if (split_channels) scatter.split(ci, cio, cii, vec).vectorize(cii).unroll(cio);
      else vectorize_update(scatter, ci, vec, in_channels);
      if (kw * kh <= 25) scatter.unroll(scatter_taps_[0]).unroll(scatter_taps_[1]);
      scatter.parallel(n);
      direct_input_grad_ = true;
    }
  }

  // conv2d: d(bias) = sum of pre over pixels and batch; d(kernel) = correlation of the input with
  // pre; d(input) = pre convolved with the flipped kernel (strides and padding respected).
  void conv_backward(Func pre, ImageParam input, std::map<std::string, ImageParam>& params, Func& input_grad,
                     std::vector<std::pair<std::string, Func>>& param_grads) {
    const Shape& in = graph_.nodes[node_.inputs[0]].shape;
    const Shape& out = node_.unfused_shape;
    int height = int(in[0]), width = int(in[1]), in_channels = int(in[2]);
    int out_height = int(out[0]), out_width = int(out[1]), out_channels = int(out[2]);
    auto [kh, kw] = node_.attrs.get_pair("kernel");
    auto [sh, sw] = node_.attrs.get_pair("stride");
    bool same = node_.attrs.get_string("padding") == "same";
    int top = same ? same_padding_before(height, out_height, int(kh), int(sh)) : 0;
    int left = same ? same_padding_before(width, out_width, int(kw), int(sw)) : 0;
    Var c("c"), x("x"), y("y"), n("n"), ci("ci"), kx("kx"), ky("ky"), co("co"), k("k");

    Func dpre("dpre");  // materialized: three reductions read it
    dpre(c, x, y, n) = pre(c, x, y, n);
    // Behind a max pooling that kept its indices, with no input gradient to compute, only the
    // weight gradient reads dpre (the bias sums the windows): it is computed one row at a time
    // where that reduction needs it instead of in full.
    bool dpre_per_row = hand_ && !sched_.gpu && window_grad_.defined() && !kernel_.input_grad[0];
    if (!dpre_per_row) compute_root(dpre, {c, x, y, n}, out);

    Func source = conv_source(input, width, height, same);

    int block = channel_block(sched_, out_channels, sched_.channel_vectors), vec = std::min(block, sched_.vector);
    if (node_.attrs.get_bool("use_bias")) {
      bool windows = window_grad_.defined();
      RDom pixels(0, windows ? window_extent_[0] : out_width, 0, windows ? window_extent_[1] : out_height, 0, batch_, "pixels");
      Func bias_sum("bias_sum"), bias_grad("bias_gradient");
      bias_sum(c) = 0.0f;
      bias_sum(c) += windows ? window_grad_(c, pixels.x, pixels.y, pixels.z) : dpre(c, pixels.x, pixels.y, pixels.z);
      bias_grad(c) = bias_sum(c);
      if (!hand_) {
      } else if (!sched_.gpu) {
        bias_sum.compute_at(bias_grad, Var::outermost()).vectorize(c, vec);
        vectorize_update(bias_sum.update().reorder(c, pixels.x, pixels.y, pixels.z), c, vec, out_channels);
      } else {
        bias_grad.gpu_tile(c, Var("b"), Var("t"), std::min(32, out_channels), TailStrategy::GuardWithIf);
        bias_sum.compute_at(bias_grad, Var("t"));
      }
      param_grads.emplace_back("bias", bias_grad);
    }

    // d(kernel)(co, ci, kx, ky) = sum over the batch and the pixels of dpre(co) * input(ci). The batch
    // is split in a fixed number of chunks whose partial sums run in parallel and are added in
    // order, so the result is the same for any thread count.
    int chunks = sched_.gpu ? 1 : sched_.batch_chunks;
    Expr chunk = (batch_ + chunks - 1) / chunks;
    RDom r(0, out_width, 0, out_height, 0, chunk, "r");
    r.where(k * chunk + r.z < batch_);
    Expr image = min(k * chunk + r.z, batch_ - 1);  // the clamp only bounds the region: `where` skips the rest
    Func kernel_acc("kernel_acc"), kernel_partial("kernel_partial"), kernel_grad("kernel_gradient");
    kernel_acc(co, ci, kx, ky, k) = 0.0f;
    kernel_acc(co, ci, kx, ky, k) +=
        dpre(co, r.x, r.y, image) * source(ci, r.x * int(sw) + kx - left, r.y * int(sh) + ky - top, image);
    kernel_partial(co, ci, kx, ky, k) = kernel_acc(co, ci, kx, ky, k);
    Expr total = kernel_partial(co, ci, kx, ky, 0);
    for (int j = 1; j < chunks; ++j) total = total + kernel_partial(co, ci, kx, ky, j);
    kernel_grad(co, ci, kx, ky) = total;
    param_grads.emplace_back("kernel", kernel_grad);
    if (!hand_) {
    } else if (sched_.gpu) {
      Var b0("b0"), b1("b1"), t0("t0"), t1("t1"), kk("kk");
      kernel_grad.fuse(kx, ky, kk).gpu_tile(co, ci, b0, b1, t0, t1, std::min(32, out_channels), std::min(4, in_channels),
                                             TailStrategy::GuardWithIf).gpu_blocks(kk);
      kernel_acc.compute_at(kernel_grad, t0);
    } else {
      // Register tile: `block` output channels by `tile` input channels; where the input has few
      // channels (conv1: one), by every (ci, kx, ky) instead, so that enough accumulators stay busy.
      int accumulators = sched_.channel_vectors * sched_.pixel_tile;
      int taps = in_channels * int(kw * kh);
      bool small = in_channels * 2 < sched_.pixel_tile;
      Var coo("coo"), coi("coi"), cio("cio"), cii("cii"), t1("t1"), t2("t2"), t3("t3"), t4("t4");
      kernel_partial.compute_root();
      if (small) {
        int vectors = std::max(1, std::min(sched_.channel_vectors, accumulators / std::max(1, taps)));
        int small_block = channel_block(sched_, out_channels, vectors), small_vec = std::min(small_block, sched_.vector);
        kernel_partial.split(co, coo, coi, small_block).reorder(coi, ci, kx, ky, coo, k).vectorize(coi, small_vec)
            .fuse(coo, k, t1).parallel(t1);
        kernel_acc.compute_at(kernel_partial, t1).vectorize(co, small_vec).unroll(co).unroll(ci).unroll(kx).unroll(ky);
        kernel_acc.update().reorder(co, ci, kx, ky, r.x, r.y, r.z, k).vectorize(co, small_vec).unroll(co).unroll(ci)
            .unroll(kx).unroll(ky);
        schedule_ = fmt::format("weight gradient: register tile {} channels x all {} taps, {} batch chunks in parallel",
                                small_block, taps, chunks);
      } else {
        int tile = std::min(in_channels, sched_.pixel_tile);
        kernel_partial.split(co, coo, coi, block).split(ci, cio, cii, tile).reorder(coi, cii, coo, cio, kx, ky, k)
            .vectorize(coi, vec).fuse(coo, cio, t1).fuse(t1, kx, t2).fuse(t2, ky, t3).fuse(t3, k, t4).parallel(t4);
        kernel_acc.compute_at(kernel_partial, t4).vectorize(co, vec).unroll(co).unroll(ci);
        kernel_acc.update().reorder(co, ci, r.x, r.y, r.z, kx, ky, k).vectorize(co, vec).unroll(co).unroll(ci);
        schedule_ = fmt::format("weight gradient: register tile {} channels x {} input channels, {} batch chunks",
                                block, tile, chunks);
      }
      kernel_grad.vectorize(co, vec);
      if (dpre_per_row) {
        dpre.compute_at(kernel_acc, r.y).vectorize(c, std::min(vec, out_channels));
        schedule_ += ", the gradient at the pooling maxima expanded one row at a time";
      }
    }

    if (!kernel_.input_grad[0]) return;
    Func transposed("transposed");  // weights with input channels contiguous
    transposed(ci, co, kx, ky) = params.at("kernel")(co, ci, kx, ky);
    if (sw == 1 && sh == 1) {
      // Stride 1: a GEMM over the real output pixels, then col2im. cols(ci, kx, ky, ox, oy) =
      // sum over co of w(co, ci, kx, ky) * dpre(co, ox, oy) does exactly the forward FLOPs (a
      // direct convolution of the zero-padded gradient does ~40% more); d(input)(ci, x, y) then
      // adds the kh x kw columns that land on (x, y).
      Var ox("ox"), oy("oy");
      RDom rc(0, out_channels, "rc");
      Func cols_acc("cols_acc"), cols("cols");
      cols_acc(ci, kx, ky, ox, oy, n) = 0.0f;
      cols_acc(ci, kx, ky, ox, oy, n) += transposed(ci, rc, kx, ky) * dpre(rc, ox, oy, n);
      cols(ci, kx, ky, ox, oy, n) = cols_acc(ci, kx, ky, ox, oy, n);
      Expr sum = 0.0f;
      for (int dy = 0; dy < kh; ++dy)
        for (int dx = 0; dx < kw; ++dx) {
          Expr px = x + left - dx, py = y + top - dy;
          Expr valid = px >= 0 && px < out_width && py >= 0 && py < out_height;
          sum = sum + select(valid, cols(ci, dx, dy, clamp(px, 0, out_width - 1), clamp(py, 0, out_height - 1), n), 0.0f);
        }
      input_grad = Func("input_gradient");
      input_grad(ci, x, y, n) = sum;
      if (!hand_) return;
      transposed.compute_root();
      if (sched_.gpu) {
        Var b0("b0"), b1("b1"), t0("t0"), t1("t1"), q("q");
        cols.compute_root().fuse(kx, ky, q).gpu_tile(ci, ox, b0, b1, t0, t1, std::min(32, in_channels),
                                                      std::min(8, out_width), TailStrategy::GuardWithIf);
        cols_acc.compute_at(cols, t0);
        input_grad.compute_root().gpu_tile(ci, x, b0, b1, t0, t1, std::min(32, in_channels), std::min(8, width),
                                           TailStrategy::GuardWithIf);
        return;
      }
      int in_block = channel_block(sched_, in_channels, sched_.channel_vectors), in_vec = std::min(in_block, sched_.vector);
      int tile = pick_tile(out_width, sched_.pixel_tile, (in_block + sched_.vector - 1) / sched_.vector, sched_.registers);
      Var cio("cio"), cii("cii"), oxo("oxo"), oxi("oxi");
      // Per image: its columns (in_channels x taps x output pixels) stay in the L2 cache.
      input_grad.compute_root().vectorize(ci, std::min(in_channels, sched_.vector)).parallel(n);
      cols.compute_at(input_grad, n)
          .split(ci, cio, cii, in_block)
          .split(ox, oxo, oxi, tile)
          .reorder(cii, oxi, cio, oxo, kx, ky, oy)
          .vectorize(cii, in_vec)
          .unroll(cii)
          .unroll(oxi);
      cols_acc.compute_at(cols, cio).vectorize(ci, in_vec).unroll(ci).unroll(ox);
      cols_acc.update().reorder(ci, ox, rc, kx, ky, oy, n).vectorize(ci, in_vec).unroll(ci).unroll(ox);
      return;
    }
    // Strided: d(input)(ci, x, y, n) = sum over (co, kx, ky) of w(co, ci, kx, ky) * dpre(co, ox, oy, n)
    // where ox * stride + kx - left == x: the convolution of the zero-padded dpre with the
    // flipped kernel, keeping the taps that land on the stride.
    Func padded("dpre_padded");  // zero outside the output: no bounds test in the inner loop
    padded(c, x, y, n) = select(x >= 0 && x < out_width && y >= 0 && y < out_height,
                                dpre(c, clamp(x, 0, out_width - 1), clamp(y, 0, out_height - 1), n), 0.0f);
    RDom rin(0, out_channels, 0, int(kw), 0, int(kh), "rin");
    Expr sx = x + left - rin.y, sy = y + top - rin.z;
    Expr valid = sx % int(sw) == 0 && sy % int(sh) == 0;
    Expr value = select(valid, padded(rin.x, sx / int(sw), sy / int(sh), n), 0.0f);
    Func input_sum("input_sum");
    input_sum(ci, x, y, n) = 0.0f;
    input_sum(ci, x, y, n) += transposed(ci, rin.x, rin.y, rin.z) * value;
    input_grad = Func("input_gradient");
    input_grad(ci, x, y, n) = input_sum(ci, x, y, n);
    if (!hand_) return;
    transposed.compute_root();
    if (sched_.gpu) {
      padded.compute_root().gpu_tile(c, x, Var("pb0"), Var("pb1"), Var("pt0"), Var("pt1"), std::min(32, out_channels), 4,
                                     TailStrategy::GuardWithIf);
      Var b0("b0"), b1("b1"), t0("t0"), t1("t1"), yn("yn");
      input_grad.compute_root().gpu_tile(ci, x, b0, b1, t0, t1, std::min(32, in_channels), std::min(8, width),
                                         TailStrategy::GuardWithIf).fuse(y, n, yn).gpu_blocks(yn);
      input_sum.compute_at(input_grad, t0);
      return;
    }
    padded.compute_root().vectorize(c, std::min(sched_.vector, out_channels)).parallel(n);
    int in_block = channel_block(sched_, in_channels, sched_.channel_vectors), in_vec = std::min(in_block, sched_.vector);
    int tile = pick_tile(width, sched_.pixel_tile, (in_block + sched_.vector - 1) / sched_.vector, sched_.registers);
    Var cio("cio"), cii("cii"), xo("xo"), xi("xi"), yn("yn");
    input_grad.compute_root().split(ci, cio, cii, in_block).split(x, xo, xi, tile).reorder(cii, xi, cio, xo, y, n)
        .vectorize(cii, in_vec).unroll(cii).unroll(xi).fuse(y, n, yn).parallel(yn);
    input_sum.compute_at(input_grad, cio).vectorize(ci, in_vec).unroll(ci).unroll(x);
    input_sum.update().reorder(ci, x, rin.x, rin.y, rin.z, y, n).vectorize(ci, in_vec).unroll(ci).unroll(x);
  }

  // dense: d(bias)(u) = sum over the batch; d(kernel)(u, i) = sum over the batch of pre * input;
  // d(input)(i, n) = sum over u of w(u, i) * pre(u, n).
  void dense_backward(Func pre, ImageParam input, std::map<std::string, ImageParam>& params, Func& input_grad,
                      std::vector<std::pair<std::string, Func>>& param_grads) {
    int features = int(graph_.nodes[node_.inputs[0]].shape[0]), units = int(node_.shape[0]);
    Var u("u"), i("i"), n("n");
    Func dpre("dpre");
    dpre(u, n) = pre(u, n);
    compute_root(dpre, {u, n}, node_.shape);
    RDom examples(0, batch_, "examples");
    int block = channel_block(sched_, units, sched_.channel_vectors), vec = std::min(block, sched_.vector);
    if (node_.attrs.get_bool("use_bias")) {
      Func bias_sum("bias_sum"), bias_grad("bias_gradient");
      bias_sum(u) = 0.0f;
      bias_sum(u) += dpre(u, examples);
      bias_grad(u) = bias_sum(u);
      if (!hand_) {
      } else if (sched_.gpu) {
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
    int in_tile = std::min(features, sched_.pixel_tile);
    if (!hand_) {
    } else if (sched_.gpu) {
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

    if (!kernel_.input_grad[0]) return;
    const ImageParam& weights = params.at("kernel");
    if (!sched_.gpu && hand_) {
      // d(input) as a GEMM with the batch vectorized: acc(n, i) = sum over u of pre(u, n) * w(u, i).
      // A register tile of `block` examples x `tile` features takes each weight as a broadcast
      // operand of the FMAs (both operands are contiguous over the units as stored), then one
      // cheap transpose writes d(input)(i, n). The batch is rounded up to whole tiles (the extra
      // rows repeat the last example and are never stored).
      int lanes = sched_.vector, batch_block = sched_.channel_vectors * lanes;
      int tile = std::min(features, pick_tile(features, sched_.pixel_tile, sched_.channel_vectors, sched_.registers));
      Var no("no"), ni("ni"), nio("nio"), nii("nii"), io("io"), ii("ii");
      Func pre_t("pre_by_example"), input_acc("input_acc"), input_t("input_gradient_by_example");
      pre_t(n, u) = dpre(u, clamp(n, 0, batch_ - 1));
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
      direct_input_grad_ = true;
      schedule_ += fmt::format("; input gradient: GEMM over {} examples x {} features, then transposed", batch_block, tile);
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
    if (!hand_) return;  // (an autoscheduler's; the CPU hand schedule returned above)
    transposed.compute_root();
    input_grad.compute_root().gpu_tile(i, n, Var("b0"), Var("b1"), Var("t0"), Var("t1"), std::min(64, features), 1,
                                       TailStrategy::GuardWithIf);
    input_sum.compute_at(input_grad, Var("t0"));
  }

  // batchnorm in training mode (batch statistics, recomputed from the input): with xhat the
  // normalized input and N the values per channel, d(beta) = sum of pre, d(gamma) = sum of
  // pre * xhat, d(input) = gamma / sqrt(var + eps) / N * (N pre - d(beta) - xhat d(gamma)).
  void batchnorm_backward(Func pre, ImageParam input, std::map<std::string, ImageParam>& params,
                          const std::vector<Var>& vars, Func& input_grad,
                          std::vector<std::pair<std::string, Func>>& param_grads) {
    const Shape& shape = node_.shape;
    std::vector<Expr> at = as_exprs(vars);
    Var c = vars[0];
    auto [mean, variance] = batch_statistics(input, shape, c);
    ChannelReduction all = per_channel(shape, batch_, c);
    const std::vector<Expr>& point = all.point;
    Expr count = all.count;
    float epsilon = float(node_.attrs.get_float("epsilon"));
    Func inverse_std("inverse_std");
    inverse_std(c) = 1.0f / sqrt(variance(c) + epsilon);
    Func dpre("dpre");
    dpre(at) = pre(at);
    auto xhat = [&](const std::vector<Expr>& p) { return (input(p) - mean(p[0])) * inverse_std(p[0]); };
    Func beta_grad("beta_gradient"), gamma_grad("gamma_gradient");
    beta_grad(c) = Halide::sum(dpre(point));
    gamma_grad(c) = Halide::sum(dpre(point) * xhat(point));
    input_grad = Func("input_gradient");
    input_grad(at) = params.at("gamma")(c) * inverse_std(c) / count * (count * dpre(at) - beta_grad(c) - xhat(at) * gamma_grad(c));
    param_grads.emplace_back("gamma", gamma_grad);
    param_grads.emplace_back("beta", beta_grad);
    if (!hand_) return;
    compute_root(dpre, vars, shape);
    int lanes = std::min(int(shape.back()), sched_.vector);
    for (Func f : {mean, variance, inverse_std}) f.compute_root().vectorize(c, lanes);
    if (!sched_.gpu) {
      beta_grad.vectorize(c, lanes);
      gamma_grad.vectorize(c, lanes);
    }
    schedule_ = "batchnorm backward: per-channel sums in order, then one pass";
  }

  // add, concat, activation and softmax layers, standalone pooling, dropout.
  void elementwise_backward(Func pre, ImageParam output, std::vector<ImageParam>& inputs,
                            std::map<std::string, ImageParam>& params, Param<int32_t>& seed, Param<int32_t>& step,
                            std::vector<Func>& input_grads, std::vector<std::pair<std::string, Func>>& param_grads) {
    const std::string& op = node_.op;
    size_t rank = node_.shape.size();
    std::vector<Var> vars = make_vars(rank + 1);
    std::vector<Expr> at = as_exprs(vars);
    Func d(op + "_input_gradient");
    if (op == "relu" || op == "sigmoid" || op == "tanh") {
      d(at) = pre(at) * activation_derivative(op, output(at));
      input_grads[0] = d;
    } else if (op == "softmax") {
      input_grads[0] = kernel_.from_logits ? pre : softmax_backward(pre, output, vars);
    } else if (op == "add") {
      for (Func& g : input_grads) g = pre;
    } else if (op == "concat") {
      int64_t axis = node_.attrs.get_int("axis");
      int index = int(axis < 0 ? int64_t(rank) + axis : axis - 1);
      int dim = int(rank) - 1 - index;
      int offset = 0;
      for (size_t k = 0; k < inputs.size(); ++k) {
        std::vector<Expr> shifted = at;
        shifted[size_t(dim)] = at[size_t(dim)] + offset;
        Func slice(fmt::format("slice{}", k));
        slice(at) = pre(shifted);
        input_grads[k] = slice;
        offset += int(graph_.nodes[node_.inputs[k]].shape[size_t(index)]);
      }
    } else if (op == "maxpool2d" || op == "avgpool2d") {
      Func activation("activation");
      activation(at) = inputs[0](at);
      input_grads[0] = pool_backward(op, pre, activation, graph_.nodes[node_.inputs[0]].shape, node_.shape, node_.attrs);
    } else if (op == "batchnorm") {
      batchnorm_backward(pre, inputs[0], params, vars, input_grads[0], param_grads);
    } else if (op == "dropout") {
      double rate = node_.attrs.get_float("rate");
      d(at) = select(dropout_keep(at, node_.shape, seed, step, rate), pre(at) * float(1.0 / (1.0 - rate)), 0.0f);
      input_grads[0] = d;
    } else {
      CNNC_ASSERT(false, "no backward kernel for op " + op);
    }
  }

  void schedule_elementwise(Func f, const std::vector<Var>& vars, const Shape& shape, bool in_place = false) {
    if (sched_.gpu) {
      Var block("block"), thread("thread");
      f.gpu_tile(vars[0], block, thread, std::min<int>(64, int(shape.back())), TailStrategy::GuardWithIf);
      f.gpu_blocks(vars.back());
      return;
    }
    if (shape.back() >= sched_.vector)
      f.vectorize(vars[0], sched_.vector, in_place ? TailStrategy::GuardWithIf : TailStrategy::Auto);
    if (!worth_parallel(shape)) {
    } else if (vars.size() >= 3) {
      Var both("outer");
      f.fuse(vars[vars.size() - 2], vars.back(), both).parallel(both);
    } else {
      f.parallel(vars.back());
    }
    if (schedule_.empty()) schedule_ = "element-wise: vectorized, parallel over the outer dims";
  }

  // ---------------------------------------------------------------------------------------------
  // Loss: softmax + categorical cross-entropy from the logits, stable (log-sum-exp).

  void loss() {
    const Node& out = node_;
    const Shape& logits_shape = kernel_.from_logits && out.op == "softmax" ? graph_.nodes[out.inputs[0]].shape
                                                                          : out.unfused_shape;
    CNNC_ASSERT(logits_shape.size() == 1, "the loss takes a vector of logits");
    int classes = int(logits_shape[0]);
    ImageParam logits = batched(logits_shape, "logits");
    ImageParam labels = build_.buffer(Int(32), {}, true, "labels", classes);
    Expr batch = logits.dim(1).extent();
    Var u("u"), n("n");
    RDom k(0, classes, "k");
    Func top("top"), total("total"), log_sum("log_sum"), gradient("logit_gradient"), loss("loss");
    top(n) = maximum(logits(k, n));
    total(n) = Halide::sum(exp(logits(k, n) - top(n)));
    log_sum(n) = top(n) + log(total(n));
    Expr label = clamp(labels(n), 0, classes - 1);
    loss(n) = log_sum(n) - logits(label, n);
    gradient(u, n) = (exp(logits(u, n) - log_sum(n)) - select(u == label, 1.0f, 0.0f)) / cast<float>(batch);
    build_.output(gradient, {classes}, true);
    build_.output(loss, {}, true);
    loss.output_buffer().dim(0).set_min(0);
    if (!hand_) return;
    log_sum.compute_root();
    top.compute_root();
    if (sched_.gpu) {
      for (Func f : {top, log_sum}) f.gpu_tile(n, Var("b"), Var("t"), 32, TailStrategy::GuardWithIf);
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
  Expr batch_;
  std::vector<RVar> scatter_taps_;   // the kernel taps of a scatter-style input gradient
  std::vector<RVar> window_rvars_;   // the pooling windows of one image (x, y)
  bool direct_input_grad_ = false;  // input_grads[0] is a root Func that can be the output itself
  Func window_grad_;                 // behind a max pooling with indices: the gradient per window
  std::vector<int> window_extent_;   // ... over this many windows (x, y)
  std::string schedule_;
};

}  // namespace

std::string training_build_stamp() { return __DATE__ " " __TIME__; }

void define_training_kernel(const Graph& graph, const KernelInfo& kernel, const Target& target, PipelineBuild& build) {
  BackwardBuilder builder(graph, kernel, target, build);
  builder.define_all();
}

}  // namespace cnnc
