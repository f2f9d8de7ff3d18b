// Halide definitions and schedules of every kernel, and ahead-of-time compilation.
//
// Layout: activations are NHWC float32, so a Halide buffer has dims (c, x, y, n), c innermost;
// vectors (after flatten) are (i, n). Parameters keep their Keras layout: conv2d kernel
// [kh, kw, cin, cout] is Halide (cout, cin, kw, kh), output channels contiguous, so the
// inner loop loads a vector of output-channel weights and broadcasts one input value.
// Every extent except the batch is a compile-time constant, and any value must work: register
// tiles are whole vectors of channels (channel_block) whose last tile overlaps the one before
// (ShiftInwards, pure stages), reductions are vectorized within a tile, and the optimizers guard
// their last vector (they update the parameter block in place).
#include <Halide.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <iostream>
#include <optional>
#include <cmath>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include <fmt/format.h>

#include "codegen/codegen.h"
#include "codegen/halide_common.h"
#include "codegen/jit_thread_pool.h"

namespace cnnc {

using namespace Halide;

std::string halide_version() {
  return CNNC_HALIDE_VERSION;  // from CMake: Halide 14 has no version macros
}

std::string training_build_stamp();

std::string codegen_build_stamp() {
  // Changes whenever a file defining kernels or schedules is recompiled, so that packages cached
  // by an older cnnc are never reused.
  return std::string(__DATE__ " " __TIME__) + " / " + training_build_stamp();
}

// ---------------------------------------------------------------------------------------------
// Targets

const std::vector<std::string>& known_target_names() {
  static const std::vector<std::string> names = {"host",         "x86-64-linux-avx2", "x86-64-linux-avx512",
                                                 "arm-64-linux", "x86-64-linux-cuda-cuda_capability_80",
                                                 "host-cuda"};
  return names;
}

// Halide 14 takes any CPU with AVX-512 BF16 and VNNI for a Sapphire Rapids, whose LLVM CPU
// also has AVX-VNNI (VEX-encoded dot products). AMD Zen 4 has the first two but not AVX-VNNI:
// kernels compiled for it died with SIGILL on `{vex} vpdpwssd`. Keep the feature only where
// CPUID reports AVX-VNNI (leaf 7, subleaf 1, EAX bit 4).
Target checked_host_target() {
  Target host = get_host_target();
#if defined(__x86_64__)
  if (host.has_feature(Target::AVX512_SapphireRapids)) {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    bool avx_vnni = __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 4));
    if (!avx_vnni) host = host.without_feature(Target::AVX512_SapphireRapids);
  }
#endif
  return host;
}

