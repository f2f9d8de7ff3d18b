// Building blocks shared by the Halide translation units (halide_kernels.cpp: forward kernels,
// halide_training.cpp: training kernels, ops/*.cpp: the ops' Halide halves). Includes Halide.h:
// never include it elsewhere.
#pragma once

#include <Halide.h>

#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "codegen/codegen.h"
#include "graph/graph.h"

namespace cnnc {

using namespace Halide;

// ---------------------------------------------------------------------------------------------
// Schedule parameters per target

struct ScheduleParams {
  bool gpu = false;
  int registers = 16;       // vector registers of the target
  int vector = 8;           // floats per SIMD register
  int channel_vectors = 2;  // register tile: channel_vectors * vector output channels ...
  int pixel_tile = 6;       // ... by pixel_tile output pixels (or batch rows, for dense)
  int batch_chunks = 4;     // weight gradients: the batch is split in this many chunks summed in order
  bool pixel_tile_tuned = false;  // pixel_tile came from a tuned knob (heuristics leave it alone)
  bool channel_vectors_tuned = false;  // channel_vectors came from a tuned knob (channel_block)
  std::string algorithm;          // ScheduleKnobs::algorithm
};

inline ScheduleParams schedule_params(const Target& target) {
  ScheduleParams params;
  if (target.has_gpu_feature()) {
    params.gpu = true;
    return params;
  }
  params.vector = target.natural_vector_size<float>();
  params.registers = target.arch == Target::X86 && !target.has_feature(Target::AVX512) ? 16 : 32;
  if (target.arch == Target::X86 && !target.has_feature(Target::AVX512)) {
    // AVX2: 16 ymm registers. 2 vectors x 6 pixels = 12 accumulators + 2 weight vectors + 1
    // broadcast = 15; at least 8 accumulators are needed to hide the FMA latency.
    params.channel_vectors = 2;
    params.pixel_tile = 6;
  } else {
    // AVX-512 and NEON: 32 vector registers, so 2 x 12 = 24 accumulators + 3 fit.
    params.channel_vectors = 2;
    params.pixel_tile = 12;
  }
  return params;
}

// `value` rounded up to a multiple of `multiple`.
inline int round_up(int value, int multiple) { return (value + multiple - 1) / multiple * multiple; }

// The pixels per register tile for a row of `extent` pixels: near `preferred`, wasting the least
// work to the last, overlapping tile (ShiftInwards recomputes it), and small enough that
// `vectors` x tile accumulators + the operands fit in the registers. Ties go to the larger tile.
inline int pick_tile(int extent, int preferred, int vectors, int registers) {
  int best = std::max(1, std::min(preferred, extent)), best_work = 0;
  for (int tile = std::max(1, preferred / 2); tile <= preferred + preferred / 4 + 1; ++tile) {
    if (tile > extent || vectors * tile + vectors + 1 > registers) continue;
    int work = round_up(extent, tile);
    if (best_work == 0 || work < best_work || (work == best_work && tile > best)) {
      best = tile;
      best_work = work;
    }
  }
  return best;
}

// Channels (or units) per register tile: whole vectors, at most `vectors` of them and no more
// than the channels, the count that computes the fewest channels (largest of equals); all the
// channels where they are fewer than a vector. A tile is thus always a multiple of its vector
// width, so the stages computed per tile vectorize exactly; the last tile of a row of channels
// that is not a multiple of it overlaps the one before (ShiftInwards), which only pure
// definitions may do, and computes again what the overlap covers: 35 channels in tiles of 32
// compute 64, in tiles of 16 compute 48 (docs/performance.md, random networks). A tuned
// channel_vectors knob asks for its count as such: that many vectors where there are that many
// channels, else as many as there are (so that cnnc tune measures 2 vectors of 67 channels too).
inline int channel_block(const ScheduleParams& params, int channels, int vectors) {
  if (channels < params.vector) return channels;
  if (params.channel_vectors_tuned) {
    int most = std::max(1, vectors) * params.vector;
    return channels >= most ? most : channels / params.vector * params.vector;
  }
  int best = params.vector, best_work = 0;
  for (int v = 1; v <= std::max(1, vectors) && v * params.vector <= channels; ++v) {
    int block = v * params.vector, work = round_up(channels, block);
    if (best_work == 0 || work <= best_work) {
      best = block;
      best_work = work;
    }
  }
  return best;
}

// Vectorizes a pure dimension of `extent` values (the extent `f` is computed over) by up to
// `lanes`. A partial last vector is shifted inwards, overlapping the one before (a pure
// definition may compute values twice), not guarded: Halide 14 computes a guarded vector lane by
// lane (docs/performance.md, "Ragged channels, continued").
inline void vectorize_pure(Func f, Var v, int lanes, int extent) {
  f.vectorize(v, std::min(lanes, extent), TailStrategy::ShiftInwards);
}

// Vectorizes an update stage (a reduction step) along a dimension of `extent` values by `lanes`:
// where the extent is not a multiple of the lanes, the last vector is guarded instead of rounded
// up, since a rounded-up update reads its inputs past their ends, and an update must not be
// applied twice to the same values (ShiftInwards is illegal there).
template <typename V>
Stage vectorize_update(Stage stage, V var, int lanes, int extent) {
  if (extent % lanes == 0) return stage.vectorize(var, lanes);
  return stage.vectorize(var, lanes, TailStrategy::GuardWithIf);
}

// The target's defaults with a kernel's tuned knobs applied.
inline ScheduleParams schedule_params(const Target& target, const ScheduleKnobs& knobs) {
  ScheduleParams params = schedule_params(target);
  if (knobs.channel_vectors > 0) params.channel_vectors = knobs.channel_vectors;
  if (knobs.pixel_tile > 0) params.pixel_tile = knobs.pixel_tile;
  params.pixel_tile_tuned = knobs.pixel_tile > 0;
  params.channel_vectors_tuned = knobs.channel_vectors > 0;
  if (knobs.batch_chunks > 0) params.batch_chunks = knobs.batch_chunks;
  params.algorithm = knobs.algorithm;
  return params;
}

// ---------------------------------------------------------------------------------------------
// Building blocks

// Halide extents of a per-example shape, innermost first: [H, W, C] -> {C, W, H}.
inline std::vector<int> halide_extents(const Shape& shape) {
  std::vector<int> extents;
  for (auto it = shape.rbegin(); it != shape.rend(); ++it) extents.push_back(int(*it));
  return extents;
}

// Tells Halide the exact dense layout of a buffer: constant extents and strides (all but the
// batch), which lets it vectorize without runtime checks.
template <typename BufferLike>
void constrain_layout(BufferLike buffer, const std::vector<int>& extents, bool batched) {
  int stride = 1;
  for (size_t d = 0; d < extents.size(); ++d) {
    buffer.dim(int(d)).set_bounds(0, extents[d]).set_stride(stride);
    stride *= extents[d];
  }
  if (batched) buffer.dim(int(extents.size())).set_min(0).set_stride(stride);
}

inline std::vector<Var> make_vars(size_t count) {
  static const char* names[] = {"c", "x", "y", "n"};
  std::vector<Var> vars;
  for (size_t i = 0; i < count; ++i) vars.emplace_back(count == 2 ? (i == 0 ? "i" : "n") : names[4 - count + i]);
  return vars;
}

inline std::vector<Expr> as_exprs(const std::vector<Var>& vars) { return std::vector<Expr>(vars.begin(), vars.end()); }

// A tap's offset in the input: `tap` times the dilation (the tap itself where there is none, so
// that undilated kernels are defined exactly as before dilation existed).
inline Expr dilated(Expr tap, int dilation) { return dilation == 1 ? tap : tap * dilation; }

// A convolution's input as its kernel reads it, in image coordinates: zero outside the
// width x height image where the padding is 'same' (the input itself for 'valid').
inline Func zero_padded(ImageParam input, int width, int height, bool same) {
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

// Keras 'same' padding: the padding before the first element along one axis.
inline int same_padding_before(int input, int output, int window, int stride) {
  return std::max((output - 1) * stride + window - input, 0) / 2;
}

// Sliding-window pooling of `source` (c, x, y, n) with extents (channels, width, height).
// Windows that stick out ('same' padding) ignore the outside: max over the real elements,
// average divided by the number of real elements, as Keras does.
inline Func pool2d(Pooling pooling, Func source, int width, int height, const Attrs& attrs, int out_width,
                   int out_height) {
  auto [ph, pw] = attrs.get_pair("size");
  auto [sh, sw] = attrs.get_pair("stride");
  bool same = attrs.get_string("padding") == "same";
  int top = same ? same_padding_before(height, out_height, int(ph), int(sh)) : 0;
  int left = same ? same_padding_before(width, out_width, int(pw), int(sw)) : 0;
  Var c("c"), x("x"), y("y"), n("n");
  Func pool("pool");
  Expr x0 = x * int(sw) - left, y0 = y * int(sh) - top;
  Expr result;
  bool is_max = pooling == Pooling::Max;
  for (int dy = 0; dy < ph; ++dy)
    for (int dx = 0; dx < pw; ++dx) {
      Expr xx = x0 + dx, yy = y0 + dy;
      Expr value = source(c, clamp(xx, 0, width - 1), clamp(yy, 0, height - 1), n);
      if (same) {
        Expr inside = xx >= 0 && xx < width && yy >= 0 && yy < height;
        value = select(inside, value, is_max ? Expr(-std::numeric_limits<float>::infinity()) : Expr(0.0f));
      }
      result = !result.defined() ? value : (is_max ? max(result, value) : result + value);
    }
  if (!is_max) {
    Expr count = Expr(float(ph * pw));
    if (same) {
      Expr rows = min(y0 + int(ph), height) - max(y0, 0);
      Expr cols = min(x0 + int(pw), width) - max(x0, 0);
      count = cast<float>(rows * cols);
    }
    result = result / count;
  }
  pool(c, x, y, n) = result;
  return pool;
}

// A reduction over every value of one channel of a batch of `shape` (all pixels, all
// examples): `point` indexes the value at channel `c`, `count` is how many values there are.
struct ChannelReduction {
  RDom r;
  std::vector<Expr> point;
  Expr count;
};
inline ChannelReduction per_channel(const Shape& shape, Expr batch, Var c) {
  std::vector<int> extents = halide_extents(shape);
  Region ranges;
  for (size_t d = 1; d < extents.size(); ++d) ranges.emplace_back(0, extents[d]);
  ranges.emplace_back(0, batch);
  ChannelReduction reduction{RDom(ranges, "r"), {c}, Expr()};
  for (int d = 0; d < reduction.r.dimensions(); ++d) reduction.point.push_back(reduction.r[d]);
  reduction.count = cast<float>(batch * int(shape_elements(shape) / shape.back()));
  return reduction;
}

// Channels rounded up to whole vectors of `lanes` (none where there are fewer channels).
inline int whole_vectors(int channels, int lanes) {
  return channels < lanes ? channels : round_up(channels, lanes);
}

// The channel coordinate at which per-channel sums over `padded` channels (whole vectors) read
// tensors of `channels`: c itself where they are equal; else clamped, the clamp marked likely
// to be a no-op, so that Halide computes the whole vectors before the last unclamped (dense
// loads) and only the last one with clamped reads (its extra lanes are sums never read). A
// partial vector guarded instead is computed lane by lane (Halide 14): batchnorm over 22
// channels took 3.8x as long as over 32 (docs/performance.md, random networks).
inline Expr padded_channel(Var c, int channels, int padded) {
  return padded > channels ? clamp(likely(c), 0, channels - 1) : Expr(c);
}

// Per-channel sums over a batch of `shape` (every pixel of every example) in a fixed number of
// batch chunks: partial(c, k) sums chunk k over `r`, reading the value at `at`, and `in_order`
// adds the chunks' sums in order, so that the result is the same for any thread count while the
// chunks run in parallel. The sums cover the channels padded to whole vectors of `lanes`
// (padded_channel).
struct ChunkedChannelSum {
  static constexpr int chunks = 8;
  Var k{"k"};
  RDom r;
  std::vector<Expr> at;  // (c, the pixel's coordinates, the example)
  Expr count;            // values per channel
  int padded = 0;        // channels the sums cover

  ChunkedChannelSum(const Shape& shape, Expr batch, Var c, const std::string& name, int lanes) {
    std::vector<int> extents = halide_extents(shape);
    Expr chunk = (batch + chunks - 1) / chunks;
    Region ranges;
    for (size_t d = 1; d < extents.size(); ++d) ranges.emplace_back(0, extents[d]);
    ranges.emplace_back(0, chunk);
    r = RDom(ranges, name);
    Expr image = k * chunk + r[r.dimensions() - 1];
    r.where(image < batch);
    padded = whole_vectors(int(shape.back()), lanes);
    at = {padded_channel(c, int(shape.back()), padded)};
    for (int d = 0; d + 1 < r.dimensions(); ++d) at.push_back(r[d]);
    at.push_back(min(image, batch - 1));  // the clamp only bounds the region: `where` skips the rest
    count = cast<float>(batch * int(shape_elements(shape) / shape.back()));
  }

  // partial(c, 0) + partial(c, 1) + ..., in that order (`value` picks one value of a Tuple).
  Expr in_order(Func partial, Var c, int value = -1) const {
    Expr total;
    for (int j = 0; j < chunks; ++j) {
      Expr term = value < 0 ? Expr(partial(c, j)) : partial(c, j)[value];
      total = j == 0 ? term : total + term;
    }
    return total;
  }

  // The partial sums computed first, on the CPU vectorized over the channels and one task per chunk.
  void schedule(Func partial, Var c, const ScheduleParams& sched, int channels) const {
    partial.compute_root();
    if (sched.gpu) return;
    int lanes = std::min(channels, sched.vector);
    partial.bound(c, 0, padded).vectorize(c, lanes).parallel(k);  // padded: whole vectors of `lanes`
    Stage update = partial.update();
    std::vector<VarOrRVar> order{c};
    for (int d = 0; d < r.dimensions(); ++d) order.push_back(r[d]);
    order.push_back(k);
    update.reorder(order);
    vectorize_update(update, c, lanes, padded).parallel(k);
  }
};

// Batchnorm's training statistics in one pass over the input: per channel, the sums of the
// deviations d = x - K from a shift K and of their squares, in fixed batch chunks in parallel
// (the "shifted data" algorithm). E[d^2] - E[d]^2 loses the digits that (mean - K)^2 / variance
// carries; K is the channel's mean over its first m values of the batch (the first examples,
// at least 256 values where there are), and since those m values alone put at least
// m (K - mean)^2 / N into the variance of the N values, that ratio is at most N / m (64 for
// resnet20's first stage at batch 64, the batch / 256 at most for a dense layer's units) where
// the plain E[x^2] - E[x]^2 loses every digit of a channel far from zero. It was two passes (the
// mean, then the squared deviations from it): one read of the input fewer per training forward,
// and batchnorm's backward adds its own two gradient sums to the same pass (`more`). Forward and
// backward compute the sums the same way, so backward normalizes exactly as forward did.
struct BatchStatistics {
  ChunkedChannelSum sums;
  Func shift{"batch_shift"}, shift_sum{"batch_shift_sum"}, partial{"batch_sums"}, mean{"batch_mean"},
      variance{"batch_variance"};
  RDom first;  // the values K averages
  Expr mean_deviation;  // E[x - K] per channel

  // `more` adds sums of its own to the pass: further values of the Tuple, given the point read
  // (c, the pixel's coordinates, the example) and the deviation there.
  BatchStatistics(ImageParam input, const Shape& shape, Var c, const ScheduleParams& sched,
                  const std::function<std::vector<Expr>(const std::vector<Expr>& at, Expr deviation)>& more = nullptr)
      : sums(shape, input.dim(int(shape.size())).extent(), c, "r", sched.gpu ? 1 : sched.vector) {
    // K: the mean of the first examples' values, at least 256 of them where the batch has them.
    int pixels = int(shape_elements(shape) / shape.back());
    Expr examples = min(input.dim(int(shape.size())).extent(), (256 + pixels - 1) / pixels);
    std::vector<int> extents = halide_extents(shape);
    Region ranges;
    for (size_t d = 1; d < extents.size(); ++d) ranges.emplace_back(0, extents[d]);
    ranges.emplace_back(0, examples);
    first = RDom(ranges, "first");
    std::vector<Expr> point{padded_channel(c, int(shape.back()), sums.padded)};
    for (int d = 0; d < first.dimensions(); ++d) point.push_back(first[d]);
    shift_sum(c) = 0.0f;
    shift_sum(c) += input(point);
    shift(c) = shift_sum(c) / cast<float>(examples * pixels);
    Expr deviation = input(sums.at) - shift(c);
    std::vector<Expr> values{deviation, deviation * deviation};
    if (more)
      for (const Expr& value : more(sums.at, deviation)) values.push_back(value);
    std::vector<Expr> zeros(values.size(), 0.0f), updated;
    partial(c, sums.k) = Tuple(zeros);
    for (size_t i = 0; i < values.size(); ++i) updated.push_back(partial(c, sums.k)[int(i)] + values[i]);
    partial(c, sums.k) = Tuple(updated);
    mean_deviation = sums.in_order(partial, c, 0) / sums.count;
    mean(c) = shift(c) + mean_deviation;
    variance(c) = max(sums.in_order(partial, c, 1) / sums.count - mean_deviation * mean_deviation, 0.0f);
  }

  // The sum over the batch of value `i` of the Tuple (0: deviations, 1: their squares, 2...: `more`).
  Expr total(Var c, int i) const { return sums.in_order(partial, c, i); }

  void schedule(Var c, const Shape& shape, const ScheduleParams& sched) const {
    int channels = int(shape.back());
    int lanes = std::min(channels, sched.vector);
    Func(shift).compute_root();
    Func(shift_sum).compute_root();
    if (!sched.gpu) {
      Func(shift).bound(c, 0, sums.padded).vectorize(c, lanes);
      Func(shift_sum).bound(c, 0, sums.padded).vectorize(c, lanes);
      std::vector<VarOrRVar> order{c};
      for (int d = 0; d < first.dimensions(); ++d) order.push_back(first[d]);
      vectorize_update(Func(shift_sum).update().reorder(order), c, lanes, sums.padded);
    }
    sums.schedule(partial, c, sched, channels);
    for (Func f : {mean, variance}) {
      f.compute_root();
      if (!sched.gpu) f.vectorize(c, lanes, TailStrategy::GuardWithIf);
    }
  }
};

// The mean and biased variance per channel of `input` (a batch of `shape`) over the batch and
// the pixels (BatchStatistics), as two Funcs of the channel.
inline std::pair<Func, Func> batch_statistics(ImageParam input, const Shape& shape, Var c, const ScheduleParams& sched,
                                              bool hand) {
  BatchStatistics statistics(input, shape, c, sched);
  if (hand) statistics.schedule(c, shape, sched);
  return {statistics.mean, statistics.variance};
}

// Dropout's keep mask, a pure function of (seed, step, flat index), so that backward recomputes
// exactly the mask forward used. Keeps an element with probability 1 - rate. The index counts
// from the global batch's first example: a shard starting at example_offset draws the masks
// that one process running the whole batch would.
inline Expr dropout_keep(const std::vector<Expr>& at, const Shape& shape, Expr seed, Expr step, Expr example_offset,
                         double rate) {
  std::vector<int> extents = halide_extents(shape);
  Expr index = at.back() + example_offset;
  for (int d = int(extents.size()) - 1; d >= 0; --d) index = index * extents[size_t(d)] + at[size_t(d)];
  Expr h = cast<uint32_t>(index) * Internal::UIntImm::make(UInt(32), 0x9E3779B1u);
  h = h ^ (cast<uint32_t>(step) * Internal::UIntImm::make(UInt(32), 0x85EBCA77u));
  h = h ^ (cast<uint32_t>(seed) * Internal::UIntImm::make(UInt(32), 0xC2B2AE3Du));
  h = h ^ (h >> 16);
  h = h * Internal::UIntImm::make(UInt(32), 0x7FEB352Du);
  h = h ^ (h >> 15);
  h = h * Internal::UIntImm::make(UInt(32), 0x846CA68Bu);
  h = h ^ (h >> 16);
  return cast<float>(h >> 8) * (1.0f / 16777216.0f) >= float(rate);
}

// A kernel's pipeline before compilation: its arguments in order (with what the JIT timer needs
// to make data for them) and its outputs with their extents.
struct PipelineBuild {
  struct Arg {
    ImageParam image;             // a buffer argument, or
    Param<float> real{"unused_real"};
    Param<int32_t> integer{"unused_integer"};
    int kind = 0;                 // 0: buffer, 1: float scalar, 2: int scalar
    std::vector<int> extents;     // buffer extents, innermost first, without the batch
    bool batched = false;
    int int_limit = 0;            // int32 buffers (labels): values in [0, int_limit)
    bool non_negative = false;    // float buffers that must not be negative (Adam's v, a moving variance)
    float value = 0;              // scalars: the value to time with
  };
  std::vector<Arg> args;
  std::vector<Func> outputs;
  std::vector<std::vector<int>> output_extents;
  std::vector<bool> output_batched;
  std::vector<Type> output_types;
  std::string schedule;           // human-readable summary of the hand schedule
  int64_t executed_flops = 0;     // KernelContext::executed_flops
  bool hand = true;               // false: an autoscheduler will schedule it; add no schedule

  ImageParam buffer(Type type, const std::vector<int>& extents, bool batched, const std::string& name, int int_limit = 0) {
    ImageParam image(type, int(extents.size()) + (batched ? 1 : 0), name);
    if (type.is_float()) constrain_layout(image, extents, batched);
    Arg arg;
    arg.image = image;
    arg.extents = extents;
    arg.batched = batched;
    arg.int_limit = int_limit;
    args.push_back(arg);
    return image;
  }
  void scalar(Param<float> param, float value) {
    Arg arg;
    arg.kind = 1;
    arg.real = param;
    arg.value = value;
    args.push_back(arg);
  }
  void scalar(Param<int32_t> param, int value) {
    Arg arg;
    arg.kind = 2;
    arg.integer = param;
    arg.value = float(value);
    args.push_back(arg);
  }
  // An output (a Tuple-valued Func gives one buffer per element).
  void output(Func func, const std::vector<int>& extents, bool batched) {
    outputs.push_back(func);
    std::vector<OutputImageParam> buffers = func.output_buffers();
    for (size_t i = 0; i < buffers.size(); ++i) {
      // Only the first buffer of a Tuple may be constrained; the others share its bounds.
      if (i == 0 && func.output_types()[i].is_float()) constrain_layout(buffers[i], extents, batched);
      output_extents.push_back(extents);
      output_batched.push_back(batched);
      output_types.push_back(func.output_types()[i]);
    }
  }
  std::vector<Argument> arguments() const {
    std::vector<Argument> list;
    for (const Arg& arg : args) {
      if (arg.kind == 0) list.push_back(arg.image);
      else if (arg.kind == 1) list.push_back(arg.real);
      else list.push_back(arg.integer);
    }
    return list;
  }
};

// Defines one forward kernel (Forward, ForwardTrain): halide_kernels.cpp.
void define_forward_kernel(const Graph& graph, const KernelInfo& kernel, const Target& target, PipelineBuild& build);
// Defines one training kernel (Backward, Loss, Adam, Sgd): halide_training.cpp.
void define_training_kernel(const Graph& graph, const KernelInfo& kernel, const Target& target, PipelineBuild& build);

}  // namespace cnnc
