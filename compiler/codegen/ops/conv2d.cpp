// conv2d's Halide half: the forward kernel with its fused activation and pooling, the backward
// kernel, and their schedule space. The op itself: ops/conv.cpp.
#include "codegen/halide_op.h"

#include <numeric>
#include <tuple>

namespace cnnc {

namespace {

// The kernel size Winograd serves in this conv2d's forward and input gradient: 3 (F(2x2, 3x3) or
// F(4x4, 3x3)) or 5 (F(2x2, 5x5)), at stride 1 (any dilation); 0 where it does not apply.
int winograd_kernel(const Node& node) {
  if (node.attrs.get_pair("stride") != std::pair<int64_t, int64_t>{1, 1}) return 0;
  auto kernel = node.attrs.get_pair("kernel");
  if (kernel == std::pair<int64_t, int64_t>{3, 3}) return 3;
  return kernel == std::pair<int64_t, int64_t>{5, 5} ? 5 : 0;
}

// Whether Winograd can compute both of this conv2d's gradients (F(3x3, 2x2) or F(5x5, 2x2) for
// the weights, and the input's as the forward): a 3x3 or 5x5 kernel, stride 1 (any dilation).
bool winograd_applies_to_backward(const Node& node) { return winograd_kernel(node) != 0; }

bool fuses_pooling(const Node& node) {
  for (const Node::FusedOp& fused : node.fused)
    if (fused.def->traits.pooling != Pooling::None) return true;
  return false;
}

// ... and its forward kernel: the same, with no fused softmax (the direct schedule fuses it),
// and with fused pooling only where the kernel keeps nothing but the pooled values (inference)
// or them and the window maxima's positions (training, saves_pool_index): a training kernel that
// keeps the whole activation for backward stays direct.
bool winograd_applies(const Node& node, const KernelInfo& kernel) {
  if (kernel.kind == KernelKind::Backward || node.op_name() != "conv2d") return false;
  if (fuses_pooling(node) && kernel.kind == KernelKind::ForwardTrain && !saves_pool_index(node)) return false;
  for (const Node::FusedOp& fused : node.fused)
    if (fused.def->traits.softmax) return false;
  return winograd_kernel(node) != 0;
}

int winograd_tile(const Node& node, const ScheduleParams& sched);

// Winograd's products per output against the direct algorithm's multiply-adds (k^2 per output
// and channel pair for a k x k kernel), with the tile side m the rule picks: (m + k - 1)^2 / m^2
// per output of the tiles, which cover whole blocks of m d outputs along each axis (d the
// dilation) and so more than the output where m d does not divide it: a 7x7 output dilated 3
// takes 6 tiles a side covering 12.
double winograd_work_ratio(const Node& node) {
  int m = winograd_tile(node, ScheduleParams{}), k = std::max(3, winograd_kernel(node)), t = m + k - 1;
  auto [dh, dw] = node.attrs.get_pair("dilation");
  auto covered = [m](int64_t extent, int64_t d) {
    return double((extent + m * d - 1) / (m * d) * m * d) / double(extent);
  };
  return double(t * t) / double(k * k * m * m) * covered(node.unfused_shape.at(0), dh) *
         covered(node.unfused_shape.at(1), dw);
}

// The rule for the default algorithm where Winograd applies: at least 16 input and 16 output
// channels. Its products are matrix products over the input channels, and their cost must
// cover the input and output transforms: on the zoo (AVX-512, 2026-12-01) 1.25-1.4x faster than
// the direct schedule at 16 channels, 1.3-1.77x at 32 and 64, 3x slower with one input channel.
// And its tiles must not cover much more than the output: products at most 0.6 of the direct
// algorithm's (winograd_work_ratio), 0.5 with dilation, whose d x d interleaved tiles per block
// run slower. Measured with 24 and 48 channels (F(2x2), batch 64, forward and backward kernels,
// three alternating runs, docs/performance.md): Winograd 1.05-1.5x faster at ratios 0.44-0.55
// (4x4, 9x9, 11x11, 13x13; 12x12 and 18x18 dilated 3), even to 1.2x at 0.58 (7x7), slower at
// 0.64-0.79 (5x5, 3x3: 0.75-1.05x); dilated, 0.66-0.94x at 0.58-1.31 (14x14 and 7x7 dilated 2,
// 10x10 and 6x6 dilated 2, 9x9 and 7x7 dilated 3: a 7x7 map dilated 3, 71 -> 141 channels,
// forward and backward 10.8 -> 5.5 ms direct). 5x5 kernels by F(2x2, 5x5) (0.36 of the direct
// products on whole tiles), 24 and 48 channels on 5x5 to 28x28 maps: forward 1.4-1.9x faster
// (one 0.75x: 24 channels on 7x7), backward with the input gradient by Winograd 1.07-1.29x;
// then with the weight gradient by F(5x5, 2x2) too, against that, two alternating runs: 48
// channels 1.18-1.39x on 8x8 to 28x28, even on 7x7, 0.9x on 5x5; 24 channels 1.07-1.12x in one
// run and 0.88-0.90x in the next on 8x8 to 28x28, 0.70-0.90x on 5x5 and 7x7.
// `cnnc tune` measures the other algorithm too (algorithm=direct / algorithm=winograd).
bool winograd_by_default(const Node& node) {
  const Shape& kernel = node.params.at(0).shape;  // [kh, kw, in, filters]
  if (kernel.at(2) < 16 || kernel.at(3) < 16) return false;
  auto [dh, dw] = node.attrs.get_pair("dilation");
  return winograd_work_ratio(node) <= (dh > 1 || dw > 1 ? 0.5 : 0.6);
}

// Where Winograd applies, whether a kernel uses it: the knob, else the rule (for the input
// gradient too: its products reduce over the output channels).
bool winograd_chosen(const Node& node, const ScheduleParams& sched) {
  return sched.algorithm.empty() ? winograd_by_default(node) : sched.algorithm.rfind("winograd", 0) == 0;
}

// Where neither Winograd nor the 1x1 GEMM computes a conv2d's input gradient: whether a
// convolution of the zero-padded output gradient with the flipped kernel does (knob
// algorithm=padded), rather than a GEMM into columns (in_channels x taps per output pixel) and
// col2im (knob algorithm=columns). The convolution applies at stride 1 where the output is as
// large as the input ('same' padding), where it does exactly the forward's work; the rule picks
// it there. The columns do the same work, but write and read in_channels x taps values per
// pixel: a 7x7 conv of 39 channels on 32x32 (batch 64) wrote and read 7.8 MB per image,
// far past the L2 cache.
bool padded_input_gradient_applies(const Node& node) {
  auto [kh, kw] = node.attrs.get_pair("kernel");
  auto [sh, sw] = node.attrs.get_pair("stride");
  return sh == 1 && sw == 1 && kh * kw > 1 && node.attrs.get_string("padding") == "same";
}
bool padded_input_gradient(const Node& node, const ScheduleParams& sched) {
  return !sched.gpu && padded_input_gradient_applies(node) && sched.algorithm != "columns";
}

// Winograd's output tile side m for the forward and input-gradient kernels: the knob
// (algorithm=winograd: F(2x2, 3x3), algorithm=winograd4: F(4x4, 3x3)), else the rule: F(4x4)
// (2.25 products per output instead of 4, but heavier transforms) where both channel counts are
// at least 32 and, along each axis, its tiles cover no more of the output than F(2x2)'s (a
// ragged last tile computes outputs that are thrown away) and number at least 4. Measured on
// the zoo's shapes (AVX-512, 2026-12-01), F(4x4) against F(2x2): 32 channels on 16x16 1.12-1.26x
// faster (forward and input gradient), 32 -> 64 channels on 14x14 dilated 2 1.3x (forward); slower where
// only its tiles are ragged (14x14: 0.83x, 28x28 dilated 2: 0.9x) and with 2 tiles a side (8x8,
// 64 channels, input gradient: 0.87x); about even with 16 channels (0.95-1.1x by batch).
int winograd_tile(const Node& node, const ScheduleParams& sched) {
  if (winograd_kernel(node) == 5) return 2;  // F(2x2, 5x5) only
  if (sched.algorithm == "winograd4") return 4;
  if (sched.algorithm == "winograd") return 2;
  const Shape& kernel = node.params.at(0).shape;  // [kh, kw, in, filters]
  if (kernel.at(2) < 32 || kernel.at(3) < 32) return 2;
  auto [dh, dw] = node.attrs.get_pair("dilation");
  auto suits = [](int64_t extent, int64_t d) {
    int64_t covered2 = (extent + 2 * d - 1) / (2 * d) * 2 * d, tiles4 = (extent + 4 * d - 1) / (4 * d) * d;
    return tiles4 * 4 <= covered2 && tiles4 >= 4;
  };
  return suits(node.unfused_shape.at(0), dh) && suits(node.unfused_shape.at(1), dw) ? 4 : 2;
}

// The knob for the Winograd tile size the rule does not pick (a tuning candidate).
ScheduleKnobs other_winograd_tile(const Node& node) {
  ScheduleKnobs knobs;
  knobs.algorithm = winograd_tile(node, ScheduleParams{}) == 4 ? "winograd" : "winograd4";
  return knobs;
}

// Winograd F(m x m, 3x3) (Lavin and Gray, 2015), m = 2 or 4: each m x m output tile from a
// t x t input tile (t = m + 2), with t^2 multiplications per input channel instead of 9 m^2 (16
// instead of 36 for m = 2, 36 instead of 144 for m = 4). With d the input tile, g the 3x3 kernel
// and Y the output tile: U = G g G^T (once per call), V = B^T d B, M = sum over the input
// channels of U * V (per position of the t x t tile: t^2 matrix products over the channels), and
// Y = A^T M A. With dilation d, a tile's m outputs (and its input tile's t values) lie d apart:
// tile tx covers x = (tx / d) m d + tx % d + d px, px < m. Its results differ from the direct
// algorithm's by rounding (tests/test_kernels.cpp: within 1e-4 of the largest value; m = 4's
// interpolation points 0, +-1, +-2 round more than m = 2's).
struct Winograd {
  Func kernel_transform{"winograd_kernel"}, input_transform{"winograd_input"};
  Func product{"winograd_product"}, product_acc{"winograd_product_acc"};
  Var e{"e"}, nu{"nu"}, tx{"tx"}, ty{"ty"};
  RDom r;
  int m = 2;      // outputs per tile side
  int ksize = 3;  // the kernel's side: 3, or 5 (with m = 2)
  int t() const { return m + ksize - 1; }  // the input tile's side

  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
  // F(4x4, 3x3): points 0, 1, -1, 2, -2 and infinity.
  static constexpr float BT4[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                      {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float G4[6][3] = {{1.0f / 4, 0, 0},
                                     {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                                     {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                                     {1.0f / 24, 1.0f / 12, 1.0f / 6},
                                     {1.0f / 24, -1.0f / 12, 1.0f / 6},
                                     {0, 0, 1}};
  static constexpr float AT4[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
  // F(2x2, 5x5): the same points and input transform (BT4); the kernel transform's row for point
  // p is F(4x4, 3x3)'s factor times (1, p, p^2, p^3, p^4), and the output transform's rows are
  // (1, p) with 1 at infinity in the last (checked against the direct algorithm in
  // tests/test_kernels.cpp).
  static constexpr float G5[6][5] = {{1.0f / 4, 0, 0, 0, 0},
                                     {-1.0f / 6, -1.0f / 6, -1.0f / 6, -1.0f / 6, -1.0f / 6},
                                     {-1.0f / 6, 1.0f / 6, -1.0f / 6, 1.0f / 6, -1.0f / 6},
                                     {1.0f / 24, 1.0f / 12, 1.0f / 6, 1.0f / 3, 2.0f / 3},
                                     {1.0f / 24, -1.0f / 12, 1.0f / 6, -1.0f / 3, 2.0f / 3},
                                     {0, 0, 0, 0, 1}};
  static constexpr float AT25[2][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 1}};

  // sum over (i, j) of a[row][i] * b[col][j] * value(i, j), without the zero terms.
  template <size_t N, size_t K>
  static Expr bilinear(const float (&a)[N][K], int row, const float (&b)[N][K], int col, const std::function<Expr(int, int)>& value) {
    Expr total;
    for (size_t i = 0; i < K; ++i)
      for (size_t j = 0; j < K; ++j) {
        float coefficient = a[row][i] * b[col][j];
        if (coefficient == 0) continue;
        Expr term = value(int(i), int(j));
        if (coefficient == -1) term = -term;
        else if (coefficient != 1) term = term * coefficient;
        total = total.defined() ? total + term : term;
      }
    return total.defined() ? total : Expr(0.0f);
  }
  // The three transforms of this m.
  Expr transform_kernel(int a, int b, const std::function<Expr(int, int)>& value) const {
    if (ksize == 5) return bilinear(G5, a, G5, b, value);
    return m == 2 ? bilinear(G, a, G, b, value) : bilinear(G4, a, G4, b, value);
  }
  Expr transform_input(int a, int b, const std::function<Expr(int, int)>& value) const {
    return t() == 4 ? bilinear(BT, a, BT, b, value) : bilinear(BT4, a, BT4, b, value);
  }
  Expr transform_output(int a, int b, const std::function<Expr(int, int)>& value) const {
    if (ksize == 5) return bilinear(AT25, a, AT25, b, value);
    return m == 2 ? bilinear(AT, a, AT, b, value) : bilinear(AT4, a, AT4, b, value);
  }

  // A value per (e, nu) of the t x t tile, picked by constant conditions once e and nu are unrolled.
  Expr per_position(const std::function<Expr(int, int)>& at) const {
    int last = t() - 1;
    Expr result = at(last, last);
    for (int a = last; a >= 0; --a)
      for (int b = last; b >= 0; --b)
        if (a != last || b != last) result = select(e == a && nu == b, at(a, b), result);
    return result;
  }

  int dw = 1, dh = 1;  // dilation

  // FLOPs per example of the products (2 per multiply-add) for an output of width x height x
  // out_channels from in_channels: (m + k - 1)^2 per tile and channel pair for a k x k kernel;
  // tiles of a row: ceil(width / m d) d.
  static int64_t product_flops(int in_channels, int out_channels, int width, int height, int dw, int dh, int m = 2,
                               int ksize = 3) {
    int64_t tiles_x = (width + m * dw - 1) / (m * dw) * dw, tiles_y = (height + m * dh - 1) / (m * dh) * dh;
    return 2 * int64_t(m + ksize - 1) * (m + ksize - 1) * in_channels * out_channels * tiles_x * tiles_y;
  }

  // The k x k correlation (k = ksize) (c, x, y, n) of `source` (c, x, y, n: defined past the input's edges,
  // zero or clamped) with `weights` (co, ci, kx, ky), dilated by (dw, dh): output (x, y) reads
  // source at (x + dw kx, y + dh ky).
  Func define(Func source, Func weights, int in_channels, int dilation_x, int dilation_y) {
    dw = dilation_x;
    dh = dilation_y;
    Var c("c"), ci("ci"), x("x"), y("y"), n("n");
    Expr base_x = tx / dw * (m * dw) + tx % dw, base_y = ty / dh * (m * dh) + ty % dh;
    kernel_transform(c, ci, e, nu) = per_position([&](int a, int b) {
      return transform_kernel(a, b, [&](int i, int j) { return Expr(weights(c, ci, j, i)); });
    });
    input_transform(ci, e, nu, tx, ty, n) = per_position([&](int a, int b) {
      return transform_input(a, b, [&](int i, int j) { return Expr(source(ci, base_x + j * dw, base_y + i * dh, n)); });
    });
    r = RDom(0, in_channels, "r");
    product_acc(c, e, nu, tx, ty, n) = 0.0f;
    product_acc(c, e, nu, tx, ty, n) += kernel_transform(c, r, e, nu) * input_transform(r, e, nu, tx, ty, n);
    product(c, e, nu, tx, ty, n) = product_acc(c, e, nu, tx, ty, n);
    Expr px = x / dw % m, py = y / dh % m;
    Expr tile_x = x / (m * dw) * dw + x % dw, tile_y = y / (m * dh) * dh + y % dh;
    Expr result_value;
    for (int a = m - 1; a >= 0; --a)
      for (int b = m - 1; b >= 0; --b) {
        Expr out = transform_output(a, b, [&](int i, int j) { return Expr(product(c, i, j, tile_x, tile_y, n)); });
        result_value = result_value.defined() ? select(py == a && px == b, out, result_value) : out;
      }
    Func result("winograd_output");
    result(c, x, y, n) = result_value;
    return result;
  }

  // Rows of blocks (2d output rows each) per task: 4 or 2 where they divide the rows and leave
  // at least 4 tasks per image (batch 1), else 1. A task's padded input copy and input transform
  // then cover 2R + 2 input rows for 2R output rows, not 4 for 2 (16 channels, batch 256:
  // measured in docs/performance.md).
  int rows_per_task(int out_height) const {
    int blocks = (out_height + m * dh - 1) / (m * dh);
    for (int rows : {4, 2})
      if (blocks % rows == 0 && blocks / rows >= 4) return rows;
    return 1;
  }

  // With a fused pooling of stride `pool_stride`: pooled rows per task, enough that their
  // convolution rows are whole blocks of m d rows where the stride allows (an unaligned task
  // computes its first and last blocks in part twice), doubled while an image keeps at least 4
  // tasks (batch 1).
  int pooled_rows_per_task(int pool_stride, int pooled_height) const {
    int block = m * dh, rows = std::lcm(block, pool_stride) / pool_stride;
    while (8 * rows <= pooled_height) rows *= 2;
    return rows;
  }

  // CPU: `output` (c, x, y, n) split in blocks of 2d x 2d outputs, d x d tiles (unrolled, so the
  // selects above fold, and guarded at the edges), channel blocks `co` of `block` inside rows of
  // blocks, `rows` rows x an image per task (`task`). Per task the input transform of its rows
  // of tiles, all channels; per row and channel block the products in register tiles of `block`
  // channels x `tile` tiles, one position of the 4x4 tile at a time.
  void schedule(Func output, int block, int vec, int tile, int in_channels, int rows, const ScheduleParams& sched, Var& co,
                Var& task) {
    Var c = output.args()[0], x = output.args()[1], y = output.args()[2], n = output.args()[3];
    Var ci("ci"), otx("otx"), txi("txi"), oty("oty"), tyi("tyi"), otyo("otyo"), otyi("otyi");
    co = Var("co");
    task = Var("task");
    output.split(c, co, ci, block).split(x, otx, txi, m * dw, TailStrategy::GuardWithIf)
        .split(y, oty, tyi, m * dh, TailStrategy::GuardWithIf).split(oty, otyo, otyi, rows, TailStrategy::GuardWithIf)
        .reorder(ci, txi, tyi, otx, co, otyi, otyo, n)
        .vectorize(ci, vec).unroll(ci).unroll(txi).unroll(tyi).fuse(otyo, n, task).parallel(task);
    schedule_stages(output, task, co, vec, tile, in_channels, sched);
  }

  // The same for a convolution `value` that a fused pooling `output` reads: computed per task of
  // `output` (the rows it pools) over a region aligned to whole blocks, so that the unrolled
  // tiles' selects fold as above; the tiles' loops as above without the rows and tasks.
  void schedule_within(Func value, Func output, Var task, int block, int vec, int tile, int in_channels,
                       const ScheduleParams& sched, Var& co) {
    Var c = value.args()[0], x = value.args()[1], y = value.args()[2], n = value.args()[3];
    Var ci("ci"), otx("otx"), txi("txi"), oty("oty"), tyi("tyi");
    co = Var("co");
    value.compute_at(output, task).align_bounds(x, m * dw).align_bounds(y, m * dh)
        .split(c, co, ci, block).split(x, otx, txi, m * dw).split(y, oty, tyi, m * dh)
        .reorder(ci, txi, tyi, otx, co, oty, n)
        .vectorize(ci, vec).unroll(ci).unroll(txi).unroll(tyi);
    schedule_stages(value, task, co, vec, tile, in_channels, sched, output);
  }

  // The transforms and products of `f` (scheduled as above): the input transform per `task` of
  // `owner` (f itself unless f is computed inside another Func's tasks), the products per
  // channel block `co` of f.
  void schedule_stages(Func f, Var task, Var co, int vec, int tile, int in_channels, const ScheduleParams& sched,
                       Func owner = Func()) {
    if (!owner.defined()) owner = f;
    // (Per call: 16 values per weight vector, from up to 9 weights each; in parallel over the
    // input channels, since at batch 1 it is a good part of the work.)
    Var kc = kernel_transform.args()[0], kci = kernel_transform.args()[1];
    kernel_transform.compute_root().reorder(kc, e, nu, kci).vectorize(kc, vec, TailStrategy::GuardWithIf)
        .unroll(e).unroll(nu).parallel(kci);
    Var channel = input_transform.args()[0];
    input_transform.compute_at(owner, task).reorder(channel, e, nu, tx).unroll(e).unroll(nu);
    vectorize_pure(input_transform, channel, sched.vector, in_channels);
    Var pc = product.args()[0], txo("txo"), txj("txj");
    product.compute_at(f, co).split(tx, txo, txj, tile, TailStrategy::ShiftInwards).reorder(pc, txj, txo, e, nu)
        .vectorize(pc, vec).unroll(pc).unroll(txj);
    product_acc.compute_at(product, txo).vectorize(pc, vec).unroll(pc).unroll(tx);
    product_acc.update().reorder(pc, tx, r, e, nu).vectorize(pc, vec).unroll(pc).unroll(tx);
  }
};

// The weight gradient by Winograd F(3x3, 2x2): the transpose of the forward's F(2x2, 3x3).
// With the forward's tile T = sum over (e, nu) of (A dY A^T) * (G g G^T) * (B^T d B) for a 2x2
// gradient tile dY and its 4x4 input tile d (A = AT transposed), the derivative by the kernel g
// is dW = G^T [ sum over tiles and images of (A dY A^T) * (B^T d B) ] G: per position of the 4x4
// tile a matrix product (output channels x input channels) over every tile of the batch, 16
// multiplications per 2x2 outputs instead of 36. Tiles as the forward's (dilation d: a tile's
// values d apart); the gradient is zero past the output's edges, the input past its own. A 5x5
// kernel's, F(5x5, 2x2), is the transpose of F(2x2, 5x5) the same way: 6x6 tiles (BT4), 36
// multiplications per 2x2 outputs instead of 100.
struct WinogradWeights {
  static constexpr float A[4][2] = {{1, 0}, {1, 1}, {1, -1}, {0, -1}};
  static constexpr float GT[3][4] = {{1, 0.5f, 0.5f, 0}, {0, 0.5f, -0.5f, 0}, {0, 0.5f, 0.5f, 1}};
  // F(5x5, 2x2): AT25 and G5 of the forward, transposed.
  static constexpr float A5[6][2] = {{1, 0}, {1, 1}, {1, -1}, {1, 2}, {1, -2}, {0, 1}};
  static constexpr float GT5[5][6] = {{1.0f / 4, -1.0f / 6, -1.0f / 6, 1.0f / 24, 1.0f / 24, 0},
                                      {0, -1.0f / 6, 1.0f / 6, 1.0f / 12, -1.0f / 12, 0},
                                      {0, -1.0f / 6, -1.0f / 6, 1.0f / 6, 1.0f / 6, 0},
                                      {0, -1.0f / 6, 1.0f / 6, 1.0f / 3, -1.0f / 3, 0},
                                      {0, -1.0f / 6, -1.0f / 6, 2.0f / 3, 2.0f / 3, 1}};

  // d(kernel)(co, ci, kx, ky) of a k x k (3 or 5) stride-1 conv2d. `gradient` (co, x, y, n): the
  // gradient of the output, materialized, zero past its edges; `source` (ci, x, y, n): the input
  // in the output's coordinates (read at x + d kx), defined everywhere. The batch is split in
  // `chunks` chunks (a task each) summed in order, so the result is the same for any thread
  // count. A chunk's tiles, image after image, form one sequence q, cut in slabs of `slab` tiles:
  // per slab the two transforms (all t^2 positions, t = k + 1, kept in the L1 cache), then per
  // position register tiles of `block` output x `tile` input channels over the slab's tiles,
  // added to the chunk's sums. Tiles past the chunk's last image have a zero gradient transform.
  //
  // The sums are computed over channel counts padded to whole register tiles: output channels to
  // whole vectors, in a multiple of `block` (see block_dividing), input channels to a multiple
  // of `tile`. A partial vector or tile would be guarded, and Halide 14
  // computes a guarded vector lane by lane: 35 channels in blocks of 32 made this kernel 6x
  // slower than 32 channels (docs/performance.md, random networks). `gradient` must be defined
  // (zero) over the padded output channels; the input is extended with zeros here.
  // The output channels per register tile: the largest multiple of the vector up to `block` (the
  // knob's or the rule's) that divides the channels padded to whole vectors (35 channels: 48 in
  // blocks of 16, not 64 in blocks of 32).
  static int block_dividing(int block, int vector, int out_channels) {
    int vec = std::min(block, vector), extent = round_up(out_channels, vec);
    while (block > vec && extent % block != 0) block -= vec;
    return block;
  }
  static Func define(Func gradient, Func source, Expr batch, int chunks, int out_channels, int in_channels, int out_width,
                     int out_height, int dw, int dh, const ScheduleParams& sched, int block, int tile, int ksize) {
    Var co("co"), ci("ci"), e("e"), nu("nu"), q("q"), k("k"), s("s"), kx("kx"), ky("ky");
    int vec = std::min(block, sched.vector);
    int co_extent = round_up(out_channels, vec), ci_extent = round_up(in_channels, tile);
    if (ci_extent > in_channels) {
      Expr all;
      source = BoundaryConditions::constant_exterior(source, 0.0f, {{0, in_channels}, {all, all}, {all, all}, {all, all}});
    }
    int tiles_x = (out_width + 2 * dw - 1) / (2 * dw) * dw, tiles_y = (out_height + 2 * dh - 1) / (2 * dh) * dh;
    int tiles = tiles_x * tiles_y;
    // Slab: the two transforms of a slab (16 x 4 bytes x slab x channels) within 32 KB, the L1
    // data cache; 8 to 32 tiles. Measured (batch 64, weight gradient alone, ms per kernel):
    // 16 + 16 channels: slabs of 8 / 16 / 32 / 128 tiles 1.06 / 1.04 / 1.19 / 1.34-1.82; 32 + 32:
    // 8 / 16 / 32 / 64: 0.88 / 0.91 / 1.02 / 0.96-1.06; 64 + 64: 4 / 8 / 16 / 32: 1.03 / 0.89 / 0.91 / 0.89.
    // (5x5: 36 positions, the same bytes.)
    int positions_count = (ksize + 1) * (ksize + 1);
    int slab = std::clamp(512 * 16 / positions_count / (out_channels + in_channels), 8, 32);
    Expr chunk = (batch + chunks - 1) / chunks;  // images per chunk
    Expr image = k * chunk + q / tiles, t = q % tiles;
    Expr tx = t % tiles_x, ty = t / tiles_x;
    Expr valid = q / tiles < chunk && image < batch;
    Expr n = min(image, batch - 1);
    Expr base_x = tx / dw * (2 * dw) + tx % dw, base_y = ty / dh * (2 * dh) + ty % dh;
    Func gradient_transform("wino_gradient_transform"), input_transform("wino_input_transform");
    Winograd positions;  // per_position over its (e, nu), and the forward's input transform (m = 2)
    positions.e = e;
    positions.nu = nu;
    positions.ksize = ksize;
    auto gradient_at = [&](int i, int j) { return Expr(gradient(co, base_x + j * dw, base_y + i * dh, n)); };
    gradient_transform(co, e, nu, q, k) = select(valid, positions.per_position([&](int a, int b) {
      return ksize == 5 ? Winograd::bilinear(A5, a, A5, b, gradient_at) : Winograd::bilinear(A, a, A, b, gradient_at);
    }), 0.0f);
    auto source_at = [&](int i, int j) { return Expr(source(ci, base_x + j * dw, base_y + i * dh, n)); };
    input_transform(ci, e, nu, q, k) = positions.per_position([&](int a, int b) {
      return positions.transform_input(a, b, source_at);  // the forward's B^T d B
    });
    // Per slab: the sums over its tiles; per chunk: over its slabs, in order.
    RDom rq(0, slab, "rq");
    Func slab_acc("wino_slab_acc"), chunk_sum("wino_chunk_sum");
    slab_acc(co, ci, e, nu, s, k) = 0.0f;
    slab_acc(co, ci, e, nu, s, k) += gradient_transform(co, e, nu, s * slab + rq, k) * input_transform(ci, e, nu, s * slab + rq, k);
    RDom rs(0, (chunk * tiles + slab - 1) / slab, "rs");
    rs.where(k * chunk < batch);
    chunk_sum(co, ci, e, nu, k) = 0.0f;
    chunk_sum(co, ci, e, nu, k) += slab_acc(co, ci, e, nu, rs, k);
    Expr out[5][5];
    auto sums = [&](int i, int j) { return Expr(chunk_sum(co, ci, i, j, k)); };
    for (int a = 0; a < ksize; ++a)
      for (int b = 0; b < ksize; ++b)
        out[a][b] = ksize == 5 ? Winograd::bilinear(GT5, a, GT5, b, sums) : Winograd::bilinear(GT, a, GT, b, sums);
    int last = ksize - 1;
    Expr pick = out[last][last];
    for (int a = last; a >= 0; --a)
      for (int b = last; b >= 0; --b)
        if (a != last || b != last) pick = select(ky == a && kx == b, out[a][b], pick);
    Func weights("wino_weight_chunk"), result("kernel_gradient");
    weights(co, ci, kx, ky, k) = pick;
    Expr total = weights(co, ci, kx, ky, 0);
    for (int j = 1; j < chunks; ++j) total = total + weights(co, ci, kx, ky, j);
    result(co, ci, kx, ky) = total;

    Var coo("coo"), coi("coi"), cio("cio"), cii("cii");
    result.compute_root().reorder(co, kx, ky, ci).vectorize(co, vec, TailStrategy::GuardWithIf).unroll(kx).unroll(ky);
    chunk_sum.compute_root().bound(co, 0, co_extent).bound(ci, 0, ci_extent).vectorize(co, vec);
    // Each register tile added to the chunk's sums where it is complete. The last block of an
    // uneven split (where a knob's block does not divide the padded channels) is narrower: its
    // vectors guarded, and the input channels not unrolled (with them unrolled Halide 14 added a
    // 16-channel remainder of a 48-channel block three times: 3x the gradient of 64 channels in
    // blocks of 48, tests/models/winograd_blocks.yaml).
    chunk_sum.update()
        .split(co, coo, coi, block, TailStrategy::GuardWithIf)
        .split(ci, cio, cii, tile, TailStrategy::GuardWithIf)
        .reorder(coi, cii, coo, cio, nu, e, rs, k)
        .vectorize(coi, vec, TailStrategy::GuardWithIf)
        .parallel(k);
    // Where the blocks divide the channels, the tile's adds unrolled too, so that the register
    // tile stays in registers (a loop over it kept it in memory; 32 channels on 24x24, one
    // thread: the backward kernels 1.03-1.13x faster in three alternating runs).
    if (co_extent % block == 0) chunk_sum.update().unroll(coi).unroll(cii);
    slab_acc.compute_at(chunk_sum, coo).vectorize(co, vec, TailStrategy::GuardWithIf).unroll(co).unroll(ci);
    slab_acc.update().reorder(co, ci, rq, e, nu).vectorize(co, vec, TailStrategy::GuardWithIf).unroll(co).unroll(ci);
    gradient_transform.compute_at(chunk_sum, rs).reorder_storage(co, q, e, nu, k).reorder(co, e, nu, q).unroll(e).unroll(nu);
    vectorize_pure(gradient_transform, co, sched.vector, co_extent);
    input_transform.compute_at(chunk_sum, rs).reorder_storage(ci, q, e, nu, k).reorder(ci, e, nu, q).unroll(e).unroll(nu);
    vectorize_pure(input_transform, ci, sched.vector, ci_extent);
    // A zero-padded copy of the input, so that the transform reads memory without a bounds test
    // per value.
    source.compute_root().parallel(source.args()[3]);
    vectorize_pure(source, source.args()[0], sched.vector, ci_extent);
    return result;
  }
};

// conv2d + bias, then the fused activation and pooling.
Func conv2d_forward(ForwardContext& ctx) {
  const Shape& in = ctx.input_shape();
  int height = int(in[0]), width = int(in[1]), in_channels = int(in[2]);
  int out_height = int(ctx.node.unfused_shape[0]), out_width = int(ctx.node.unfused_shape[1]);
  int out_channels = int(ctx.node.unfused_shape[2]);
  auto [kh, kw] = ctx.node.attrs.get_pair("kernel");
  auto [sh, sw] = ctx.node.attrs.get_pair("stride");
  auto [dh, dw] = ctx.node.attrs.get_pair("dilation");
  Var c("c"), x("x"), y("y"), n("n");

  Func source("source"), padded("padded");
  if (ctx.node.attrs.get_string("padding") == "same") {
    int top = same_padding_before(height, out_height, int((kh - 1) * dh + 1), int(sh));
    int left = same_padding_before(width, out_width, int((kw - 1) * dw + 1), int(sw));
    Expr inside = x >= 0 && x < width && y >= 0 && y < height;
    padded(c, x, y, n) = select(inside, ctx.inputs[0](c, clamp(x, 0, width - 1), clamp(y, 0, height - 1), n), 0.0f);
    source(c, x, y, n) = padded(c, x - left, y - top, n);
  } else {
    source(c, x, y, n) = ctx.inputs[0](c, x, y, n);
  }

  // The algorithm: acc(c, x, y, n) = bias(c) + sum over (ci, kx, ky) of w * in; or Winograd's
  // F(2x2, 3x3) where it applies and the knob, else the rule, picks it (a CPU schedule; other
  // targets stay direct).
  Expr bias = ctx.node.attrs.get_bool("use_bias") ? ctx.params.at("bias")(c) : Expr(0.0f);
  bool winograd = ctx.hand && !ctx.sched.gpu && winograd_applies(ctx.node, ctx.kernel) && winograd_chosen(ctx.node, ctx.sched);
  RDom r(0, in_channels, 0, int(kw), 0, int(kh), "r");
  Func acc("acc");
  Winograd wino;
  wino.m = winograd_tile(ctx.node, ctx.sched);
  wino.ksize = std::max(3, winograd_kernel(ctx.node));
  Func value("value");
  if (winograd) {
    if (ctx.node.attrs.get_string("padding") != "same") {  // ('same': source is the zero-padded input already)
      // The last tile of an odd-sized output reads one column (row) past the input; its values
      // only reach the output position that is not stored.
      padded(c, x, y, n) = ctx.inputs[0](c, clamp(x, 0, width - 1), clamp(y, 0, height - 1), n);
      source = Func("source");
      source(c, x, y, n) = padded(c, x, y, n);
    }
    Func convolved = wino.define(source, ctx.params.at("kernel"), in_channels, int(dw), int(dh));
    value(c, x, y, n) = bias + convolved(c, x, y, n);
  } else {
    acc(c, x, y, n) = bias;
    acc(c, x, y, n) += ctx.params.at("kernel")(c, r.x, r.y, r.z) *
                       source(r.x, x * int(sw) + dilated(r.y, int(dw)), y * int(sh) + dilated(r.z, int(dh)), n);
    value(c, x, y, n) = acc(c, x, y, n);
  }
  value = ctx.fold(value);  // the nodes folded into this inference kernel (inference_folds)
  // The pooling: fused into the node, or a pooling node folded into this inference kernel
  // (kernel.pool, inference_folds), pooled the same way. Either way the kernel writes `shape`.
  const Node::FusedOp* pooling = nullptr;
  Node::FusedOp folded_pool;
  if (ctx.kernel.pool >= 0) {
    const Node& pool = ctx.graph.nodes[size_t(ctx.kernel.pool)];
    folded_pool = {pool.def, pool.name, pool.attrs};
    pooling = &folded_pool;
    ctx.pooled = true;
  }
  const Shape& shape = ctx.graph.nodes[size_t(ctx.kernel.written_node())].shape;
  Func logits, softmax_max, softmax_exp, softmax_sum;  // a softmax over the channels
  for (const Node::FusedOp& fused : ctx.node.fused) {
    if (fused.def->traits.pooling != Pooling::None) {
      pooling = &fused;
      continue;
    }
    if (fused.def->traits.softmax) {
      // Over the channels of each pixel (`activation: softmax`; nothing is fused after it):
      // the convolution goes to `logits` with its register tiles, then one pass per pixel.
      logits = Func("logits");
      logits(c, x, y, n) = value(c, x, y, n);
      ChannelSoftmax softmax = channel_softmax(logits, out_channels);
      softmax_max = softmax.max;
      softmax_exp = softmax.exp;
      softmax_sum = softmax.sum;
      value = softmax.value;
      continue;
    }
    Func activated(fused.def->name);
    activated(c, x, y, n) = halide_op(*fused.def).activate(value(c, x, y, n), fused.attrs);
    value = activated;
  }
  Func output("output");
  if (pooling) {
    int pooled_height = int(shape[0]), pooled_width = int(shape[1]);
    Func pool = pool2d(pooling->def->traits.pooling, value, out_width, out_height, pooling->attrs, pooled_width, pooled_height);
    output(c, x, y, n) = pool(c, x, y, n);
  } else {
    output(c, x, y, n) = value(c, x, y, n);
  }

  bool index_only = pooling && ctx.train && saves_pool_index(ctx.node);
  if (index_only) {
    // Training keeps only where each window's maximum is (the first one, row by row): the
    // output is a Tuple (maximum, index), computed like inference with fused pooling.
    auto [ph, pw] = pooling->attrs.get_pair("size");
    Expr best, best_index;
    for (int dy = 0; dy < ph; ++dy)
      for (int dx = 0; dx < pw; ++dx) {
        Expr v = value(c, x * int(pw) + dx, y * int(ph) + dy, n);
        Expr index = int(dy * pw + dx);
        if (!best.defined()) {
          best = v;
          best_index = index;
          continue;
        }
        best_index = select(v > best, index, best_index);
        best = max(best, v);
      }
    output = Func("output");
    output(c, x, y, n) = Tuple(best, best_index);
    ctx.tuple_saved = true;
  } else if (pooling && ctx.train) {
    // Training keeps the activation before pooling for backward: compute it whole, then pool it.
    ctx.saved = Func("saved");
    ctx.saved(c, x, y, n) = value(c, x, y, n);
    Func pool = pool2d(pooling->def->traits.pooling, ctx.saved, out_width, out_height, pooling->attrs, int(shape[1]),
                       int(shape[0]));
    output = Func("output");
    output(c, x, y, n) = pool(c, x, y, n);
  }

  // The schedule.
  if (!ctx.hand) return output;
  if (ctx.sched.gpu) {
    // One thread per output value; its accumulator (and for pooling its whole window) lives
    // in registers.
    Var co("co"), xo("xo"), ci("ci"), xi("xi"), yn("yn");
    if (pooling && ctx.train && !index_only) {
      ctx.saved.gpu_tile(c, x, co, xo, ci, xi, std::min(32, out_channels), std::min(8, out_width), TailStrategy::GuardWithIf)
          .fuse(y, n, yn)
          .gpu_blocks(yn);
      acc.compute_at(ctx.saved, ci);
      Var pyn("pyn");
      output.gpu_tile(c, x, co, xo, ci, xi, std::min(32, out_channels), std::min(8, int(shape[1])),
                      TailStrategy::GuardWithIf)
          .fuse(y, n, pyn)
          .gpu_blocks(pyn);
      ctx.schedule = "gpu training: one thread per activation, then one per pooled value";
      return output;
    }
    if (logits.defined()) {
      logits.compute_root().gpu_tile(c, x, co, xo, ci, xi, std::min(32, out_channels), std::min(8, out_width),
                                     TailStrategy::GuardWithIf).fuse(y, n, yn).gpu_blocks(yn);
      acc.compute_at(logits, ci);
      Var pyn("pyn");
      output.gpu_tile(x, y, xo, yn, xi, pyn, std::min(8, out_width), 1, TailStrategy::GuardWithIf);
      ctx.schedule = "gpu: threads over 32 channels x 8 pixels, then a softmax thread per pixel";
      return output;
    }
    output.gpu_tile(c, x, co, xo, ci, xi, std::min(32, out_channels), std::min(8, int(shape[1])),
                    TailStrategy::GuardWithIf)
        .fuse(y, n, yn)
        .gpu_blocks(yn);
    acc.compute_at(output, ci);
    ctx.schedule = "gpu: threads over 32 channels x 8 pixels, accumulator per thread";
    return output;
  }
  int block = ctx.channel_block(out_channels), vec = std::min(ctx.sched.vector, block);
  Var co("co"), ci("ci"), xo("xo"), xi("xi"), yn("yn");
  int vectors = (block + ctx.sched.vector - 1) / ctx.sched.vector;
  // Parallel grain: rows x images where a row is enough work for a task (conv2: ~150 kFLOP),
  // whole images where rows are small (conv1: 15 kFLOP rows ran 2-6x slower as tasks).
  int64_t row_flops = int64_t(out_width) * out_channels * kh * kw * in_channels * 2;
  // 'same' padding: the zero-padded input rows a task reads are copied once per task, so that
  // the taps read memory without a bounds test (inlined, the test ran at every tap).
  auto copy_padded_per_task = [&](Func f, Var task) {
    if (!padded.defined()) return;
    padded.compute_at(f, task);
    vectorize_pure(padded, c, ctx.sched.vector, in_channels);
  };
  auto parallelize = [&](Func f, int64_t flops) {
    Var task = n;
    if (flops >= 100000) {
      f.fuse(y, n, yn).parallel(yn);
      task = yn;
    } else {
      f.parallel(n);
    }
    copy_padded_per_task(f, task);
  };
  // With few input channels (conv1: one), the kernel slice of a channel block is a handful of
  // vectors: a tile small enough to keep it in registers beside the accumulators saves
  // reloading it for every pixel (conv1: ~1.8x faster than the widest tile, 18 + 2 x 6 + 1
  // registers on AVX-512). Unless a tuned pixel_tile says otherwise.
  int preferred_tile = ctx.sched.pixel_tile;
  int weight_vectors = in_channels * int(kh * kw) * vectors;
  if (!ctx.sched.pixel_tile_tuned && weight_vectors + 2 * vectors + 1 <= ctx.sched.registers)
    preferred_tile = std::min(preferred_tile, (ctx.sched.registers - weight_vectors - 1) / vectors);
  // Output tile of `block` channels x `tile` pixels; the accumulator for it stays in registers
  // through the whole reduction (input channels innermost, then kernel taps).
  auto register_tiles = [&](Func f) {
    int tile = pick_tile(out_width, preferred_tile, vectors, ctx.sched.registers);
    f.split(c, co, ci, block).split(x, xo, xi, tile).reorder(ci, xi, co, xo, y, n).vectorize(ci, vec).unroll(ci).unroll(xi);
    parallelize(f, row_flops);
    acc.compute_at(f, co).vectorize(c, vec).unroll(c).unroll(x);
    acc.update().reorder(c, x, r.x, r.y, r.z, y, n).vectorize(c, vec).unroll(c).unroll(x);
    return tile;
  };
  if (pooling && ctx.train && !index_only) {
    // Register tiles as without pooling for the kept activation, then the pooling.
    int tile = register_tiles(ctx.saved);
    output.vectorize(c, vec).parallel(n);
    ctx.schedule = fmt::format("cpu training: register tile {} channels x {} pixels, then pooling", block, tile);
    return output;
  }
  if (logits.defined()) {
    // The convolution with its register tiles into `logits`, then the softmax pixel by pixel.
    logits.compute_root();
    int tile = register_tiles(logits);
    output.vectorize(c, vec).parallel(n);
    for (Func f : {softmax_max, softmax_exp, softmax_sum}) f.compute_at(output, x);
    softmax_exp.vectorize(c, vec);
    ctx.schedule = fmt::format("cpu: register tile {} channels x {} pixels, then the softmax per pixel", block, tile);
    return output;
  }
  // The convolution's outputs computed: all, or the rows and columns a pooling reads.
  int read_width = out_width, read_height = out_height;
  if (pooling) {
    auto [ph, pw] = pooling->attrs.get_pair("size");
    auto [psh, psw] = pooling->attrs.get_pair("stride");
    read_width = std::min(out_width, int((shape[1] - 1) * psw + pw));
    read_height = std::min(out_height, int((shape[0] - 1) * psh + ph));
  }
  if (winograd) {
    int tile = pick_tile((read_width + wino.m - 1) / wino.m, preferred_tile, vectors, ctx.sched.registers);
    Var task;
    std::string pooled;
    if (pooling) {
      // Fused pooling (inference, or training that keeps the maxima's positions): tasks of
      // `rows` pooled rows of an image, each computing the convolution rows it pools by
      // Winograd into a small buffer, then pooling them; the activation never reaches memory.
      int pooled_height = int(shape[0]);
      int rows = wino.pooled_rows_per_task(int(pooling->attrs.get_pair("stride").first), pooled_height);
      Var pyo("pyo"), pyi("pyi");
      task = Var("task");
      output.split(y, pyo, pyi, rows, TailStrategy::GuardWithIf).reorder(c, x, pyi, pyo, n).fuse(pyo, n, task).parallel(task);
      vectorize_pure(output, c, ctx.sched.vector, out_channels);
      wino.schedule_within(value, output, task, block, vec, tile, in_channels, ctx.sched, co);
      pooled = fmt::format(", then the pooling, in tasks of {} pooled rows", rows);
    } else {
      wino.schedule(output, block, vec, tile, in_channels, wino.rows_per_task(out_height), ctx.sched, co, task);
    }
    copy_padded_per_task(output, task);
    ctx.schedule = fmt::format("cpu: Winograd F({0}x{0}, {4}x{4}); products in register tiles of {1} channels x {2} tiles{3}",
                               wino.m, block, tile, pooled, wino.ksize);
    ctx.executed_flops =
        Winograd::product_flops(in_channels, out_channels, read_width, read_height, int(dw), int(dh), wino.m, wino.ksize);
    return output;
  }
  if (!pooling) {
    int tile = register_tiles(output);
    ctx.schedule = fmt::format("cpu: register tile {} channels x {} pixels, parallel over rows x batch", block, tile);
    return output;
  }
  // Fused pooling: per pooled row and channel block, compute the conv rows it needs (all
  // columns) into a small buffer, tile by tile with the same register tile, then pool them.
  int tile = pick_tile(read_width, preferred_tile, vectors, ctx.sched.registers);
  output.split(c, co, ci, block).reorder(ci, x, co, y, n).vectorize(ci, vec).unroll(ci);
  parallelize(output, row_flops * pooling->attrs.get_pair("size").first);
  value.compute_at(output, co)
      .split(x, xo, xi, tile, TailStrategy::ShiftInwards)
      .reorder(c, xi, xo, y)
      .vectorize(c, vec)
      .unroll(c)
      .unroll(xi);
  acc.compute_at(value, xo).vectorize(c, vec).unroll(c).unroll(x);
  acc.update().reorder(c, x, r.x, r.y, r.z, y, n).vectorize(c, vec).unroll(c).unroll(x);
  ctx.schedule = fmt::format("cpu: fused pooling; register tile {} channels x {} pixels per pooled row", block, tile);
  return output;
}

// conv2d backward. Behind a fused non-overlapping max pooling that kept only the index of each
// window's maximum (saves_pool_index), the gradient reaches one position per window: the kernel
// visits those positions alone (conv_backward_at_maxima) or rebuilds the sparse gradient from
// the index and runs the dense backward, by the rule of at_maxima.
struct Conv2dBackward {
  BackwardContext& ctx;
  Func window_grad;                // behind a max pooling with indices: the gradient per window
  std::vector<int> window_extent;  // ... over this many windows (x, y)
  std::vector<RVar> scatter_taps;  // the kernel taps of a scatter-style input gradient
  std::vector<RVar> window_rvars;  // the pooling windows of one image (x, y)

  void define() {
    bool sparse = saves_pool_index(ctx.node);
    if (sparse && at_maxima()) {
      conv_backward_at_maxima(ctx.gradient, ctx.saved, ctx.output, ctx.inputs[0], ctx.params, ctx.input_grads[0],
                              ctx.param_grads);
      return;
    }
    Func pre = sparse ? gradient_from_index(ctx.gradient, ctx.saved, ctx.output) : ctx.pre;
    conv_backward(pre, ctx.inputs[0], ctx.params, ctx.input_grads[0], ctx.param_grads);
  }

  // Behind a max pooling that kept its indices: whether the kernel visits the maxima alone
  // (conv_backward_at_maxima) rather than rebuilding the sparse gradient and running the dense
  // backward. The visit does a quarter of the direct work (2x2 windows) but keeps a register tile
  // of all input channels x taps per output channel and adds into each image's input gradient in
  // place: fast while both fit (mnist_cnn's 32 channels x 9 taps, 13x13x32 images: 0.87-1.0 ms
  // per batch-32 step, 37% of the peak on the work it does) and at 17-22% where they do not
  // (vgg_cifar's 32 channels on 32x32 images, 64 channels, 128 channels). There the dense
  // backward by Winograd, which does 0.44 of the direct work at about half the peak, is 1.7-1.9x
  // faster (6.1 -> 3.7, 6.4 -> 3.4, 7.7 -> 4.0 ms; mnist_cnn's would be 1.3x slower). So, with
  // an input gradient to compute and Winograd by its rule or the knob: the visit where the tile
  // fits 3/4 of the registers and an input image 32 KB (the L1), else Winograd; knob
  // algorithm=direct: the visit. Fewer than 8 input channels: the dense backward.
  bool at_maxima() const {
    const Shape& in = ctx.graph.nodes[ctx.node.inputs[0]].shape;  // [height, width, channels]
    if (in[2] < 8) return false;
    if (!ctx.hand || ctx.sched.gpu || !ctx.kernel.input_grad[0] || !winograd_applies_to_backward(ctx.node)) return true;
    if (!ctx.sched.algorithm.empty()) return ctx.sched.algorithm == "direct";
    if (!winograd_by_default(ctx.node)) return true;
    auto [kh, kw] = ctx.node.attrs.get_pair("kernel");
    int64_t tile = whole_vectors(int(in[2]), ctx.sched.vector) * kh * kw;  // input channels (whole vectors) x taps
    bool tile_fits = tile <= int64_t(ctx.sched.registers * 3 / 4) * ctx.sched.vector;
    bool image_fits = in[0] * in[1] * in[2] * int64_t(sizeof(float)) <= 32 * 1024;
    return tile_fits && image_fits;
  }

  // The fused max pooling's window (height, width) and the activation before it (nullptr for none).
  std::tuple<int, int, const Node::FusedOp*> max_pool_window() const {
    std::pair<int64_t, int64_t> window;
    const Node::FusedOp* activation = nullptr;
    for (const Node::FusedOp& fused : ctx.node.fused) {
      if (fused.def->traits.pooling == Pooling::Max) window = fused.attrs.get_pair("size");
      else activation = &fused;
    }
    return {int(window.first), int(window.second), activation};
  }

  // The gradient with respect to the conv output of a conv + activation + max pooling that kept
  // the index of each window's maximum: the window's gradient (times the activation's derivative,
  // whose value there is the pooled output) at its maximum, zero elsewhere.
  Func gradient_from_index(ImageParam gradient, ImageParam index, ImageParam output) {
    auto [ph, pw, activation] = max_pool_window();
    int pooled_height = int(ctx.node.shape[0]), pooled_width = int(ctx.node.shape[1]);
    Var c("c"), x("x"), y("y"), n("n");
    Expr px = min(x / pw, pooled_width - 1), py = min(y / ph, pooled_height - 1);
    Expr inside = x < pooled_width * pw && y < pooled_height * ph;
    Expr hit = index(c, px, py, n) == (y - py * ph) * pw + (x - px * pw);
    Expr g = gradient(c, px, py, n);
    if (activation) g = g * halide_op(*activation->def).derivative(output(c, px, py, n), activation->attrs);
    Func d("gradient_from_index");
    d(c, x, y, n) = select(inside && hit, g, 0.0f);
    // Each window's gradient lands once, at its maximum: sums over all positions (the bias
    // gradient) equal sums over the windows.
    Expr window_g = gradient(c, x, y, n);
    if (activation) window_g = window_g * halide_op(*activation->def).derivative(output(c, x, y, n), activation->attrs);
    window_grad = Func("gradient_per_window");
    window_grad(c, x, y, n) = window_g;
    window_extent = {pooled_width, pooled_height};
    return d;
  }

  // conv2d with a fused non-overlapping max pooling that kept the index of each window's
  // maximum: the gradient reaches only those positions (one per window), so the bias, weight and
  // input gradients visit the pooled positions alone instead of every conv output.
  void conv_backward_at_maxima(ImageParam gradient, ImageParam index, ImageParam output, ImageParam input,
                               std::map<std::string, ImageParam>& params, Func& input_grad,
                               std::vector<std::pair<std::string, Func>>& param_grads) {
    const Shape& in = ctx.graph.nodes[ctx.node.inputs[0]].shape;
    const Shape& conv_out = ctx.node.unfused_shape;
    int height = int(in[0]), width = int(in[1]), in_channels = int(in[2]);
    int out_channels = int(conv_out[2]);
    int pooled_height = int(ctx.node.shape[0]), pooled_width = int(ctx.node.shape[1]);
    auto [kh, kw] = ctx.node.attrs.get_pair("kernel");
    auto [sh, sw] = ctx.node.attrs.get_pair("stride");
    int dh = int(ctx.node.attrs.get_pair("dilation").first), dw = int(ctx.node.attrs.get_pair("dilation").second);
    bool same = ctx.node.attrs.get_string("padding") == "same";
    int top = same ? same_padding_before(height, int(conv_out[0]), int((kh - 1) * dh + 1), int(sh)) : 0;
    int left = same ? same_padding_before(width, int(conv_out[1]), int((kw - 1) * dw + 1), int(sw)) : 0;
    auto [window_height, window_width, activation] = max_pool_window();
    int ph = window_height, pw = window_width;  // (lambdas below capture them)
    Var c("c"), x("x"), y("y"), n("n"), ci("ci"), kx("kx"), ky("ky"), co("co");
    // On the CPU the input channels' sums run over whole vectors (`padded` channels): reads past
    // the last channel are clamped (padded_channel) and their sums never read. A guarded last
    // vector is computed lane by lane: 29 input channels took 2.6x as long as 32
    // (docs/performance.md, "Ragged channels, continued"). The weight gradient reads each image
    // from a copy over the padded channels (and zero-padded borders, 'same'), made per image.
    int vec = std::min(ctx.sched.vector, in_channels);
    int padded = ctx.hand && !ctx.sched.gpu ? whole_vectors(in_channels, vec) : in_channels;
    Expr channel = padded_channel(ci, in_channels, padded);

    // The gradient at each window's maximum: the pooled gradient times the activation's
    // derivative there, whose value is the pooled output.
    Func at_max("gradient_at_maximum");
    Expr g = gradient(c, x, y, n);
    at_max(c, x, y, n) = activation ? g * halide_op(*activation->def).derivative(output(c, x, y, n), activation->attrs) : g;
    // Where the maximum of window (x, y) is, in conv output coordinates.
    auto max_x = [&](Expr channel, Expr px, Expr py, Expr image) {
      return px * pw + clamp(index(channel, px, py, image), 0, ph * pw - 1) % pw;
    };
    auto max_y = [&](Expr channel, Expr px, Expr py, Expr image) {
      return py * ph + clamp(index(channel, px, py, image), 0, ph * pw - 1) / pw;
    };
    Func source = zero_padded(input, width, height, same);
    Func image_padded("image_padded");  // over `padded` channels; copied per image where scheduled
    image_padded(ci, x, y, n) = source(channel, x, y, n);

    RDom windows(0, pooled_width, 0, pooled_height, 0, ctx.batch, "windows");
    if (ctx.node.attrs.get_bool("use_bias")) {
      Func bias_sum("bias_sum"), bias_grad("bias_gradient");
      bias_sum(c) = 0.0f;
      bias_sum(c) += at_max(c, windows.x, windows.y, windows.z);
      bias_grad(c) = bias_sum(c);
      param_grads.emplace_back("bias", bias_grad);
      if (ctx.hand && !ctx.sched.gpu) {
        bias_sum.compute_at(bias_grad, Var::outermost()).vectorize(c, std::min(out_channels, ctx.sched.vector));
        vectorize_update(bias_sum.update().reorder(c, windows.x, windows.y, windows.z), c,
                         std::min(out_channels, ctx.sched.vector), out_channels);
      }
    }

    // d(kernel), input channels contiguous: per output channel, the input patch at each maximum.
    Func patch_acc("patch_acc"), patch_sum("patch_sum"), kernel_grad("kernel_gradient");
    Func per_image("patch_per_image"), partial("patch_partial");
    RDom images;
    Var k("k");
    int chunks = ctx.sched.batch_chunks;
    bool per_image_tiles = ctx.hand && !ctx.sched.gpu;
    if (per_image_tiles) {
      // CPU: image by image (the image, a few KB, stays in L1), one output channel's patch sums
      // in registers over the image's windows, then added to the channel's partial sum of the
      // batch chunk. Looping channels outside images instead streams the whole batch's input
      // through the cache once per output channel. Fixed batch chunks in parallel, summed in
      // order: the same result for any thread count.
      RDom win(0, pooled_width, 0, pooled_height, "win");
      Expr wx = max_x(co, win.x, win.y, n), wy = max_y(co, win.x, win.y, n);
      per_image(ci, kx, ky, co, n) = 0.0f;
      per_image(ci, kx, ky, co, n) +=
          at_max(co, win.x, win.y, n) *
          image_padded(ci, wx * int(sw) + dilated(kx, dw) - left, wy * int(sh) + dilated(ky, dh) - top, n);
      Expr chunk = (ctx.batch + chunks - 1) / chunks;
      images = RDom(0, chunk, "images");
      images.where(k * chunk + images < ctx.batch);
      partial(ci, kx, ky, co, k) = 0.0f;
      partial(ci, kx, ky, co, k) += per_image(ci, kx, ky, co, min(k * chunk + images, ctx.batch - 1));
      Expr total = partial(ci, kx, ky, co, 0);
      for (int j = 1; j < chunks; ++j) total = total + partial(ci, kx, ky, co, j);
      kernel_grad(co, ci, kx, ky) = total;
      window_rvars = {win.x, win.y};
    } else {
      Expr mx = max_x(co, windows.x, windows.y, windows.z), my = max_y(co, windows.x, windows.y, windows.z);
      patch_acc(ci, kx, ky, co) = 0.0f;
      patch_acc(ci, kx, ky, co) += at_max(co, windows.x, windows.y, windows.z) *
                                   source(ci, mx * int(sw) + dilated(kx, dw) - left, my * int(sh) + dilated(ky, dh) - top, windows.z);
      patch_sum(ci, kx, ky, co) = patch_acc(ci, kx, ky, co);
      kernel_grad(co, ci, kx, ky) = patch_sum(ci, kx, ky, co);
    }
    param_grads.emplace_back("kernel", kernel_grad);

    Func transposed("transposed");
    transposed(ci, co, kx, ky) = params.at("kernel")(co, channel, kx, ky);
    Func scatter_sum("input_gradient_sum");  // over `padded` channels, copied into the input gradient
    if (ctx.kernel.input_grad[0]) {
      // d(input): each maximum adds its gradient times the kernel to the input patch it read.
      // Output channel outermost, then the windows, then the taps: one channel's kernel slice
      // (taps x input channels) is reused at every window's maximum while it is in cache.
      RDom r(0, int(kw), 0, int(kh), 0, pooled_width, 0, pooled_height, 0, out_channels, "r");
      Expr cx = max_x(r[4], r[2], r[3], n), cy = max_y(r[4], r[2], r[3], n);
      Expr ix = cx * int(sw) + dilated(r[0], dw) - left, iy = cy * int(sh) + dilated(r[1], dh) - top;
      if (same) r.where(ix >= 0 && ix < width && iy >= 0 && iy < height);
      input_grad = Func("input_gradient");
      Func& sum = padded > in_channels ? scatter_sum : input_grad;
      sum(ci, x, y, n) = 0.0f;
      sum(ci, clamp(ix, 0, width - 1), clamp(iy, 0, height - 1), n) +=
          at_max(r[4], r[2], r[3], n) * transposed(ci, r[4], r[0], r[1]);
      if (padded > in_channels) input_grad(ci, x, y, n) = scatter_sum(ci, x, y, n);
      scatter_taps = {r[0], r[1]};
    }
    if (!ctx.hand) return;
    at_max.compute_root().vectorize(c, std::min(ctx.sched.vector, out_channels));
    if (ctx.worth_parallel(ctx.node.shape)) at_max.parallel(n);
    transposed.compute_root();
    ctx.schedule = fmt::format("backward at the {}x{} window maxima only", ph, pw);
    if (padded > in_channels) ctx.schedule += fmt::format(", sums over {} input channels padded to {}", in_channels, padded);
    if (ctx.sched.gpu) {
      patch_sum.compute_root().gpu_tile(ci, co, Var("b0"), Var("b1"), Var("t0"), Var("t1"), std::min(32, in_channels), 1,
                                        TailStrategy::GuardWithIf);
      patch_acc.compute_at(patch_sum, Var("t0"));
      if (ctx.kernel.input_grad[0]) {
        input_grad.compute_root().gpu_blocks(n).gpu_threads(ci);
        input_grad.update().gpu_blocks(n).gpu_threads(ci);
      }
      return;
    }
    // Per batch chunk (a task each), image by image, per output channel: a register tile of all
    // input channels x kernel taps.
    Var cio("cio"), cii("cii");
    bool split_channels = padded % vec == 0 && padded / vec <= 4;
    partial.compute_root().bound(ci, 0, padded).vectorize(ci, vec).parallel(k);
    Stage add = partial.update();
    add.reorder(ci, kx, ky, co, images, k);
    if (split_channels) add.split(ci, cio, cii, vec).vectorize(cii).unroll(cio);
    else vectorize_update(add, ci, vec, padded);
    add.unroll(kx).unroll(ky).parallel(k);
    per_image.compute_at(partial, co).vectorize(ci, vec).unroll(kx).unroll(ky);
    if (padded > in_channels || same) image_padded.compute_at(partial, images).vectorize(ci, vec);
    Stage sum = per_image.update();
    sum.reorder(ci, kx, ky, window_rvars[0], window_rvars[1]);
    if (split_channels) sum.split(ci, cio, cii, vec).vectorize(cii).unroll(cio);
    else vectorize_update(sum, ci, vec, padded);
    sum.unroll(kx).unroll(ky);
    kernel_grad.vectorize(co, std::min(ctx.sched.vector, out_channels));
    if (ctx.kernel.input_grad[0]) {
      // Images are independent: one task each, no two tasks write the same gradient. The image's
      // gradient (a few KB) stays in L1 while the windows add to it; the taps are unrolled so
      // that a window's maximum is located once for all of them.
      input_grad.compute_root().vectorize(ci, vec).parallel(n);
      Func sum_at = input_grad;
      if (padded > in_channels) {
        // The image's sums over whole vectors (a few KB, in L1), then copied out.
        scatter_sum.compute_at(input_grad, n).bound(ci, 0, padded).vectorize(ci, vec);
        sum_at = scatter_sum;
      }
      Stage scatter = sum_at.update();
      if (split_channels) scatter.split(ci, cio, cii, vec).vectorize(cii).unroll(cio);
      else vectorize_update(scatter, ci, vec, padded);
      if (kw * kh <= 25) scatter.unroll(scatter_taps[0]).unroll(scatter_taps[1]);
      if (padded == in_channels) scatter.parallel(n);
      ctx.direct_input_grad = true;
    }
  }

  // conv2d: d(bias) = sum of pre over pixels and batch; d(kernel) = correlation of the input with
  // pre; d(input) = pre convolved with the flipped kernel (strides and padding respected).
  void conv_backward(Func pre, ImageParam input, std::map<std::string, ImageParam>& params, Func& input_grad,
                     std::vector<std::pair<std::string, Func>>& param_grads) {
    const Shape& in = ctx.graph.nodes[ctx.node.inputs[0]].shape;
    const Shape& out = ctx.node.unfused_shape;
    int height = int(in[0]), width = int(in[1]), in_channels = int(in[2]);
    int out_height = int(out[0]), out_width = int(out[1]), out_channels = int(out[2]);
    auto [kh, kw] = ctx.node.attrs.get_pair("kernel");
    auto [sh, sw] = ctx.node.attrs.get_pair("stride");
    int dh = int(ctx.node.attrs.get_pair("dilation").first), dw = int(ctx.node.attrs.get_pair("dilation").second);
    bool same = ctx.node.attrs.get_string("padding") == "same";
    int top = same ? same_padding_before(height, out_height, int((kh - 1) * dh + 1), int(sh)) : 0;
    int left = same ? same_padding_before(width, out_width, int((kw - 1) * dw + 1), int(sw)) : 0;
    Var c("c"), x("x"), y("y"), n("n"), ci("ci"), kx("kx"), ky("ky"), co("co"), k("k");

    // Behind a max pooling that kept its indices, with no input gradient to compute, only the
    // weight gradient reads dpre (the bias sums the windows): it is computed one row at a time
    // where that reduction needs it instead of in full.
    bool dpre_per_row = ctx.hand && !ctx.sched.gpu && window_grad.defined() && !ctx.kernel.input_grad[0];
    // Both gradients by Winograd (3x3 or 5x5, stride 1, the knob or the rule), unless dpre is
    // expanded per row (which happens only without an input gradient).
    bool winograd = ctx.hand && !ctx.sched.gpu && !dpre_per_row && winograd_applies_to_backward(ctx.node) &&
                    winograd_chosen(ctx.node, ctx.sched);
    Func dpre("dpre");  // materialized where computed: three reductions read it
    // Winograd reads the gradient in place where it is a buffer that its tiles and register
    // tiles cover exactly: an even output (whole 2d x 2d blocks) and whole vectors of channels.
    // A copy there only moved memory (resnet20's 3x3 backward kernels: 24.5 -> 23.7 ms best,
    // 25.9 -> 24.4 ms median of six alternating runs).
    bool plain = BackwardContext::plain_read(pre);
    bool in_place = winograd && plain && out_width % (2 * dw) == 0 && out_height % (2 * dh) == 0 &&
                    out_channels % ctx.sched.vector == 0;
    if (winograd && !in_place) {
      // Zero past the output's edges, where Winograd's last tiles read it, and past the last
      // channel, where the weight gradient's padded register tiles read it.
      Expr all;
      Func pre_padded = BoundaryConditions::constant_exterior(pre, 0.0f, {{0, out_channels}, {all, all}, {all, all}, {all, all}});
      dpre(c, x, y, n) = select(x < out_width && y < out_height, pre_padded(c, min(x, out_width - 1), min(y, out_height - 1), n),
                                0.0f);
    } else {
      dpre(c, x, y, n) = pre(c, x, y, n);
    }
    // Elsewhere Winograd's transforms read a zero-extended copy faster than the buffer behind
    // bounds tests (16 channels, batch 64: 1.38 ms against 1.46-1.49 ms per backward kernel).
    if (!dpre_per_row && (winograd ? !in_place : !plain)) ctx.compute_root(dpre, {c, x, y, n}, out);

    Func source = zero_padded(input, width, height, same);

    int block = channel_block(ctx.sched, out_channels, ctx.sched.channel_vectors), vec = std::min(block, ctx.sched.vector);
    if (ctx.node.attrs.get_bool("use_bias")) {
      bool windows = window_grad.defined();
      RDom pixels(0, windows ? window_extent[0] : out_width, 0, windows ? window_extent[1] : out_height, 0, ctx.batch, "pixels");
      Func bias_sum("bias_sum"), bias_grad("bias_gradient");
      bias_sum(c) = 0.0f;
      bias_sum(c) += windows ? window_grad(c, pixels.x, pixels.y, pixels.z) : dpre(c, pixels.x, pixels.y, pixels.z);
      bias_grad(c) = bias_sum(c);
      if (!ctx.hand) {
      } else if (!ctx.sched.gpu) {
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
    if (winograd) {
      Func zero_outside = zero_padded(input, width, height, /*same=*/true);
      Func bounded("source_bounded");  // the input in the output's coordinates, zero outside
      bounded(c, x, y, n) = zero_outside(c, x - left, y - top, n);
      block = WinogradWeights::block_dividing(block, ctx.sched.vector, out_channels);
      int tile = pick_tile(in_channels, ctx.sched.pixel_tile, (block + ctx.sched.vector - 1) / ctx.sched.vector,
                           ctx.sched.registers);
      int chunks = ctx.sched.batch_chunks;
      param_grads.emplace_back("kernel", WinogradWeights::define(dpre, bounded, ctx.batch, chunks, out_channels, in_channels,
                                                                 out_width, out_height, dw, dh, ctx.sched, block, tile, int(kw)));
      // The products (the input gradient's are added below).
      ctx.executed_flops = Winograd::product_flops(in_channels, out_channels, out_width, out_height, dw, dh, 2, int(kw));
      ctx.schedule = fmt::format("weight gradient: Winograd F({0}x{0}, 2x2), register tiles of {1} x {2} channels, {3} batch chunks{4}",
                                 kw, block, tile, chunks, in_place ? ", the output's gradient read in place" : "");
    } else if (ctx.hand && !ctx.sched.gpu && !dpre_per_row && in_channels * 2 >= ctx.sched.pixel_tile && kh * kw >= 16) {
      // Register tiles of `block` output channels x `tile` input channels, as below, but each
      // tile's sum over a block of `rows` output rows (at least 64 pixels where the image has
      // them) kept in registers and added to the tile's partial sum in memory: per task (a
      // channel tile and a batch chunk) every tap's sums advance one block of rows at a time, so
      // that the chunk's gradient and input are read once per task, from the L1/L2 caches, not
      // once per tap.
      int rows = 1;
      for (int r = 1; r <= out_height; ++r)
        if (out_height % r == 0 && r * out_width <= std::max(out_width, 64)) rows = r;
      BatchChunks batch(ctx, k, out_height / rows, 1, "rb");
      int chunks = batch.count;
      Var yb("yb"), nn("nn");
      RDom rr(0, out_width, 0, rows, "rr");
      Expr yy = yb * rows + rr.y;
      Func row_acc("kernel_rows"), kernel_acc("kernel_acc"), kernel_partial("kernel_partial"), kernel_grad("kernel_gradient");
      row_acc(co, ci, kx, ky, yb, nn) = 0.0f;
      row_acc(co, ci, kx, ky, yb, nn) +=
          dpre(co, rr.x, yy, nn) * source(ci, rr.x * int(sw) + dilated(kx, dw) - left, yy * int(sh) + dilated(ky, dh) - top, nn);
      kernel_acc(co, ci, kx, ky, k) = 0.0f;
      kernel_acc(co, ci, kx, ky, k) += row_acc(co, ci, kx, ky, batch.r.x, batch.image);
      kernel_partial(co, ci, kx, ky, k) = kernel_acc(co, ci, kx, ky, k);
      kernel_grad(co, ci, kx, ky) = batch.in_order([&](int j) { return kernel_partial(co, ci, kx, ky, j); });
      param_grads.emplace_back("kernel", kernel_grad);
      if (same) {
        source.compute_root().parallel(source.args()[3]);
        vectorize_pure(source, source.args()[0], ctx.sched.vector, in_channels);
      }
      int tile = pick_tile(in_channels, ctx.sched.pixel_tile, (block + ctx.sched.vector - 1) / ctx.sched.vector,
                           ctx.sched.registers);
      Var coo("coo"), coi("coi"), cio("cio"), cii("cii"), t1("t1"), t2("t2");
      kernel_partial.compute_root().split(co, coo, coi, block).split(ci, cio, cii, tile).reorder(coi, cii, kx, ky, coo, cio, k)
          .vectorize(coi, vec).fuse(coo, cio, t1).fuse(t1, k, t2).parallel(t2);
      kernel_acc.compute_at(kernel_partial, t2).vectorize(co, vec);
      kernel_acc.update().reorder(co, ci, kx, ky, batch.r.x, batch.r.y, batch.r.z, k).vectorize(co, vec).unroll(co).unroll(ci);
      row_acc.compute_at(kernel_acc, kx).vectorize(co, vec).unroll(co).unroll(ci);
      row_acc.update().reorder(co, ci, rr.x, rr.y, kx, ky, yb, nn).vectorize(co, vec).unroll(co).unroll(ci);
      kernel_grad.vectorize(co, vec);
      ctx.schedule = fmt::format("weight gradient: register tiles of {} channels x {} input channels summed over {} rows at a time, "
                                 "{} batch chunks", block, tile, rows, chunks);
    } else {
      BatchChunks batch(ctx, k, out_width, out_height, "r");
      int chunks = batch.count;
      RDom r = batch.r;
      Expr image = batch.image;
      Func kernel_acc("kernel_acc"), kernel_partial("kernel_partial"), kernel_grad("kernel_gradient");
      kernel_acc(co, ci, kx, ky, k) = 0.0f;
      kernel_acc(co, ci, kx, ky, k) +=
          dpre(co, r.x, r.y, image) *
          source(ci, r.x * int(sw) + dilated(kx, dw) - left, r.y * int(sh) + dilated(ky, dh) - top, image);
      kernel_partial(co, ci, kx, ky, k) = kernel_acc(co, ci, kx, ky, k);
      kernel_grad(co, ci, kx, ky) = batch.in_order([&](int j) { return kernel_partial(co, ci, kx, ky, j); });
      param_grads.emplace_back("kernel", kernel_grad);
      if (!ctx.hand) {
      } else if (ctx.sched.gpu) {
        Var b0("b0"), b1("b1"), t0("t0"), t1("t1"), kk("kk");
        kernel_grad.fuse(kx, ky, kk).gpu_tile(co, ci, b0, b1, t0, t1, std::min(32, out_channels), std::min(4, in_channels),
                                               TailStrategy::GuardWithIf).gpu_blocks(kk);
        kernel_acc.compute_at(kernel_grad, t0);
      } else {
        // Register tile: `block` output channels by `tile` input channels; where the input has few
        // channels (conv1: one), by every (ci, kx, ky) instead, so that enough accumulators stay busy.
        int taps = in_channels * int(kw * kh);
        bool small = in_channels * 2 < ctx.sched.pixel_tile;
        Var coo("coo"), coi("coi"), cio("cio"), cii("cii"), t1("t1"), t2("t2"), t3("t3"), t4("t4");
        kernel_partial.compute_root();
        if (same) {
          // The zero-padded input once for the whole batch (a copy of the input), so that the
          // reduction reads memory without a bounds test at every tap.
          source.compute_root().parallel(source.args()[3]);
          vectorize_pure(source, source.args()[0], ctx.sched.vector, in_channels);
        }
        if (small) {
          // The taps in registers (all but 4 of them accumulators): all of them where they fit,
          // else `rows` rows of taps (ci, kx) per pass over the chunk's pixels (the most that fit
          // and divide the kernel's height), else the input channels alone. All 75 taps of a 5x5
          // conv on 3 channels unrolled spilled the registers: 15.7% of the peak
          // (docs/performance.md, random networks).
          int capacity = std::max(1, ctx.sched.registers - 4), row = in_channels * int(kw), rows = 1;
          for (int height = 1; height <= int(kh); ++height)
            if (int(kh) % height == 0 && row * height <= capacity) rows = height;
          int unrolled = taps <= capacity ? taps : row <= capacity ? row * rows : in_channels;
          int vectors = std::max(1, std::min(ctx.sched.channel_vectors, capacity / std::max(1, unrolled)));
          int small_block = channel_block(ctx.sched, out_channels, vectors), small_vec = std::min(small_block, ctx.sched.vector);
          kernel_partial.split(co, coo, coi, small_block).reorder(coi, ci, kx, ky, coo, k).vectorize(coi, small_vec)
              .fuse(coo, k, t1).parallel(t1);
          kernel_acc.compute_at(kernel_partial, t1).vectorize(co, small_vec).unroll(co).unroll(ci);
          Stage sum = kernel_acc.update();
          sum.vectorize(co, small_vec).unroll(co).unroll(ci);
          if (unrolled == taps) {
            kernel_acc.unroll(kx).unroll(ky);
            sum.reorder(co, ci, kx, ky, r.x, r.y, r.z, k).unroll(kx).unroll(ky);
          } else if (unrolled == row * rows) {
            Var kyo("kyo"), kyi("kyi");
            kernel_acc.unroll(kx).unroll(ky);
            sum.split(ky, kyo, kyi, rows).reorder(co, ci, kx, kyi, r.x, r.y, r.z, kyo, k).unroll(kx).unroll(kyi);
          } else {
            sum.reorder(co, ci, r.x, r.y, r.z, kx, ky, k);
          }
          ctx.schedule = fmt::format("weight gradient: register tile {} channels x {} of the {} taps, {} batch chunks in parallel",
                                     small_block, unrolled, taps, chunks);
        } else {
          // Input channels per tile: near pixel_tile, wasting the least to the last, overlapping
          // tile (16 channels by tiles of 12 computed 24: 1.28x slower than one tile of 16).
          int tile = pick_tile(in_channels, ctx.sched.pixel_tile, (block + ctx.sched.vector - 1) / ctx.sched.vector,
                               ctx.sched.registers);
          kernel_partial.split(co, coo, coi, block).split(ci, cio, cii, tile).reorder(coi, cii, coo, cio, kx, ky, k)
              .vectorize(coi, vec).fuse(coo, cio, t1).fuse(t1, kx, t2).fuse(t2, ky, t3).fuse(t3, k, t4).parallel(t4);
          kernel_acc.compute_at(kernel_partial, t4).vectorize(co, vec).unroll(co).unroll(ci);
          kernel_acc.update().reorder(co, ci, r.x, r.y, r.z, kx, ky, k).vectorize(co, vec).unroll(co).unroll(ci);
          ctx.schedule = fmt::format("weight gradient: register tile {} channels x {} input channels, {} batch chunks",
                                  block, tile, chunks);
        }
        kernel_grad.vectorize(co, vec);
        if (dpre_per_row) {
          dpre.compute_at(kernel_acc, r.y).vectorize(c, std::min(vec, out_channels));
          ctx.schedule += ", the gradient at the pooling maxima expanded one row at a time";
        }
      }
    }

    if (!ctx.kernel.input_grad[0]) return;
    if (winograd) {
      // k x k (3 or 5), stride 1, dilation d: d(input)(ci, x, y) = sum over (co, kx, ky) of
      // w(co, ci, k - 1 - kx, k - 1 - ky) * dpre(co, x + left - (k - 1) d + d kx, ...), a k x k
      // correlation of the zero-padded gradient with the flipped kernel, which Winograd
      // computes like the forward.
      Func shifted("dpre_padded"), flipped("flipped");
      int sx = left - int(kw - 1) * dw, sy = top - int(kh - 1) * dh;
      shifted(c, x, y, n) = select(x + sx >= 0 && x + sx < out_width && y + sy >= 0 && y + sy < out_height,
                                   dpre(c, clamp(x + sx, 0, out_width - 1), clamp(y + sy, 0, out_height - 1), n), 0.0f);
      flipped(ci, co, kx, ky) = params.at("kernel")(co, ci, int(kw) - 1 - kx, int(kh) - 1 - ky);
      Winograd wino;
      wino.m = winograd_tile(ctx.node, ctx.sched);
      wino.ksize = int(kw);
      Func convolved = wino.define(shifted, flipped, out_channels, dw, dh);
      input_grad = Func("input_gradient");
      int in_block = channel_block(ctx.sched, in_channels, ctx.sched.channel_vectors), in_vec = std::min(in_block, ctx.sched.vector);
      // Where another consumer of the input wrote its gradient, added here as each value is
      // stored, not in a pass of its own -- where the channel blocks divide the channels, so
      // that no value is computed (and added) twice.
      input_grad(ci, x, y, n) = ctx.plus_previous(convolved(ci, x, y, n), {ci, x, y, n}, in_channels % in_block == 0);
      int vectors = (in_block + ctx.sched.vector - 1) / ctx.sched.vector;
      int tile = pick_tile((width + wino.m - 1) / wino.m, ctx.sched.pixel_tile, vectors, ctx.sched.registers);
      input_grad.compute_root();
      Var block_var, task;
      wino.schedule(input_grad, in_block, in_vec, tile, out_channels, wino.rows_per_task(height), ctx.sched, block_var,
                    task);
      shifted.compute_at(input_grad, task);
      vectorize_pure(shifted, c, ctx.sched.vector, out_channels);
      ctx.direct_input_grad = true;
      ctx.executed_flops += Winograd::product_flops(out_channels, in_channels, width, height, dw, dh, wino.m, wino.ksize);
      ctx.schedule += fmt::format("; input gradient: Winograd F({0}x{0}, {4}x{4}), register tiles of {1} channels x {2} tiles{3}",
                                  wino.m, in_block, tile, ctx.previous_note(), wino.ksize);
      return;
    }
    if (padded_input_gradient(ctx.node, ctx.sched) && ctx.hand) {
      // Stride 1, the output as large as the input: d(input)(ci, x, y) = sum over (co, kx, ky) of
      // w(co, ci, kw - 1 - kx, kh - 1 - ky) * dpre(co, x + sx + d kx, y + sy + d ky), the
      // correlation of the zero-padded gradient with the flipped kernel -- the forward's work,
      // in the forward's register tiles (input channels x pixels, the sum over the output
      // channels innermost, then the taps), from a zero-padded copy of the gradient's rows per
      // task.
      int sx = left - int(kw - 1) * dw, sy = top - int(kh - 1) * dh;
      Func shifted("dpre_padded"), flipped("flipped"), acc("input_gradient_acc");
      shifted(c, x, y, n) = select(x + sx >= 0 && x + sx < out_width && y + sy >= 0 && y + sy < out_height,
                                   dpre(c, clamp(x + sx, 0, out_width - 1), clamp(y + sy, 0, out_height - 1), n), 0.0f);
      flipped(ci, co, kx, ky) = params.at("kernel")(co, ci, int(kw) - 1 - kx, int(kh) - 1 - ky);
      RDom r(0, out_channels, 0, int(kw), 0, int(kh), "r");
      acc(ci, x, y, n) = 0.0f;
      acc(ci, x, y, n) += flipped(ci, r.x, r.y, r.z) * shifted(r.x, x + r.y * dw, y + r.z * dh, n);
      int in_block = channel_block(ctx.sched, in_channels, ctx.sched.channel_vectors), in_vec = std::min(in_block, ctx.sched.vector);
      input_grad = Func("input_gradient");
      input_grad(ci, x, y, n) = ctx.plus_previous(acc(ci, x, y, n), {ci, x, y, n}, in_channels % in_block == 0);
      int tile = pick_tile(width, ctx.sched.pixel_tile, (in_block + ctx.sched.vector - 1) / ctx.sched.vector, ctx.sched.registers);
      Var cio("cio"), cii("cii"), xo("xo"), xi("xi"), yn("yn");
      flipped.compute_root();
      vectorize_pure(flipped, ci, ctx.sched.vector, in_channels);
      input_grad.compute_root().split(ci, cio, cii, in_block).split(x, xo, xi, tile).reorder(cii, xi, cio, xo, y, n)
          .vectorize(cii, in_vec).unroll(cii).unroll(xi).fuse(y, n, yn).parallel(yn);
      acc.compute_at(input_grad, cio).vectorize(ci, in_vec).unroll(ci).unroll(x);
      acc.update().reorder(ci, x, r.x, r.y, r.z, y, n).vectorize(ci, in_vec).unroll(ci).unroll(x);
      shifted.compute_at(input_grad, yn);
      vectorize_pure(shifted, c, ctx.sched.vector, out_channels);
      ctx.direct_input_grad = true;
      ctx.schedule += fmt::format("; input gradient: the padded gradient convolved in register tiles of {} channels x {} pixels{}",
                                  in_block, tile, ctx.previous_note());
      return;
    }
    Func transposed("transposed");  // weights with input channels contiguous
    transposed(ci, co, kx, ky) = params.at("kernel")(co, ci, kx, ky);
    if (kw == 1 && kh == 1 && sw == 1 && sh == 1 && ctx.hand && !ctx.sched.gpu) {
      // 1x1, stride 1: the input gradient is the GEMM itself, d(input)(ci, x, y) = sum over co of
      // w(co, ci) * dpre(co, x, y), written straight into the output in register tiles of input
      // channels x pixels (no columns, no col2im copy).
      RDom rc(0, out_channels, "rc");
      Func acc("input_gradient_acc");
      acc(ci, x, y, n) = 0.0f;
      acc(ci, x, y, n) += transposed(ci, rc, 0, 0) * dpre(rc, x, y, n);
      input_grad = Func("input_gradient");
      input_grad(ci, x, y, n) = acc(ci, x, y, n);
      int in_block = channel_block(ctx.sched, in_channels, ctx.sched.channel_vectors), in_vec = std::min(in_block, ctx.sched.vector);
      int tile = pick_tile(width, ctx.sched.pixel_tile, (in_block + ctx.sched.vector - 1) / ctx.sched.vector, ctx.sched.registers);
      Var cio("cio"), cii("cii"), xo("xo"), xi("xi"), yn("yn");
      transposed.compute_root();
      input_grad.compute_root().split(ci, cio, cii, in_block).split(x, xo, xi, tile).reorder(cii, xi, cio, xo, y, n)
          .vectorize(cii, in_vec).unroll(cii).unroll(xi).fuse(y, n, yn).parallel(yn);
      acc.compute_at(input_grad, cio).vectorize(ci, in_vec).unroll(ci).unroll(x);
      acc.update().reorder(ci, x, rc, y, n).vectorize(ci, in_vec).unroll(ci).unroll(x);
      ctx.direct_input_grad = true;
      ctx.schedule += fmt::format("; input gradient: GEMM in register tiles of {} channels x {} pixels", in_block, tile);
      return;
    }
    // A GEMM over the real output pixels, then col2im. cols(ci, kx, ky, ox, oy) = sum over co of
    // w(co, ci, kx, ky) * dpre(co, ox, oy) does exactly the forward FLOPs (a direct convolution
    // of the zero-padded gradient does ~40% more at stride 1, and stride^2 times more at larger
    // strides, where most taps miss the stride); d(input)(ci, x, y) then adds the columns that
    // land on (x, y): tap (dx, dy) where x + left - dx * dilation is a multiple of the stride.
    Var ox("ox"), oy("oy");
    RDom rc(0, out_channels, "rc");
    Func cols_acc("cols_acc"), cols("cols");
    cols_acc(ci, kx, ky, ox, oy, n) = 0.0f;
    cols_acc(ci, kx, ky, ox, oy, n) += transposed(ci, rc, kx, ky) * dpre(rc, ox, oy, n);
    cols(ci, kx, ky, ox, oy, n) = cols_acc(ci, kx, ky, ox, oy, n);
    Expr sum = 0.0f;
    for (int dy = 0; dy < kh; ++dy)
      for (int dx = 0; dx < kw; ++dx) {
        Expr px = x + left - dx * dw, py = y + top - dy * dh;
        Expr valid = px >= 0 && px < out_width * int(sw) && py >= 0 && py < out_height * int(sh);
        if (sw > 1) {
          valid = valid && px % int(sw) == 0;
          px = px / int(sw);
        }
        if (sh > 1) {
          valid = valid && py % int(sh) == 0;
          py = py / int(sh);
        }
        sum = sum + select(valid, cols(ci, dx, dy, clamp(px, 0, out_width - 1), clamp(py, 0, out_height - 1), n), 0.0f);
      }
    input_grad = Func("input_gradient");
    // The previous gradient added as stored where whole vectors cover the channels (as with
    // Winograd above).
    int col2im_vec = std::min(in_channels, ctx.sched.vector);
    input_grad(ci, x, y, n) = ctx.plus_previous(sum, {ci, x, y, n}, !ctx.sched.gpu && in_channels % col2im_vec == 0);
    if (!ctx.hand) return;
    transposed.compute_root();
    if (ctx.sched.gpu) {
      Var b0("b0"), b1("b1"), t0("t0"), t1("t1"), q("q");
      cols.compute_root().fuse(kx, ky, q).gpu_tile(ci, ox, b0, b1, t0, t1, std::min(32, in_channels),
                                                    std::min(8, out_width), TailStrategy::GuardWithIf);
      cols_acc.compute_at(cols, t0);
      input_grad.compute_root().gpu_tile(ci, x, b0, b1, t0, t1, std::min(32, in_channels), std::min(8, width),
                                         TailStrategy::GuardWithIf);
      return;
    }
    int in_block = channel_block(ctx.sched, in_channels, ctx.sched.channel_vectors), in_vec = std::min(in_block, ctx.sched.vector);
    int tile = pick_tile(out_width, ctx.sched.pixel_tile, (in_block + ctx.sched.vector - 1) / ctx.sched.vector, ctx.sched.registers);
    Var cio("cio"), cii("cii"), oxo("oxo"), oxi("oxi");
    // Per image: its columns (in_channels x taps x output pixels) stay in the L2 cache.
    input_grad.compute_root().vectorize(ci, col2im_vec).parallel(n);
    ctx.direct_input_grad = true;  // written straight into the output, not copied there
    ctx.schedule += fmt::format("; input gradient: GEMM over the output pixels, then col2im{}", ctx.previous_note());
    cols.compute_at(input_grad, n)
        .split(ci, cio, cii, in_block)
        .split(ox, oxo, oxi, tile)
        .reorder(cii, oxi, cio, oxo, kx, ky, oy)
        .vectorize(cii, in_vec)
        .unroll(cii)
        .unroll(oxi);
    cols_acc.compute_at(cols, cio).vectorize(ci, in_vec).unroll(ci).unroll(ox);
    cols_acc.update().reorder(ci, ox, rc, kx, ky, oy, n).vectorize(ci, in_vec).unroll(ci).unroll(ox);
  }

};

}  // namespace

// The register-tile knobs (halide_kernels.cpp, tile_space) of forward, training forward and
// backward kernels; backward adds the batch chunks of the weight gradient.
void register_conv2d_halide() {
  HalideOp op;
  op.stamp = __DATE__ " " __TIME__;
  op.forward = conv2d_forward;
  op.backward = [](BackwardContext& ctx) { Conv2dBackward{ctx, {}, {}, {}, {}}.define(); };
  op.schedule_space = [](const Node& node, const KernelInfo& kernel) {
    std::vector<ScheduleKnobs> space = register_tile_space();
    if (kernel.kind != KernelKind::Backward) {
      // Where Winograd applies, the algorithm the rule did not pick, with the default tile and
      // with each tile of the space.
      if (!winograd_applies(node, kernel)) return space;
      std::string other = winograd_by_default(node) ? "direct" : "winograd";
      std::vector<ScheduleKnobs> algorithms;
      ScheduleKnobs plain;
      plain.algorithm = other;
      algorithms.push_back(plain);
      for (ScheduleKnobs knobs : space) {
        knobs.algorithm = other;
        algorithms.push_back(knobs);
      }
      space.insert(space.end(), algorithms.begin(), algorithms.end());
      if (winograd_kernel(node) == 3) space.push_back(other_winograd_tile(node));
      return space;
    }
    std::vector<ScheduleKnobs> chunked;
    for (const ScheduleKnobs& base : space)
      for (int chunks : {2, 8}) {
        ScheduleKnobs knobs = base;
        knobs.batch_chunks = chunks;
        chunked.push_back(knobs);
      }
    space.insert(space.end(), chunked.begin(), chunked.end());
    // Where the gradients can use Winograd (the weight gradient unless expanded per pooling
    // window, see conv_backward), the algorithm the rule did not pick, with each batch split.
    if (winograd_applies_to_backward(node) && (kernel.input_grad.at(0) || !fuses_pooling(node))) {
      for (int chunks : {0, 2, 8}) {
        ScheduleKnobs knobs;
        knobs.algorithm = winograd_by_default(node) ? "direct" : "winograd";
        knobs.batch_chunks = chunks;
        space.push_back(knobs);
      }
      // Behind a max pooling with indices the rule also weighs the target's registers
      // (at_maxima): both algorithms.
      if (saves_pool_index(node) && winograd_by_default(node)) {
        ScheduleKnobs knobs;
        knobs.algorithm = "winograd";
        space.push_back(knobs);
      }
      // The input gradient's: the other tile side (3x3); GEMM with col2im where the padded
      // convolution applies (5x5; with algorithm=direct the padded convolution computes it).
      if (kernel.input_grad.at(0) && winograd_kernel(node) == 3) space.push_back(other_winograd_tile(node));
      if (kernel.input_grad.at(0) && winograd_kernel(node) == 5 && padded_input_gradient_applies(node)) {
        ScheduleKnobs knobs;
        knobs.algorithm = "columns";
        space.push_back(knobs);
      }
    } else if (padded_input_gradient_applies(node) && kernel.input_grad.at(0)) {
      // The input gradient's other algorithm (GEMM and col2im), with each batch split.
      for (int chunks : {0, 2, 8}) {
        ScheduleKnobs knobs;
        knobs.algorithm = "columns";
        knobs.batch_chunks = chunks;
        space.push_back(knobs);
      }
    }
    return space;
  };
  register_halide_op("conv2d", op);
}

}  // namespace cnnc