TargetInfo resolve_target(const std::string& name) {
  TargetInfo info;
  info.name = name;
  std::string host = checked_host_target().without_feature(Target::JIT).to_string();
  std::string halide;
  if (name == "host") halide = host;
  else if (name == "x86-64-linux-avx2") halide = "x86-64-linux-avx-avx2-f16c-fma-sse41";
  else if (name == "x86-64-linux-avx512") halide = "x86-64-linux-avx-avx2-f16c-fma-sse41-avx512-avx512_skylake";
  else if (name == "host-cuda") {
    // Target("host-cuda") asks the GPU driver for the compute capability; without one, use 8.0.
    Target probed("host-cuda");
    if (!probed.has_feature(Target::CUDACapability30) && !probed.has_feature(Target::CUDACapability32) &&
        !probed.has_feature(Target::CUDACapability35) && !probed.has_feature(Target::CUDACapability50) &&
        !probed.has_feature(Target::CUDACapability61) && !probed.has_feature(Target::CUDACapability70) &&
        !probed.has_feature(Target::CUDACapability75) && !probed.has_feature(Target::CUDACapability80) &&
        !probed.has_feature(Target::CUDACapability86))
      probed = probed.with_feature(Target::CUDACapability80);
    halide = probed.to_string();
  } else if (Target::validate_target_string(name)) {
    halide = name;
  } else {
    throw UserError(SourceLoc{"--target", 0, 0},
                    fmt::format("unknown target '{}'{}; expected one of: {} (or a Halide target string such as "
                                "x86-64-linux-sse41)",
                                name, did_you_mean(name, known_target_names()), fmt::join(known_target_names(), ", ")));
  }
  Target target(halide);
  if (target.os != Target::Linux)
    throw UserError(SourceLoc{"--target", 0, 0}, fmt::format("target '{}': only Linux targets are supported", name));
  if (target.arch == Target::X86 && target.bits == 64) info.arch = "x86-64";
  else if (target.arch == Target::ARM && target.bits == 64) info.arch = "arm-64";
  else
    throw UserError(SourceLoc{"--target", 0, 0},
                    fmt::format("target '{}': only 64-bit x86 and ARM are supported", name));
  info.gpu = target.has_gpu_feature();
  if (info.gpu && !target.has_feature(Target::CUDA))
    throw UserError(SourceLoc{"--target", 0, 0}, fmt::format("target '{}': the only GPU API supported is CUDA", name));
  info.halide = target.to_string();
  info.c_compiler = info.arch == "arm-64" ? "aarch64-linux-gnu-gcc" : "cc";
  Target here = checked_host_target();
  info.runs_here = info.arch == "x86-64" && here.arch == Target::X86 && !info.gpu;
  for (Target::Feature feature : {Target::AVX, Target::AVX2, Target::FMA, Target::F16C, Target::SSE41, Target::AVX512,
                                  Target::AVX512_Skylake})
    if (target.has_feature(feature) && !here.has_feature(feature)) info.runs_here = false;
  return info;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Kernel construction

class KernelBuilder {
 public:
  KernelBuilder(const Graph& graph, const KernelInfo& kernel, const Target& target, PipelineBuild& build)
      : graph_(graph), kernel_(kernel), node_(graph.nodes[kernel.node]), target_(target),
        sched_(schedule_params(target, kernel.knobs)), train_(kernel.kind == KernelKind::ForwardTrain), build_(build) {
    hand_ = build.hand;
  }

  void define_all() {
    for (size_t i = 0; i < kernel_.inputs.size(); ++i) {
      const Shape& shape = graph_.nodes[kernel_.inputs[i]].shape;
      inputs_.push_back(build_.buffer(Float(32), halide_extents(shape), true, fmt::format("input{}", i)));
    }
    for (const std::string& name : kernel_.params)
      for (const ParamSpec& spec : node_.params)
        if (spec.name == name) params_[name] = build_.buffer(Float(32), halide_extents(spec.shape), false, name);
    if (node_.op == "dropout") {
      build_.scalar(seed_, 1);
      build_.scalar(step_, 1);
    }
    Func output = define();
    build_.output(output, halide_extents(node_.shape), true);
    if (moving_mean_.defined()) {
      int channels = int(node_.shape.back());
      build_.output(moving_mean_, {channels}, false);
      build_.output(moving_variance_, {channels}, false);
      if (hand_) {
        for (Func f : {batch_mean_, batch_variance_}) f.compute_root().vectorize(f.args()[0], std::min(channels, sched_.vector));
      }
    }
    if (kernel_.has_saved && !tuple_saved_) {
      CNNC_ASSERT(saved_.defined(), "node " + node_.name + " should keep a tensor for backward");
      build_.output(saved_, halide_extents(saved_shape(node_)), true);
    }
    build_.schedule = hand_ ? kernel_schedule_ : "";
  }

 private:
  Func define() {
    const std::string& op = node_.op;
    if (op == "conv2d") return conv2d();
    if (op == "dense") return dense();
    if (op == "maxpool2d" || op == "avgpool2d") return standalone_pool();
    return elementwise(op);
  }

  const Shape& input_shape(size_t i = 0) const { return graph_.nodes[kernel_.inputs[i]].shape; }

  // conv2d + bias, then the fused activation and pooling.
  Func conv2d() {
    const Shape& in = input_shape();
    int height = int(in[0]), width = int(in[1]), in_channels = int(in[2]);
    int out_height = int(node_.unfused_shape[0]), out_width = int(node_.unfused_shape[1]);
    int out_channels = int(node_.unfused_shape[2]);
    auto [kh, kw] = node_.attrs.get_pair("kernel");
    auto [sh, sw] = node_.attrs.get_pair("stride");
    Var c("c"), x("x"), y("y"), n("n");

    Func source("source");
    if (node_.attrs.get_string("padding") == "same") {
      int top = same_padding_before(height, out_height, int(kh), int(sh));
      int left = same_padding_before(width, out_width, int(kw), int(sw));
      Func padded("padded");
      Expr inside = x >= 0 && x < width && y >= 0 && y < height;
      padded(c, x, y, n) = select(inside, inputs_[0](c, clamp(x, 0, width - 1), clamp(y, 0, height - 1), n), 0.0f);
      source(c, x, y, n) = padded(c, x - left, y - top, n);
    } else {
      source(c, x, y, n) = inputs_[0](c, x, y, n);
    }

    // The algorithm: acc(c, x, y, n) = bias(c) + sum over (ci, kx, ky) of w * in.
    RDom r(0, in_channels, 0, int(kw), 0, int(kh), "r");
    Func acc("acc");
    acc(c, x, y, n) = node_.attrs.get_bool("use_bias") ? params_.at("bias")(c) : Expr(0.0f);
    acc(c, x, y, n) += params_.at("kernel")(c, r.x, r.y, r.z) * source(r.x, x * int(sw) + r.y, y * int(sh) + r.z, n);

    Func value("value");
    value(c, x, y, n) = acc(c, x, y, n);
    const Node::FusedOp* pooling = nullptr;
    Func logits, softmax_max, softmax_exp, softmax_sum;  // a softmax over the channels
    for (const Node::FusedOp& fused : node_.fused) {
      if (fused.op == "maxpool2d" || fused.op == "avgpool2d") {
        pooling = &fused;
        continue;
      }
      if (fused.op == "softmax") {
        // Over the channels of each pixel (`activation: softmax`; nothing is fused after it):
        // the convolution goes to `logits` with its register tiles, then one pass per pixel.
        logits = Func("logits");
        logits(c, x, y, n) = value(c, x, y, n);
        RDom k(0, out_channels, "k");
        softmax_max = Func("softmax_max");
        softmax_exp = Func("softmax_exp");
        softmax_sum = Func("softmax_sum");
        softmax_max(x, y, n) = maximum(logits(k, x, y, n));
        softmax_exp(c, x, y, n) = exp(logits(c, x, y, n) - softmax_max(x, y, n));
        softmax_sum(x, y, n) = Halide::sum(softmax_exp(k, x, y, n));
        Func softmax("softmax");
        softmax(c, x, y, n) = softmax_exp(c, x, y, n) / softmax_sum(x, y, n);
        value = softmax;
        continue;
      }
      Func activated(fused.op);
      activated(c, x, y, n) = activate(fused.op, value(c, x, y, n));
      value = activated;
    }
    Func output("output");
    if (pooling) {
      int pooled_height = int(node_.shape[0]), pooled_width = int(node_.shape[1]);
      Func pool = pool2d(pooling->op, value, out_width, out_height, pooling->attrs, pooled_width, pooled_height);
      output(c, x, y, n) = pool(c, x, y, n);
    } else {
      output(c, x, y, n) = value(c, x, y, n);
    }

    bool index_only = pooling && train_ && saves_pool_index(node_);
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
      tuple_saved_ = true;
    } else if (pooling && train_) {
      // Training keeps the activation before pooling for backward: compute it whole, then pool it.
      saved_ = Func("saved");
      saved_(c, x, y, n) = value(c, x, y, n);
      Func pool = pool2d(pooling->op, saved_, out_width, out_height, pooling->attrs, int(node_.shape[1]),
                         int(node_.shape[0]));
      output = Func("output");
      output(c, x, y, n) = pool(c, x, y, n);
    }

    // The schedule.
    if (!hand_) return output;
    if (sched_.gpu) {
      // One thread per output value; its accumulator (and for pooling its whole window) lives
      // in registers.
      Var co("co"), xo("xo"), ci("ci"), xi("xi"), yn("yn");
      if (pooling && train_ && !index_only) {
        saved_.gpu_tile(c, x, co, xo, ci, xi, std::min(32, out_channels), std::min(8, out_width), TailStrategy::GuardWithIf)
            .fuse(y, n, yn)
            .gpu_blocks(yn);
        acc.compute_at(saved_, ci);
        Var pyn("pyn");
        output.gpu_tile(c, x, co, xo, ci, xi, std::min(32, out_channels), std::min(8, int(node_.shape[1])),
                        TailStrategy::GuardWithIf)
            .fuse(y, n, pyn)
            .gpu_blocks(pyn);
        kernel_schedule_ = "gpu training: one thread per activation, then one per pooled value";
        return output;
      }
      if (logits.defined()) {
        logits.compute_root().gpu_tile(c, x, co, xo, ci, xi, std::min(32, out_channels), std::min(8, out_width),
                                       TailStrategy::GuardWithIf).fuse(y, n, yn).gpu_blocks(yn);
        acc.compute_at(logits, ci);
        Var pyn("pyn");
        output.gpu_tile(x, y, xo, yn, xi, pyn, std::min(8, out_width), 1, TailStrategy::GuardWithIf);
        kernel_schedule_ = "gpu: threads over 32 channels x 8 pixels, then a softmax thread per pixel";
        return output;
      }
      output.gpu_tile(c, x, co, xo, ci, xi, std::min(32, out_channels), std::min(8, int(node_.shape[1])),
                      TailStrategy::GuardWithIf)
          .fuse(y, n, yn)
          .gpu_blocks(yn);
      acc.compute_at(output, ci);
      kernel_schedule_ = "gpu: threads over 32 channels x 8 pixels, accumulator per thread";
      return output;
    }
    int block = channel_block(out_channels), vec = std::min(sched_.vector, block);
    Var co("co"), ci("ci"), xo("xo"), xi("xi"), yn("yn");
    int vectors = (block + sched_.vector - 1) / sched_.vector;
    // Parallel grain: rows x images where a row is enough work for a task (conv2: ~150 kFLOP),
    // whole images where rows are small (conv1: 15 kFLOP rows ran 2-6x slower as tasks).
    int64_t row_flops = int64_t(out_width) * out_channels * kh * kw * in_channels * 2;
    auto parallelize = [&](Func f, int64_t flops) {
      if (flops >= 100000) f.fuse(y, n, yn).parallel(yn);
      else f.parallel(n);
    };
    // With few input channels (conv1: one), the kernel slice of a channel block is a handful of
    // vectors: a tile small enough to keep it in registers beside the accumulators saves
    // reloading it for every pixel (conv1: ~1.8x faster than the widest tile, 18 + 2 x 6 + 1
    // registers on AVX-512). Unless a tuned pixel_tile says otherwise.
    int preferred_tile = sched_.pixel_tile;
    int weight_vectors = in_channels * int(kh * kw) * vectors;
    if (!sched_.pixel_tile_tuned && weight_vectors + 2 * vectors + 1 <= sched_.registers)
      preferred_tile = std::min(preferred_tile, (sched_.registers - weight_vectors - 1) / vectors);
    // Output tile of `block` channels x `tile` pixels; the accumulator for it stays in registers
    // through the whole reduction (input channels innermost, then kernel taps).
    auto register_tiles = [&](Func f) {
      int tile = pick_tile(out_width, preferred_tile, vectors, sched_.registers);
      f.split(c, co, ci, block).split(x, xo, xi, tile).reorder(ci, xi, co, xo, y, n).vectorize(ci, vec).unroll(ci).unroll(xi);
      parallelize(f, row_flops);
      acc.compute_at(f, co).vectorize(c, vec).unroll(c).unroll(x);
      acc.update().reorder(c, x, r.x, r.y, r.z, y, n).vectorize(c, vec).unroll(c).unroll(x);
      return tile;
    };
    if (pooling && train_ && !index_only) {
      // Register tiles as without pooling for the kept activation, then the pooling.
      int tile = register_tiles(saved_);
      output.vectorize(c, vec).parallel(n);
      kernel_schedule_ = fmt::format("cpu training: register tile {} channels x {} pixels, then pooling", block, tile);
      return output;
    }
    if (logits.defined()) {
      // The convolution with its register tiles into `logits`, then the softmax pixel by pixel.
      logits.compute_root();
      int tile = register_tiles(logits);
      output.vectorize(c, vec).parallel(n);
      for (Func f : {softmax_max, softmax_exp, softmax_sum}) f.compute_at(output, x);
      softmax_exp.vectorize(c, vec);
      kernel_schedule_ = fmt::format("cpu: register tile {} channels x {} pixels, then the softmax per pixel", block, tile);
      return output;
    }
    if (!pooling) {
      int tile = register_tiles(output);
      kernel_schedule_ = fmt::format("cpu: register tile {} channels x {} pixels, parallel over rows x batch", block, tile);
      return output;
    }
    // Fused pooling: per pooled row and channel block, compute the conv rows it needs (all
    // columns) into a small buffer, tile by tile with the same register tile, then pool them.
    auto [ph, pw] = pooling->attrs.get_pair("size");
    int64_t pool_stride_x = pooling->attrs.get_pair("stride").second;
    int needed_width = std::min(out_width, int((node_.shape[1] - 1) * pool_stride_x + pw));
    int tile = pick_tile(needed_width, preferred_tile, vectors, sched_.registers);
    output.split(c, co, ci, block).reorder(ci, x, co, y, n).vectorize(ci, vec).unroll(ci);
    parallelize(output, row_flops * ph);
    value.compute_at(output, co)
        .split(x, xo, xi, tile, TailStrategy::ShiftInwards)
        .reorder(c, xi, xo, y)
        .vectorize(c, vec)
        .unroll(c)
        .unroll(xi);
    acc.compute_at(value, xo).vectorize(c, vec).unroll(c).unroll(x);
    acc.update().reorder(c, x, r.x, r.y, r.z, y, n).vectorize(c, vec).unroll(c).unroll(x);
    kernel_schedule_ = fmt::format("cpu: fused pooling; register tile {} channels x {} pixels per pooled row", block, tile);
    return output;
  }

  // dense + bias, then the fused activation (softmax included).
  Func dense() {
    int inputs = int(input_shape()[0]), units = int(node_.shape[0]);
    Var u("u"), n("n");
    RDom r(0, inputs, "r");
    Func acc("acc");
    acc(u, n) = node_.attrs.get_bool("use_bias") ? params_.at("bias")(u) : Expr(0.0f);
    acc(u, n) += params_.at("kernel")(u, r) * inputs_[0](r, n);

    Func value("value");
    value(u, n) = acc(u, n);
    bool softmax = false;
    for (const Node::FusedOp& fused : node_.fused) {
      if (fused.op == "softmax") {
        softmax = true;
        continue;
      }
      Func activated(fused.op);
      activated(u, n) = activate(fused.op, value(u, n));
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
      exps(u, n) = exp(logits(u, n) - maximum_(n));
      sum_(n) = Halide::sum(exps(k, n));
      output(u, n) = exps(u, n) / sum_(n);
    } else {
      output(u, n) = value(u, n);
    }
    Func tiled = softmax ? logits : output;  // the Func that carries the matrix product's schedule
    if (softmax && train_) saved_ = logits;  // the loss starts from the logits
    if (!hand_) return output;

    if (sched_.gpu) {
      Var uo("uo"), no("no"), ui("ui"), ni("ni");
      tiled.gpu_tile(u, n, uo, no, ui, ni, std::min(64, units), 1, TailStrategy::GuardWithIf);
      acc.compute_at(tiled, ui);
      if (softmax) {
        if (!train_) logits.compute_root();
        output.gpu_tile(u, n, uo, no, ui, ni, std::min(64, units), 1, TailStrategy::GuardWithIf);
        maximum_.compute_at(output, ui);
        sum_.compute_at(output, ui);
      }
      kernel_schedule_ = "gpu: one thread per output";
      return output;
    }
    // Register tile: `block` units x `rows` examples (8 or the tuned pixel_tile, fewer where the
    // registers run out);
    // weights for a block of units are a contiguous vector, each input value is broadcast. Small
    // batches use one row per task.
    int block = channel_block(units), vec = std::min(sched_.vector, block);
    int vectors = (block + vec - 1) / vec;
    int rows = std::max(1, std::min(sched_.pixel_tile_tuned ? sched_.pixel_tile : 8, (sched_.registers - vectors - 1) / vectors));
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
      if (!train_) logits.compute_root();
      output.parallel(n);
      maximum_.compute_at(output, n);
      sum_.compute_at(output, n);
      exps.compute_at(output, n);
    }
    kernel_schedule_ = fmt::format("cpu: register tile {} units x {} examples", block, softmax ? 1 : rows);
    return output;
  }

  Func standalone_pool() {
    const Shape& in = input_shape();
    Var c("c"), x("x"), y("y"), n("n");
    Func source("source");
    source(c, x, y, n) = inputs_[0](c, x, y, n);
    Func pool = pool2d(node_.op, source, int(in[1]), int(in[0]), node_.attrs, int(node_.shape[1]), int(node_.shape[0]));
    Func output("output");
    output(c, x, y, n) = pool(c, x, y, n);
    if (hand_) schedule_elementwise(output, {c, x, y, n});
    return output;
  }

  // Element-wise and whole-tensor ops over any rank: activations, softmax, add, concat,
  // batchnorm, plus their fused activation.
  Func elementwise(const std::string& op) {
    size_t rank = node_.shape.size();
    std::vector<Var> vars = make_vars(rank + 1);
    std::vector<Expr> at = as_exprs(vars);
    Func value("value"), output("output");
    std::vector<Func> inner;  // Funcs that need a compute_at
    if (op == "relu" || op == "sigmoid" || op == "tanh") {
      value(at) = activate(op, inputs_[0](at));
    } else if (op == "add") {
      Expr sum = inputs_[0](at);
      for (size_t i = 1; i < inputs_.size(); ++i) sum = sum + inputs_[i](at);
      value(at) = sum;
    } else if (op == "concat") {
      int64_t axis = node_.attrs.get_int("axis");
      int index = int(axis < 0 ? int64_t(rank) + axis : axis - 1);  // in the Keras shape
      int dim = int(rank) - 1 - index;                                // in Halide dims
      // Input i covers [offset_i, offset_i + extent_i) along `dim`; later inputs override.
      Expr result;
      int offset = 0;
      for (size_t i = 0; i < inputs_.size(); ++i) {
        int extent = int(input_shape(i)[index]);
        std::vector<Expr> shifted = at;
        shifted[dim] = clamp(at[dim] - offset, 0, extent - 1);
        Expr value_i = inputs_[i](shifted);
        result = result.defined() ? select(at[dim] >= offset, value_i, result) : value_i;
        offset += extent;
      }
      value(at) = result;
    } else if (op == "batchnorm" && train_) {
      // Training form (Keras): normalize with this batch's mean and (biased) variance per
      // channel, and move the moving statistics towards them (new values as extra outputs).
      float epsilon = float(node_.attrs.get_float("epsilon"));
      float momentum = float(node_.attrs.get_float("momentum"));
      std::tie(batch_mean_, batch_variance_) = batch_statistics(inputs_[0], input_shape(), vars[0]);
      Expr channel = vars[0];
      Expr scale = params_.at("gamma")(channel) / sqrt(batch_variance_(channel) + epsilon);
      value(at) = (inputs_[0](at) - batch_mean_(channel)) * scale + params_.at("beta")(channel);
      Var c("c");
      moving_mean_(c) = momentum * params_.at("moving_mean")(c) + (1.0f - momentum) * batch_mean_(c);
      moving_variance_(c) = momentum * params_.at("moving_variance")(c) + (1.0f - momentum) * batch_variance_(c);
    } else if (op == "batchnorm") {
      // Inference form: (x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta.
      float epsilon = float(node_.attrs.get_float("epsilon"));
      Expr channel = vars[0];
      Expr scale = params_.at("gamma")(channel) / sqrt(params_.at("moving_variance")(channel) + epsilon);
      value(at) = (inputs_[0](at) - params_.at("moving_mean")(channel)) * scale + params_.at("beta")(channel);
    } else if (op == "dropout") {
      // Training only (at inference dropout is a view): zero a fraction `rate`, scale the rest.
      double rate = node_.attrs.get_float("rate");
      Expr keep = dropout_keep(at, node_.shape, seed_, step_, rate);
      value(at) = select(keep, inputs_[0](at) * float(1.0 / (1.0 - rate)), 0.0f);
    } else if (op == "softmax") {
      // Over the last Keras axis, Halide dim 0.
      int extent = int(node_.shape.back());
      RDom k(0, extent, "k");
      std::vector<Var> rest(vars.begin() + 1, vars.end());
      std::vector<Expr> reduced = at;
      reduced[0] = k;
      Func maximum_("max"), exps("exp"), sum_("sum");
      maximum_(as_exprs(rest)) = maximum(inputs_[0](reduced));
      exps(at) = exp(inputs_[0](at) - maximum_(as_exprs(rest)));
      sum_(as_exprs(rest)) = Halide::sum(exps(reduced));
      value(at) = exps(at) / sum_(as_exprs(rest));
      inner = {maximum_, sum_, exps};
    } else {
      CNNC_ASSERT(false, "no kernel for op " + op);
    }
    for (const Node::FusedOp& fused : node_.fused) {
      Func activated(fused.op);
      activated(at) = activate(fused.op, value(at));
      value = activated;
    }
    output(at) = value(at);
    if (!hand_) return output;
    schedule_elementwise(output, vars);
    for (Func& func : inner) {
      if (sched_.gpu) func.compute_at(output, gpu_thread_);
      else func.compute_at(output, vars[1]);
    }
    return output;
  }

  // Memory-bound kernels: vectorize the innermost dim, parallelize the outer ones.
  void schedule_elementwise(Func output, const std::vector<Var>& vars) {
    int inner = int(node_.shape.back());
    if (sched_.gpu) {
      Var outer_block("outer_block");
      Var block("block"), thread("thread");
      output.gpu_tile(vars[0], block, thread, std::min(64, inner), TailStrategy::GuardWithIf);
      gpu_thread_ = thread;
      if (vars.size() >= 2) {
        Var fused = vars.back();
        if (vars.size() >= 3) {
          Var both("outer");
          output.fuse(vars[vars.size() - 2], vars.back(), both);
          fused = both;
        }
        output.gpu_blocks(fused);
      }
      kernel_schedule_ = "gpu: threads over the innermost dim";
      return;
    }
    if (inner >= sched_.vector) output.vectorize(vars[0], sched_.vector);
    if (vars.size() >= 3) {
      Var both("outer");
      output.fuse(vars[vars.size() - 2], vars.back(), both).parallel(both);
    } else {
      output.parallel(vars.back());
    }
    kernel_schedule_ = fmt::format("cpu: vectorized by {}, parallel over the outer dims", sched_.vector);
  }

  // Output channels per register tile (halide_common.h): whole vectors only.
  int channel_block(int channels) const { return cnnc::channel_block(sched_, channels, sched_.channel_vectors); }

  std::string kernel_schedule_;
  const Graph& graph_;
  const KernelInfo& kernel_;
  const Node& node_;
  Target target_;
  ScheduleParams sched_;
  bool train_ = false;
  bool tuple_saved_ = false;  // the output is a Tuple whose second value is the kept tensor
  Func batch_mean_, batch_variance_;  // batchnorm, training
  Func moving_mean_{"moving_mean_out"}, moving_variance_{"moving_variance_out"};
  PipelineBuild& build_;
  bool hand_ = true;
  Func saved_;
  Param<int32_t> seed_{"seed"}, step_{"step"};
  std::vector<ImageParam> inputs_;
  std::map<std::string, ImageParam> params_;
  Var gpu_thread_{"thread"};
};

}  // namespace

