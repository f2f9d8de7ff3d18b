// The Halide half of depthwise_conv2d and separable_conv2d: forward kernels with their fused
// activation, backward kernels, schedules. The ops themselves: ops/conv.cpp.
//
// Layouts (Halide order, innermost first): the input (c, x, y, n); depthwise_kernel
// (m, c, kx, ky) for Keras's [kh, kw, in, multiplier]; output channel o of the depthwise step
// reads input channel o / multiplier with kernel slice (o % multiplier, o / multiplier);
// pointwise_kernel (f, j, 0, 0) for Keras's [1, 1, in * multiplier, filters].
#include "codegen/halide_op.h"

#include <tuple>

namespace cnnc {

namespace {

// The sliding window of a depthwise step, from the node's attributes and shapes.
struct Window {
  int height, width, channels;  // the input
  int out_height, out_width;
  int kh, kw, sh, sw, dh, dw;
  int multiplier;
  bool same;
  int top, left;  // zero rows / columns before the image ('same')

  Window(const Graph& graph, const Node& node) {
    const Shape& in = graph.nodes[node.inputs[0]].shape;
    height = int(in[0]), width = int(in[1]), channels = int(in[2]);
    out_height = int(node.unfused_shape[0]), out_width = int(node.unfused_shape[1]);
    std::tie(kh, kw) = std::pair<int, int>(node.attrs.get_pair("kernel"));
    std::tie(sh, sw) = std::pair<int, int>(node.attrs.get_pair("stride"));
    std::tie(dh, dw) = std::pair<int, int>(node.attrs.get_pair("dilation"));
    multiplier = int(node.attrs.get_int("depth_multiplier"));
    same = node.attrs.get_string("padding") == "same";
    top = same ? same_padding_before(height, out_height, (kh - 1) * dh + 1, sh) : 0;
    left = same ? same_padding_before(width, out_width, (kw - 1) * dw + 1, sw) : 0;
  }
  int middle() const { return channels * multiplier; }  // the depthwise step's output channels
  // The input channel of depthwise output channel o, and o's kernel tap (kx, ky).
  Expr source_channel(Expr o) const { return multiplier == 1 ? o : o / multiplier; }
  Expr weight(ImageParam kernel, Expr o, Expr kx, Expr ky) const {
    return multiplier == 1 ? kernel(0, o, kx, ky) : kernel(o % multiplier, o / multiplier, kx, ky);
  }
  // What output channel o at (x, y) of image n reads at tap (kx, ky) of `image` (zero_padded).
  Expr input_at(Func image, Expr o, Expr x, Expr y, Expr n, Expr kx, Expr ky) const {
    return image(source_channel(o), x * sw + dilated(kx, dw) - left, y * sh + dilated(ky, dh) - top, n);
  }
  // The zero-padded input, for input_at.
  Func image(ImageParam input) const { return zero_padded(input, width, height, same); }
};

// Unrolling the taps pays for small windows only.
bool unroll_taps(const Window& w) { return w.kh * w.kw <= 25; }

// Applies the node's fused activations to value(c, x, y, n) (over `channels` channels), a
// softmax over the channels among them. `logits` gets the Func before a softmax (undefined
// without one) and `per_pixel` the softmax's per-pixel Funcs.
Func fused_epilogue(const Node& node, Func value, int channels, Func& logits, std::vector<Func>& per_pixel) {
  Var c("c"), x("x"), y("y"), n("n");
  for (const Node::FusedOp& fused : node.fused) {
    if (fused.def->traits.softmax) {
      logits = Func("logits");
      logits(c, x, y, n) = value(c, x, y, n);
      ChannelSoftmax softmax = channel_softmax(logits, channels);
      per_pixel = {softmax.max, softmax.exp, softmax.sum};
      value = softmax.value;
      continue;
    }
    Func activated(fused.def->name);
    activated(c, x, y, n) = halide_op(*fused.def).activate(value(c, x, y, n), fused.attrs);
    value = activated;
  }
  Func output("output");
  output(c, x, y, n) = value(c, x, y, n);
  return output;
}

// CPU: where the padding is 'same', the zero-padded input rows a task reads, copied once per
// task (no bounds test per tap); a fused softmax (per_pixel not empty) per pixel after the tiled Func.
void schedule_padding_and_softmax(ForwardContext& ctx, const Window& w, Func image, Func tiled, Var task, Func output,
                                  const std::vector<Func>& per_pixel, int channels) {
  if (w.same) {
    image.compute_at(tiled, task);
    vectorize_pure(image, image.args()[0], ctx.sched.vector, w.channels);
  }
  if (per_pixel.empty()) return;
  Var c = output.args()[0], x = output.args()[1], n = output.args()[3];
  output.vectorize(c, std::min(ctx.sched.vector, channels), TailStrategy::GuardWithIf).parallel(n);
  for (Func f : per_pixel) f.compute_at(output, x);
}

// GPU: one thread per output value of `tiled` (32 channels x 8 pixels a block, rows x images
// the grid), its accumulator `acc` in registers; a fused softmax (per_pixel not empty) then
// one thread per pixel of `output`.
void schedule_gpu_tiles(Func tiled, Func acc, Func output, const std::vector<Func>& per_pixel, int channels, int width) {
  Var c = tiled.args()[0], x = tiled.args()[1], y = tiled.args()[2], n = tiled.args()[3];
  Var co("co"), ci("ci"), xo("xo"), xi("xi"), yn("yn");
  tiled.gpu_tile(c, x, co, xo, ci, xi, std::min(32, channels), std::min(8, width), TailStrategy::GuardWithIf)
      .fuse(y, n, yn)
      .gpu_blocks(yn);
  acc.compute_at(tiled, ci);
  if (per_pixel.empty()) return;
  Var pxo("pxo"), pxi("pxi");
  output.gpu_tile(output.args()[1], output.args()[2], pxo, Var("pyo"), pxi, Var("pyi"), std::min(8, width), 1,
                  TailStrategy::GuardWithIf);
  for (Func f : per_pixel) f.compute_at(output, pxi);
}

// Output rows per task: a task copies the zero-padded input rows its outputs read, (rows - 1) *
// stride + the window's height, so with one row per task a tall window's rows are copied again
// for every row (a 3x3 kernel with dilation 4: 9 input rows per output row). Enough rows that the
// window's extra rows are at most the task's own, and at least 2 tasks per image (batch 1 runs
// on 2 threads).
int rows_per_task(const Window& w) {
  int window = (w.kh - 1) * w.dh + 1;
  int rows = std::max(1, (window - 1) / w.sh);  // ceil((window - stride) / stride)
  return std::max(1, std::min(rows, (w.out_height + 1) / 2));
}

// Tasks of `rows` rows of outputs (the last overlapping the one before where they do not divide)
// where that is enough work (~100 kFLOP, as conv2d), else whole images. Returns the parallel
// loop's Var.
Var parallelize_rows(Func f, Var y, Var n, int64_t row_flops, int rows) {
  if (row_flops * rows < 100000) {
    f.parallel(n);
    return n;
  }
  Var yn("yn"), yo("yo"), yi("yi");
  f.split(y, yo, yi, rows, TailStrategy::ShiftInwards).fuse(yo, n, yn).parallel(yn);
  return yn;
}

// ---------------------------------------------------------------------------------------------
// Forward

Func depthwise_forward(ForwardContext& ctx) {
  Window w(ctx.graph, ctx.node);
  int channels = w.middle();
  Var c("c"), x("x"), y("y"), n("n");
  Func image = w.image(ctx.inputs[0]);
  ImageParam kernel = ctx.params.at("depthwise_kernel");
  RDom r(0, w.kw, 0, w.kh, "r");
  Func acc("acc");
  acc(c, x, y, n) = ctx.node.attrs.get_bool("use_bias") ? ctx.params.at("bias")(c) : Expr(0.0f);
  acc(c, x, y, n) += w.weight(kernel, c, r.x, r.y) * w.input_at(image, c, x, y, n, r.x, r.y);
  Func logits;
  std::vector<Func> per_pixel;
  Func output = fused_epilogue(ctx.node, ctx.fold(acc), channels, logits, per_pixel);

  if (!ctx.hand) return output;
  Func tiled = logits.defined() ? logits : output;  // the Func the window sums are tiled in
  if (logits.defined()) logits.compute_root();
  Var co("co"), ci("ci"), xo("xo"), xi("xi");
  if (ctx.sched.gpu) {
    schedule_gpu_tiles(tiled, acc, output, per_pixel, channels, w.out_width);
    ctx.schedule = "gpu: threads over 32 channels x 8 pixels, accumulator per thread";
    return output;
  }
  // A register tile of one channel block x `tile` pixels: each weight vector is loaded once per
  // tile, each input vector once per tap; the taps are unrolled.
  int block = channel_block(ctx.sched, channels, 1), vec = std::min(block, ctx.sched.vector);
  int vectors = (block + ctx.sched.vector - 1) / ctx.sched.vector;
  int tile = pick_tile(w.out_width, ctx.sched.pixel_tile, vectors, ctx.sched.registers);
  tiled.split(c, co, ci, block).split(x, xo, xi, tile).reorder(ci, xi, co, xo, y, n).vectorize(ci, vec).unroll(xi);
  int64_t row_flops = int64_t(w.out_width) * channels * w.kh * w.kw * 2;
  Var task = parallelize_rows(tiled, y, n, row_flops, rows_per_task(w));
  acc.compute_at(tiled, co).vectorize(c, vec).unroll(x);
  Stage sum = acc.update().reorder(c, x, r.x, r.y, y, n).vectorize(c, vec).unroll(x);
  if (unroll_taps(w)) sum.unroll(r.x);
  schedule_padding_and_softmax(ctx, w, image, tiled, task, output, per_pixel, channels);
  ctx.schedule = fmt::format("cpu: depthwise register tile {} channels x {} pixels, taps unrolled, {}", block, tile,
                             task.name() == n.name() ? std::string("images as tasks") : fmt::format("tasks of {} rows", rows_per_task(w)));
  return output;
}

// separable: the depthwise step into `middle` one row of pixels at a time, then the pointwise
// 1x1 convolution with the register tiles of conv2d, bias and activation.
Func separable_forward(ForwardContext& ctx) {
  Window w(ctx.graph, ctx.node);
  int middle_channels = w.middle(), filters = int(ctx.node.unfused_shape[2]);
  Var c("c"), x("x"), y("y"), n("n");
  Func image = w.image(ctx.inputs[0]);
  ImageParam kernel = ctx.params.at("depthwise_kernel"), pointwise = ctx.params.at("pointwise_kernel");
  RDom r(0, w.kw, 0, w.kh, "r");
  Func middle("middle");
  middle(c, x, y, n) = 0.0f;
  middle(c, x, y, n) += w.weight(kernel, c, r.x, r.y) * w.input_at(image, c, x, y, n, r.x, r.y);
  RDom j(0, middle_channels, "j");
  Func acc("acc");
  acc(c, x, y, n) = ctx.node.attrs.get_bool("use_bias") ? ctx.params.at("bias")(c) : Expr(0.0f);
  acc(c, x, y, n) += pointwise(c, j, 0, 0) * middle(j, x, y, n);
  Func logits;
  std::vector<Func> per_pixel;
  Func output = fused_epilogue(ctx.node, ctx.fold(acc), filters, logits, per_pixel);

  if (!ctx.hand) return output;
  Func tiled = logits.defined() ? logits : output;
  if (logits.defined()) logits.compute_root();
  Var co("co"), ci("ci"), xo("xo"), xi("xi"), yn("yn");
  if (ctx.sched.gpu) {
    Var mo("mo"), mi("mi"), mxo("mxo"), mxi("mxi"), myn("myn");
    middle.compute_root()
        .gpu_tile(c, x, mo, mxo, mi, mxi, std::min(32, middle_channels), std::min(8, w.out_width), TailStrategy::GuardWithIf)
        .fuse(y, n, myn)
        .gpu_blocks(myn);
    middle.update()
        .gpu_tile(c, x, mo, mxo, mi, mxi, std::min(32, middle_channels), std::min(8, w.out_width), TailStrategy::GuardWithIf)
        .fuse(y, n, myn)
        .gpu_blocks(myn);
    schedule_gpu_tiles(tiled, acc, output, per_pixel, filters, w.out_width);
    ctx.schedule = "gpu: the depthwise step, then threads over 32 filters x 8 pixels";
    return output;
  }
  // Pointwise: register tiles of channel_vectors vectors of filters x `tile` pixels over the
  // middle channels, as conv2d's; per row of outputs (one task), the depthwise step first.
  int block = channel_block(ctx.sched, filters, ctx.sched.channel_vectors), vec = std::min(block, ctx.sched.vector);
  int vectors = (block + ctx.sched.vector - 1) / ctx.sched.vector;
  int tile = pick_tile(w.out_width, ctx.sched.pixel_tile, vectors, ctx.sched.registers);
  tiled.split(c, co, ci, block).split(x, xo, xi, tile).reorder(ci, xi, co, xo, y, n).vectorize(ci, vec).unroll(ci).unroll(xi);
  Var yo("yo"), yi("yi");
  tiled.split(y, yo, yi, rows_per_task(w), TailStrategy::ShiftInwards).fuse(yo, n, yn).parallel(yn);
  acc.compute_at(tiled, co).vectorize(c, vec).unroll(c).unroll(x);
  acc.update().reorder(c, x, j, y, n).vectorize(c, vec).unroll(c).unroll(x);
  int middle_vec = std::min(ctx.sched.vector, middle_channels);
  middle.compute_at(tiled, yi);
  vectorize_pure(middle, c, ctx.sched.vector, middle_channels);
  Stage sum = middle.update().reorder(c, r.x, r.y, x, y, n);
  vectorize_update(sum, c, middle_vec, middle_channels);
  if (unroll_taps(w)) sum.unroll(r.x);
  schedule_padding_and_softmax(ctx, w, image, tiled, yn, output, per_pixel, filters);
  ctx.schedule = fmt::format("cpu: tasks of {} output rows, the depthwise step per row, then register tile {} filters x {} pixels",
                             rows_per_task(w), block, tile);
  return output;
}

// ---------------------------------------------------------------------------------------------
// Backward

// d(bias)(c) = sum over the batch and the pixels of dout(c), added to the parameter gradients.
void add_bias_gradient(BackwardContext& ctx, Func dout, int channels, int width, int height) {
  Var c("c");
  RDom pixels(0, width, 0, height, 0, ctx.batch, "pixels");
  Func bias_sum("bias_sum"), bias_grad("bias_gradient");
  bias_sum(c) = 0.0f;
  bias_sum(c) += dout(c, pixels.x, pixels.y, pixels.z);
  bias_grad(c) = bias_sum(c);
  if (!ctx.hand) {
  } else if (!ctx.sched.gpu) {
    int vec = std::min(ctx.sched.vector, channels);
    bias_sum.compute_at(bias_grad, Var::outermost()).vectorize(c, vec);
    vectorize_update(bias_sum.update().reorder(c, pixels.x, pixels.y, pixels.z), c, vec, channels);
  } else {
    bias_grad.gpu_tile(c, Var("b"), Var("t"), std::min(32, channels), TailStrategy::GuardWithIf);
    bias_sum.compute_at(bias_grad, Var("t"));
  }
  ctx.param_grads.emplace_back("bias", bias_grad);
}

// The gradients of a depthwise step from d(its output): `dout` over (o, x, y, n), computed
// root. Adds d(depthwise_kernel) (and d(bias) when `bias`) to the parameter gradients and sets
// the input gradient where the kernel computes one.
void depthwise_backward(BackwardContext& ctx, const Window& w, Func dout, bool bias) {
  int channels = w.middle();
  Var c("c"), x("x"), y("y"), n("n"), k("k"), kx("kx"), ky("ky"), m("m");
  ImageParam kernel = ctx.params.at("depthwise_kernel");
  Func image = w.image(ctx.inputs[0]);

  if (bias) add_bias_gradient(ctx, dout, channels, w.out_width, w.out_height);

  // d(kernel)(o, kx, ky) = sum over the batch and the output pixels of dout(o) * input(o / M),
  // in fixed batch chunks summed in order (the same result for any thread count).
  BatchChunks batch(ctx, k, w.out_width, w.out_height, "r");
  int chunks = batch.count;
  RDom r = batch.r;
  Func kernel_acc("kernel_acc"), kernel_partial("kernel_partial"), kernel_grad("depthwise_kernel_gradient");
  kernel_acc(c, kx, ky, k) = 0.0f;
  kernel_acc(c, kx, ky, k) += dout(c, r.x, r.y, batch.image) * w.input_at(image, c, r.x, r.y, batch.image, kx, ky);
  kernel_partial(c, kx, ky, k) = kernel_acc(c, kx, ky, k);
  Var ci("ci");
  kernel_grad(m, ci, kx, ky) = batch.in_order([&](int i) { return kernel_partial(ci * w.multiplier + m, kx, ky, i); });
  ctx.param_grads.emplace_back("depthwise_kernel", kernel_grad);
  if (!ctx.hand) {
  } else if (ctx.sched.gpu) {
    Var b0("b0"), b1("b1"), t0("t0"), t1("t1"), q("q");
    kernel_partial.compute_root().fuse(kx, ky, q).gpu_tile(c, q, b0, b1, t0, t1, std::min(32, channels), 1,
                                                            TailStrategy::GuardWithIf);
    kernel_acc.compute_at(kernel_partial, t0);
  } else {
    // Per chunk and channel block, every tap's accumulator in registers over the chunk's pixels.
    int taps = w.kh * w.kw;
    int vectors = std::max(1, std::min(2, 24 / std::max(1, taps)));
    int kblock = channel_block(ctx.sched, channels, vectors), kvec = std::min(kblock, ctx.sched.vector);
    Var co("co"), cii("cii"), t("t");
    kernel_partial.compute_root().split(c, co, cii, kblock).reorder(cii, kx, ky, co, k).vectorize(cii, kvec).fuse(co, k, t)
        .parallel(t);
    kernel_acc.compute_at(kernel_partial, t).vectorize(c, kvec);
    Stage sum = kernel_acc.update().reorder(c, kx, ky, r.x, r.y, r.z, k).vectorize(c, kvec);
    if (taps <= 25) {
      kernel_acc.unroll(kx).unroll(ky);
      sum.unroll(c).unroll(kx).unroll(ky);
    }
  }

  if (!ctx.kernel.input_grad[0]) return;
  // d(input)(ci, x, y) = sum over m and the taps of w(m, ci, kx, ky) * dout(ci * M + m, ox, oy)
  // where ox * stride + kx * dilation - left == x: dout zero-padded, the taps on the stride kept.
  Func dpadded("dout_padded");
  dpadded(c, x, y, n) = select(x >= 0 && x < w.out_width && y >= 0 && y < w.out_height,
                               dout(c, clamp(x, 0, w.out_width - 1), clamp(y, 0, w.out_height - 1), n), 0.0f);
  // CPU, strides: by phases. Input column x receives from tap kx only where x + left - kx * dw is
  // on the stride, so each phase (x % sw, y % sh) has its own fixed taps (3x3, stride 2: 4, 2, 2
  // and 1 of the 9); summing all taps behind a select did 4x the work. The phases' sums are
  // written out, and x and y split by the strides and unrolled, so that each unrolled position
  // computes its phase's taps alone.
  bool phases = ctx.hand && !ctx.sched.gpu && (w.sw > 1 || w.sh > 1);
  RDom rin;
  Func input_sum("input_sum"), input_grad("input_gradient");
  if (phases) {
    Expr result = 0.0f;
    for (int py = w.sh - 1; py >= 0; --py)
      for (int px = w.sw - 1; px >= 0; --px) {
        Expr phase_sum = 0.0f;
        for (int ky = 0; ky < w.kh; ++ky)
          for (int kx = 0; kx < w.kw; ++kx) {
            // On the stride where (px + left - kx * dw) % sw == 0 (a non-negative remainder).
            if (((px + w.left - kx * w.dw) % w.sw + w.sw) % w.sw != 0) continue;
            if (((py + w.top - ky * w.dh) % w.sh + w.sh) % w.sh != 0) continue;
            Expr ox = (x + w.left - kx * w.dw) / w.sw, oy = (y + w.top - ky * w.dh) / w.sh;
            for (int m = 0; m < w.multiplier; ++m)
              phase_sum = phase_sum + kernel(m, c, kx, ky) * dpadded(c * w.multiplier + m, ox, oy, n);
          }
        result = (px == w.sw - 1 && py == w.sh - 1) ? phase_sum : select(x % w.sw == px && y % w.sh == py, phase_sum, result);
      }
    input_grad(c, x, y, n) = result;
  } else {
    rin = RDom(0, w.multiplier, 0, w.kw, 0, w.kh, "rin");
    Expr sx = x + w.left - dilated(rin.y, w.dw), sy = y + w.top - dilated(rin.z, w.dh);
    Expr tap;
    if (w.sw == 1 && w.sh == 1) {
      tap = dpadded(c * w.multiplier + rin.x, sx, sy, n);
    } else {  // strides on the GPU, or for an autoscheduler (!ctx.hand)
      Expr on_stride = sx % w.sw == 0 && sy % w.sh == 0;
      tap = select(on_stride, dpadded(c * w.multiplier + rin.x, sx / w.sw, sy / w.sh, n), 0.0f);
    }
    input_sum(c, x, y, n) = 0.0f;
    input_sum(c, x, y, n) += kernel(rin.x, c, rin.y, rin.z) * tap;
    input_grad(c, x, y, n) = input_sum(c, x, y, n);
  }
  ctx.input_grads[0] = input_grad;
  if (!ctx.hand) return;
  if (ctx.sched.gpu) {
    dpadded.compute_root()
        .gpu_tile(c, x, Var("pb0"), Var("pb1"), Var("pt0"), Var("pt1"), std::min(32, channels), 4, TailStrategy::GuardWithIf)
        .fuse(y, n, Var("pyn"))
        .gpu_blocks(Var("pyn"));
    Var b0("b0"), b1("b1"), t0("t0"), t1("t1"), yn("yn");
    input_grad.compute_root().gpu_tile(c, x, b0, b1, t0, t1, std::min(32, w.channels), std::min(8, w.width),
                                       TailStrategy::GuardWithIf).fuse(y, n, yn).gpu_blocks(yn);
    input_sum.compute_at(input_grad, t0);
    return;
  }
  dpadded.compute_root().parallel(n);
  vectorize_pure(dpadded, c, ctx.sched.vector, channels);
  if (phases) {
    // sh rows x sw columns (one value of each phase) per step, unrolled; the channels innermost,
    // vectorized; rows of steps x images as tasks.
    int vec = std::min(ctx.sched.vector, w.channels);
    Var xo("xo"), xi("xi"), yo("yo"), yi("yi"), yn("yn");
    input_grad.compute_root().split(x, xo, xi, w.sw, TailStrategy::GuardWithIf)
        .split(y, yo, yi, w.sh, TailStrategy::GuardWithIf).reorder(c, xi, yi, xo, yo, n)
        .unroll(xi).unroll(yi).fuse(yo, n, yn).parallel(yn);
    vectorize_pure(input_grad, c, vec, w.channels);
    ctx.direct_input_grad = true;  // written straight into the output, not copied there
    ctx.schedule = fmt::format("depthwise backward: weight taps in registers per channel block, {} batch chunks; input "
                               "gradient by the {} phases of the stride, each its own taps", chunks, w.sw * w.sh);
    return;
  }
  int in_block = channel_block(ctx.sched, w.channels, 1), in_vec = std::min(in_block, ctx.sched.vector);
  int tile = pick_tile(w.width, ctx.sched.pixel_tile, 1, ctx.sched.registers);
  Var cio("cio"), cii("cii"), xo("xo"), xi("xi"), yn("yn");
  input_grad.compute_root().split(c, cio, cii, in_block).split(x, xo, xi, tile).reorder(cii, xi, cio, xo, y, n)
      .vectorize(cii, in_vec).unroll(xi).fuse(y, n, yn).parallel(yn);
  input_sum.compute_at(input_grad, cio).vectorize(c, in_vec).unroll(x);
  Stage sum = input_sum.update().reorder(c, x, rin.x, rin.y, rin.z, y, n).vectorize(c, in_vec).unroll(x);
  if (unroll_taps(w)) sum.unroll(rin.y);
  ctx.schedule = fmt::format("depthwise backward: weight taps in registers per channel block, {} batch chunks", chunks);
}

void depthwise_conv2d_backward(BackwardContext& ctx) {
  Window w(ctx.graph, ctx.node);
  Func dpre("dpre");  // materialized where computed (not a plain read): the three gradients read it
  Var c("c"), x("x"), y("y"), n("n");
  dpre(c, x, y, n) = ctx.pre(c, x, y, n);
  if (!BackwardContext::plain_read(ctx.pre)) ctx.compute_root(dpre, {c, x, y, n}, ctx.node.unfused_shape);
  depthwise_backward(ctx, w, dpre, ctx.node.attrs.get_bool("use_bias"));
}

// separable: d(bias) = sum of pre; the depthwise step recomputed into `middle`; d(pointwise) =
// sum over pixels of pre(f) * middle(j); d(middle)(j) = sum over f of pointwise(f, j) * pre(f);
// then the depthwise step's gradients from d(middle).
void separable_conv2d_backward(BackwardContext& ctx) {
  Window w(ctx.graph, ctx.node);
  int middle_channels = w.middle(), filters = int(ctx.node.unfused_shape[2]);
  Var c("c"), x("x"), y("y"), n("n"), f("f"), j("j"), k("k");
  Shape middle_shape = {w.out_height, w.out_width, middle_channels};
  Func dpre("dpre");
  dpre(c, x, y, n) = ctx.pre(c, x, y, n);
  if (!BackwardContext::plain_read(ctx.pre)) ctx.compute_root(dpre, {c, x, y, n}, ctx.node.unfused_shape);

  if (ctx.node.attrs.get_bool("use_bias")) add_bias_gradient(ctx, dpre, filters, w.out_width, w.out_height);

  // The depthwise step again (cheaper than keeping it: kh * kw FLOPs per value).
  ImageParam kernel = ctx.params.at("depthwise_kernel"), pointwise = ctx.params.at("pointwise_kernel");
  Func image = w.image(ctx.inputs[0]);
  RDom r(0, w.kw, 0, w.kh, "r");
  Func middle("middle");
  middle(c, x, y, n) = 0.0f;
  middle(c, x, y, n) += w.weight(kernel, c, r.x, r.y) * w.input_at(image, c, x, y, n, r.x, r.y);

  // d(pointwise)(f, j) in fixed batch chunks summed in order.
  BatchChunks batch(ctx, k, w.out_width, w.out_height, "rp");
  RDom rp = batch.r;
  Func point_acc("pointwise_acc"), point_partial("pointwise_partial"), point_grad("pointwise_kernel_gradient");
  point_acc(f, j, k) = 0.0f;
  point_acc(f, j, k) += dpre(f, rp.x, rp.y, batch.image) * middle(j, rp.x, rp.y, batch.image);
  point_partial(f, j, k) = point_acc(f, j, k);
  Var kx("kx"), ky("ky");
  point_grad(f, j, kx, ky) = batch.in_order([&](int i) { return point_partial(f, j, i); });
  ctx.param_grads.emplace_back("pointwise_kernel", point_grad);

  // d(middle)(j) = sum over the filters of pointwise(f, j) * dpre(f).
  RDom rf(0, filters, "rf");
  Func transposed("pointwise_transposed");
  transposed(j, f) = pointwise(f, j, 0, 0);
  Func dmiddle_acc("dmiddle_acc"), dmiddle("dmiddle");
  dmiddle_acc(c, x, y, n) = 0.0f;
  dmiddle_acc(c, x, y, n) += transposed(c, rf) * dpre(rf, x, y, n);
  dmiddle(c, x, y, n) = dmiddle_acc(c, x, y, n);

  if (!ctx.hand) {
  } else if (ctx.sched.gpu) {
    Var b0("b0"), b1("b1"), t0("t0"), t1("t1"), yn("yn");
    middle.compute_root().gpu_tile(c, x, b0, b1, t0, t1, std::min(32, middle_channels), std::min(8, w.out_width),
                                   TailStrategy::GuardWithIf).fuse(y, n, yn).gpu_blocks(yn);
    middle.update().gpu_tile(c, x, b0, b1, t0, t1, std::min(32, middle_channels), std::min(8, w.out_width),
                             TailStrategy::GuardWithIf).fuse(y, n, yn).gpu_blocks(yn);
    point_partial.compute_root().gpu_tile(f, j, b0, b1, t0, t1, std::min(32, filters), std::min(4, middle_channels),
                                          TailStrategy::GuardWithIf);
    point_acc.compute_at(point_partial, t0);
    transposed.compute_root();
    dmiddle.compute_root().gpu_tile(c, x, b0, b1, t0, t1, std::min(32, middle_channels), std::min(8, w.out_width),
                                    TailStrategy::GuardWithIf).fuse(y, n, yn).gpu_blocks(yn);
    dmiddle_acc.compute_at(dmiddle, t0);
  } else {
    int vec = std::min(ctx.sched.vector, middle_channels);
    Var yn("yn");
    middle.compute_root();
    vectorize_pure(middle, c, ctx.sched.vector, middle_channels);
    middle.fuse(y, n, yn).parallel(yn);
    Stage sum = middle.update().reorder(c, r.x, r.y, x, y, n);
    vectorize_update(sum, c, vec, middle_channels);
    if (unroll_taps(w)) sum.unroll(r.x);
    sum.fuse(y, n, yn).parallel(yn);
    // d(pointwise): register tile of filter vectors x middle channels, as conv2d's weight gradient.
    int block = channel_block(ctx.sched, filters, ctx.sched.channel_vectors), fvec = std::min(block, ctx.sched.vector);
    int tile = std::min(middle_channels, ctx.sched.pixel_tile);
    Var fo("fo"), fi("fi"), jo("jo"), ji("ji"), t1("t1"), t2("t2");
    point_partial.compute_root().split(f, fo, fi, block).split(j, jo, ji, tile).reorder(fi, ji, fo, jo, k)
        .vectorize(fi, fvec).fuse(fo, jo, t1).fuse(t1, k, t2).parallel(t2);
    point_acc.compute_at(point_partial, t2).vectorize(f, fvec).unroll(f).unroll(j);
    point_acc.update().reorder(f, j, rp.x, rp.y, rp.z, k).vectorize(f, fvec).unroll(f).unroll(j);
    point_grad.vectorize(f, std::min(ctx.sched.vector, filters), TailStrategy::GuardWithIf);
    transposed.compute_root();
    // d(middle): register tile of middle-channel vectors x pixels over the filters.
    int mblock = channel_block(ctx.sched, middle_channels, ctx.sched.channel_vectors), mvec = std::min(mblock, ctx.sched.vector);
    int mtile = pick_tile(w.out_width, ctx.sched.pixel_tile, (mblock + ctx.sched.vector - 1) / ctx.sched.vector,
                          ctx.sched.registers);
    Var co("co"), ci("ci"), xo("xo"), xi("xi"), dyn("dyn");
    dmiddle.compute_root().split(c, co, ci, mblock).split(x, xo, xi, mtile).reorder(ci, xi, co, xo, y, n)
        .vectorize(ci, mvec).unroll(ci).unroll(xi).fuse(y, n, dyn).parallel(dyn);
    dmiddle_acc.compute_at(dmiddle, co).vectorize(c, mvec).unroll(c).unroll(x);
    dmiddle_acc.update().reorder(c, x, rf, y, n).vectorize(c, mvec).unroll(c).unroll(x);
  }
  depthwise_backward(ctx, w, dmiddle, /*bias=*/false);
  ctx.schedule = "separable backward: pointwise register tiles, then " + ctx.schedule;
}

}  // namespace

void register_depthwise_halide() {
  HalideOp depthwise;
  depthwise.stamp = __DATE__ " " __TIME__;
  depthwise.forward = depthwise_forward;
  depthwise.backward = depthwise_conv2d_backward;
  register_halide_op("depthwise_conv2d", depthwise);

  HalideOp separable;
  separable.stamp = __DATE__ " " __TIME__;
  separable.forward = separable_forward;
  separable.backward = separable_conv2d_backward;
  separable.schedule_space = [](const Node&, const KernelInfo&) { return register_tile_space(); };
  register_halide_op("separable_conv2d", separable);
}

}  // namespace cnnc