// The search space of every kernel kind, beside the schedules that read the knobs:
//   conv2d and dense, forward, training forward and backward:
//     channel_vectors x pixel_tile  the register tile: vectors of output channels (units) by output
//                                   pixels (batch rows; input channels for weight gradients),
//                                   6 to 28 accumulators: enough to hide the FMA latency, few
//                                   enough to stay in the vector registers
//   conv2d backward, additionally:
//     batch_chunks                  2 or 8 fixed batch chunks reduced in parallel (default 4)
//   every kernel (added by cnnc tune): autoscheduler = Mullapudi2016 | Li2018 | Adams2019
// Element-wise kernels, the loss and the optimizers are memory-bound: their only candidates
// are the default and the autoschedulers. GPU targets are not tuned here (no GPU to time on).
std::vector<ScheduleKnobs> schedule_space(const Graph& graph, const KernelInfo& kernel, const TargetInfo& target) {
  std::vector<ScheduleKnobs> space = {ScheduleKnobs{}};  // the default first
  if (target.gpu) return space;
  const Node& node = graph.nodes[kernel.node];
  bool tiled = (node.op == "conv2d" || node.op == "dense") &&
               (kernel.kind == KernelKind::Forward || kernel.kind == KernelKind::ForwardTrain ||
                kernel.kind == KernelKind::Backward);
  if (!tiled) return space;
  // Register tiles: vectors of output channels x pixels (forward), or x input channels (weight
  // gradients); enough accumulators to hide the FMA latency, few enough to stay in registers.
  for (int vectors : {1, 2, 3, 4})
    for (int pixels : {2, 3, 4, 6, 8, 12, 16}) {
      int accumulators = vectors * pixels;
      if (accumulators < 6 || accumulators > 28) continue;
      ScheduleKnobs knobs;
      knobs.channel_vectors = vectors;
      knobs.pixel_tile = pixels;
      space.push_back(knobs);
    }
  if (kernel.kind == KernelKind::Backward && node.op == "conv2d") {
    std::vector<ScheduleKnobs> chunked;
    for (const ScheduleKnobs& base : std::vector<ScheduleKnobs>(space.begin() + 1, space.end()))
      for (int chunks : {2, 8}) {
        ScheduleKnobs knobs = base;
        knobs.batch_chunks = chunks;
        chunked.push_back(knobs);
      }
    space.insert(space.end(), chunked.begin(), chunked.end());
  }
  return space;
}

void define_forward_kernel(const Graph& graph, const KernelInfo& kernel, const Target& target, PipelineBuild& build) {
  KernelBuilder builder(graph, kernel, target, build);
  builder.define_all();
}

namespace {

// Halide 14 loads autoscheduler plugins by absolute path only.
void load_autoscheduler(const std::string& name) {
  static std::set<std::string> loaded;
  if (loaded.count(name)) return;
  std::string lower = name;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  std::string path = std::string(CNNC_HALIDE_PLUGIN_DIR) + "/libautoschedule_" + lower + ".so";
  load_plugin(path);
  loaded.insert(name);
}

// While alive, the process's stdout and stderr go to /dev/null: Halide's autoschedulers print
// their search (and lowering prints warnings about their schedules) straight to them, which
// would bury `cnnc tune`'s progress. Errors still arrive as exceptions. CNNC_AUTOSCHEDULER_LOG=1
// keeps it all (to debug an autoscheduler).
class QuietOutput {
 public:
  QuietOutput() {
    if (const char* keep = std::getenv("CNNC_AUTOSCHEDULER_LOG"); keep && *keep && std::string(keep) != "0") return;
    std::fflush(stdout);
    std::fflush(stderr);
    std::cout.flush();
    std::cerr.flush();
    int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null < 0) return;
    saved_out_ = ::dup(1);
    saved_err_ = ::dup(2);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::close(null);
  }
  ~QuietOutput() {
    std::fflush(stdout);
    std::fflush(stderr);
    std::cout.flush();
    std::cerr.flush();
    if (saved_out_ >= 0) ::dup2(saved_out_, 1), ::close(saved_out_);
    if (saved_err_ >= 0) ::dup2(saved_err_, 2), ::close(saved_err_);
  }
  QuietOutput(const QuietOutput&) = delete;
  QuietOutput& operator=(const QuietOutput&) = delete;

 private:
  int saved_out_ = -1, saved_err_ = -1;
};

// Defines `kernel` and schedules it by hand or with its autoscheduler.
std::pair<Pipeline, PipelineBuild> make_pipeline(const Graph& graph, const KernelInfo& kernel, const Target& target,
                                                 int batch_estimate) {
  PipelineBuild build;
  build.hand = kernel.knobs.autoscheduler.empty();
  if (kernel.kind == KernelKind::Forward || kernel.kind == KernelKind::ForwardTrain)
    define_forward_kernel(graph, kernel, target, build);
  else
    define_training_kernel(graph, kernel, target, build);
  Pipeline pipeline(build.outputs);
  if (!build.hand) {
    // Autoschedulers need estimates of every input and output extent. The batch is estimated
    // at 1 whatever batch the kernel is timed at: a package serves any batch, and Halide 14's
    // autoschedulers split the batch by factors of their estimate, so that a smaller batch
    // fails its bounds checks or (Li2018) writes out of bounds and corrupts the heap.
    batch_estimate = 1;
    for (PipelineBuild::Arg& arg : build.args) {
      if (arg.kind == 1) arg.real.set_estimate(arg.value);
      if (arg.kind == 2) arg.integer.set_estimate(int(arg.value));
      if (arg.kind != 0) continue;
      Region region;
      for (int extent : arg.extents) region.emplace_back(0, extent);
      if (arg.batched) region.emplace_back(0, batch_estimate);
      arg.image.set_estimates(region);
    }
    for (size_t i = 0; i < build.outputs.size(); ++i) {
      Region region;
      for (int extent : build.output_extents[i]) region.emplace_back(0, extent);
      if (build.output_batched[i]) region.emplace_back(0, batch_estimate);
      build.outputs[i].set_estimates(region);
    }
    load_autoscheduler(kernel.knobs.autoscheduler);
    // Machine: this many cores, a 32 MiB last-level cache, memory 40x slower than arithmetic.
    MachineParams machine(int(std::thread::hardware_concurrency()), 32 << 20, 40);
    pipeline.auto_schedule(kernel.knobs.autoscheduler, target, machine);
    build.schedule = "autoscheduler " + kernel.knobs.autoscheduler;
  }
  return {pipeline, build};
}

}  // namespace

void compile_kernels(const Graph& graph, std::vector<KernelInfo>& kernels, const TargetInfo& target_info,
                     const std::string& kernels_object, const std::string& runtime_object) {
  Target target = Target(target_info.halide).with_feature(Target::NoRuntime);
  std::vector<Module> modules;
  try {
    for (KernelInfo& kernel : kernels) {
      if (kernel.reuses_inference_kernel) continue;
      std::optional<QuietOutput> quiet;  // (an error still surfaces, after the output is back)
      if (!kernel.knobs.autoscheduler.empty()) quiet.emplace();
      auto [pipeline, build] = make_pipeline(graph, kernel, target, 32);
      modules.push_back(pipeline.compile_to_module(build.arguments(), kernel.function, target));
      kernel.schedule = build.schedule;
    }
    link_modules("cnnc_kernels", modules).compile({{OutputFileType::object, kernels_object}});
    compile_standalone_runtime(runtime_object, Target(target_info.halide));
  } catch (const Halide::CompileError& error) {
    internal_error(__FILE__, __LINE__, "Halide compile", error.what());
  } catch (const Halide::InternalError& error) {
    internal_error(__FILE__, __LINE__, "Halide compile", error.what());
  }
}

namespace {

// An output buffer with a guard zone on each side, filled with a canary pattern that a kernel
// writing only inside its output never changes.
class GuardedOutput {
 public:
  GuardedOutput(Type type, const std::vector<int>& extents, int batched_dims) {
    size_t elements = 1, per_example = 1;
    for (size_t d = 0; d < extents.size(); ++d) {
      elements *= size_t(extents[d]);
      if (int(d) < int(extents.size()) - batched_dims) per_example *= size_t(extents[d]);
    }
    // At least one example's worth: a schedule that splits the batch overshoots by examples.
    guard_bytes_ = std::max<size_t>(16384, per_example * type.bytes());
    guard_bytes_ = (guard_bytes_ + 63) / 64 * 64;
    data_bytes_ = elements * type.bytes();
    storage_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, (2 * guard_bytes_ + data_bytes_ + 63) / 64 * 64)));
    if (!storage_) throw std::bad_alloc();
    fill(0, guard_bytes_);
    fill(guard_bytes_ + data_bytes_, guard_bytes_);
    buffer_ = Buffer<>(type, storage_.get() + guard_bytes_, extents);
  }
  Buffer<>& buffer() { return buffer_; }
  // "" if both guard zones are intact, else where the kernel wrote.
  std::string check() const {
    if (!intact(0, guard_bytes_)) return "before";
    if (!intact(guard_bytes_ + data_bytes_, guard_bytes_)) return "past the end of";
    return "";
  }
  // Test-only (InjectedFault::OutOfBounds): what a schedule overshooting its output by one value does.
  void write_past_end() { storage_.get()[guard_bytes_ + data_bytes_] ^= 0xff; }

 private:
  static uint8_t canary(size_t i) { return uint8_t(0x5a ^ (i * 167) ^ (i >> 8)); }
  void fill(size_t start, size_t size) {
    for (size_t i = start; i < start + size; ++i) storage_.get()[i] = canary(i);
  }
  bool intact(size_t start, size_t size) const {
    for (size_t i = start; i < start + size; ++i)
      if (storage_.get()[i] != canary(i)) return false;
    return true;
  }
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> storage_;
  size_t guard_bytes_ = 0, data_bytes_ = 0;
  Buffer<> buffer_;
};

[[noreturn]] void commit_fault(InjectedFault fault) {
  std::fflush(nullptr);
  if (fault == InjectedFault::Abort) std::abort();
  if (fault == InjectedFault::Segv) {
    void* page = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *static_cast<volatile int*>(page) = 1;  // SIGSEGV: the page may not be touched
  }
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));  // Hang (and Segv, should it survive)
}

}  // namespace

KernelTiming time_kernel(const Graph& graph, const KernelInfo& kernel, const TargetInfo& target_info, int batch,
                         int repetitions, const std::vector<int>& check_batches, InjectedFault fault) {
  KernelTiming timing;
  std::optional<QuietOutput> quiet;
  if (!kernel.knobs.autoscheduler.empty()) quiet.emplace();
  int running_batch = batch;
  try {
    Target target(target_info.halide);
    auto [pipeline, build] = make_pipeline(graph, kernel, target, batch);
    pipeline.compile_jit(target);
    std::mt19937 random(7);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::vector<Buffer<>> keep;  // the argument buffers must outlive the runs
    // Seeded random arguments and fresh outputs for `examples` examples.
    auto prepare = [&](int examples) {
      keep.clear();
      for (PipelineBuild::Arg& arg : build.args) {
        if (arg.kind == 1) {
          arg.real.set(arg.value);
          continue;
        }
        if (arg.kind == 2) {
          arg.integer.set(int(arg.value));
          continue;
        }
        std::vector<int> extents = arg.extents;
        if (arg.batched) extents.push_back(examples);
        if (arg.int_limit > 0) {
          Buffer<int32_t> labels(extents);
          // (Dense buffers, filled in memory order. Halide 14's for_each_value steps its pointers
          // out of range and back, which UBSan reports.)
          for (size_t k = 0; k < labels.number_of_elements(); ++k) labels.data()[k] = int32_t(random() % uint32_t(arg.int_limit));
          arg.image.set(labels);
          keep.push_back(labels);
        } else {
          Buffer<float> values(extents);
          for (size_t k = 0; k < values.number_of_elements(); ++k)
            values.data()[k] = arg.non_negative ? std::fabs(uniform(random)) : uniform(random);
          arg.image.set(values);
          keep.push_back(values);
        }
      }
      std::vector<std::unique_ptr<GuardedOutput>> outputs;
      for (size_t i = 0; i < build.output_extents.size(); ++i) {
        std::vector<int> extents = build.output_extents[i];
        if (build.output_batched[i]) extents.push_back(examples);
        outputs.push_back(std::make_unique<GuardedOutput>(build.output_types[i], extents, build.output_batched[i] ? 1 : 0));
      }
      return outputs;
    };
    auto realization_of = [](std::vector<std::unique_ptr<GuardedOutput>>& outputs) {
      std::vector<Buffer<>> buffers;
      for (auto& output : outputs) buffers.push_back(output->buffer());
      return Realization(buffers);
    };
    // "" if every output's guard zones are intact.
    auto check_guards = [&](const std::vector<std::unique_ptr<GuardedOutput>>& outputs) {
      for (size_t i = 0; i < outputs.size(); ++i)
        if (std::string where = outputs[i]->check(); !where.empty())
          return fmt::format("wrote outside its output: {} output {}{}", where, i,
                             running_batch == batch ? "" : fmt::format(" at batch {}", running_batch));
      return std::string();
    };
    auto collect = [&](std::vector<std::unique_ptr<GuardedOutput>>& outputs) {
      for (auto& output : outputs) {
        std::vector<float> values;
        if (output->buffer().type().is_float()) {
          Buffer<float> typed = output->buffer();  // dense: its values in memory order
          values.assign(typed.data(), typed.data() + typed.number_of_elements());
        }
        timing.outputs.push_back(values);
      }
    };
    // Timed as a package runs it: parallel loops on a spinning pool like the plan's, denormals
    // flushed to zero.
    pipeline.jit_handlers().custom_do_par_for = [](JITUserContext* context, int (*task)(JITUserContext*, int, uint8_t*),
                                                   int min, int extent, uint8_t* closure) {
      struct Job {
        int (*task)(JITUserContext*, int, uint8_t*);
        JITUserContext* context;
        uint8_t* closure;
      } job{task, context, closure};
      auto run = [](void*, int i, uint8_t* data) {
        Job* job = reinterpret_cast<Job*>(data);
        return job->task(job->context, i, job->closure);
      };
      return cnnc_jit_par_for(nullptr, run, min, extent, reinterpret_cast<uint8_t*>(&job));
    };
    struct FlushDenormals {
      unsigned previous = cnnc_jit_flush_denormals();
      ~FlushDenormals() { cnnc_jit_restore_fp(previous); }
    } flush;
    std::vector<std::unique_ptr<GuardedOutput>> outputs = prepare(batch);
    Realization realization = realization_of(outputs);
    pipeline.realize(realization, target);  // warm-up
    if (fault == InjectedFault::OutOfBounds) outputs.front()->write_past_end();
    else if (fault != InjectedFault::None) commit_fault(fault);
    if (timing.error = check_guards(outputs); !timing.error.empty()) return timing;
    timing.seconds = 1e30;
    for (int r = 0; r < repetitions; ++r) {
      auto start = std::chrono::steady_clock::now();
      pipeline.realize(realization, target);
      timing.seconds = std::min(timing.seconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    if (timing.error = check_guards(outputs); !timing.error.empty()) return timing;
    collect(outputs);
    // A package runs any batch size: a schedule that only works for some (an autoscheduler's
    // split of the batch, estimated at `batch`, that needs at least its factor) is no candidate.
    for (int examples : check_batches) {
      if (examples == batch) continue;
      running_batch = examples;
      std::vector<std::unique_ptr<GuardedOutput>> checked = prepare(examples);
      Realization check = realization_of(checked);
      pipeline.realize(check, target);
      if (timing.error = check_guards(checked); !timing.error.empty()) return timing;
      collect(checked);
    }
    timing.ok = true;
  } catch (const Halide::Error& error) {
    timing.error = running_batch == batch ? error.what() : fmt::format("at batch {}: {}", running_batch, error.what());
  }
  return timing;
}

}  // namespace cnnc
