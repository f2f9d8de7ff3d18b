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
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <iostream>
#include <optional>
#include <cmath>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include <fmt/format.h>

#include "codegen/codegen.h"
#include "codegen/fast_math.h"
#include "codegen/halide_op.h"
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

// ---------------------------------------------------------------------------------------------
// The ops' Halide halves

namespace {

struct HalideRegistry {
  std::map<std::string, HalideOp> ops;
  std::mutex mutex;
};

HalideRegistry& halide_registry() {
  static HalideRegistry* instance = new HalideRegistry;  // never destroyed: lookups may come at exit
  return *instance;
}

void register_builtin_halide_ops() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_conv2d_halide();
    register_dense_halide();
    register_pooling_halide();
    register_activation_halide();
    register_merge_halide();
    register_batchnorm_halide();
    register_dropout_halide();
    register_spatial_halide();
    register_depthwise_halide();
  });
}

// The Halide half registered under `name` (the built-in ones registered first), or nullptr.
const HalideOp* find_halide_op(const std::string& name) {
  register_builtin_halide_ops();
  HalideRegistry& registry = halide_registry();
  std::lock_guard<std::mutex> lock(registry.mutex);
  auto it = registry.ops.find(name);
  return it == registry.ops.end() ? nullptr : &it->second;
}

}  // namespace

void register_halide_op(const std::string& name, HalideOp op) {
  HalideRegistry& registry = halide_registry();
  std::lock_guard<std::mutex> lock(registry.mutex);
  if (!registry.ops.emplace(name, std::move(op)).second)
    throw std::logic_error("op '" + name + "' already has a Halide definition");
}

const HalideOp& halide_op(const OpDef& def) {
  const HalideOp* op = find_halide_op(def.name);
  CNNC_ASSERT(op, "op '" + def.name + "' has no Halide definition (see check_op_registry)");
  return *op;
}

std::vector<std::string> op_registry_problems() {
  std::vector<std::string> problems;
  for (const OpDef* def : all_ops()) {
    const HalideOp* op = find_halide_op(def->name);
    auto lacks = [&](const char* what) { problems.push_back(fmt::format("op '{}' has no {}", def->name, what)); };
    if (def->traits.view) {
      if (op && (op->forward || op->backward))
        problems.push_back(fmt::format("op '{}' is a view (no kernel) but has a Halide forward or backward", def->name));
      continue;
    }
    if (!op) {
      lacks("Halide definition (register_halide_op)");
      continue;
    }
    if (!op->forward) lacks("Halide forward");
    if (!op->backward) lacks("Halide backward");
    if (def->traits.activation && (!op->activate || !op->derivative)) lacks("activation function and derivative");
  }
  HalideRegistry& registry = halide_registry();
  std::lock_guard<std::mutex> lock(registry.mutex);
  for (const auto& [name, op] : registry.ops)
    if (!find_op(name)) problems.push_back(fmt::format("a Halide definition is registered for '{}', which is no op", name));
  return problems;
}

std::string op_build_stamps(const Graph& graph) {
  std::set<const OpDef*> used;
  for (const Node& node : graph.nodes) {
    if (node.def) used.insert(node.def);
    for (const Node::FusedOp& fused : node.fused) used.insert(fused.def);
  }
  std::string stamps;
  for (const OpDef* def : all_ops())
    if (used.count(def) && !def->traits.view) stamps += def->name + "@" + halide_op(*def).stamp + ";";
  return stamps;
}

void check_op_registry() {
  std::vector<std::string> problems = op_registry_problems();
  CNNC_ASSERT(problems.empty(), fmt::format("the op registry is incomplete: {}", fmt::join(problems, "; ")));
}

// ---------------------------------------------------------------------------------------------
// Forward kernels: what every op shares

KernelContext::KernelContext(const Graph& graph_, const KernelInfo& kernel_, const Target& target_,
                             PipelineBuild& build_)
    : graph(graph_), kernel(kernel_), node(graph_.nodes[kernel_.node]), target(target_),
      sched(schedule_params(target_, kernel_.knobs)), hand(build_.hand), build(build_) {}

void ForwardContext::schedule_elementwise(Func output, const std::vector<Var>& vars) {
  int inner = int(node.shape.back());
  if (sched.gpu) {
    Var block("block"), thread("thread");
    output.gpu_tile(vars[0], block, thread, std::min(64, inner), TailStrategy::GuardWithIf);
    gpu_thread = thread;
    if (vars.size() >= 2) {
      Var fused = vars.back();
      if (vars.size() >= 3) {
        Var both("outer");
        output.fuse(vars[vars.size() - 2], vars.back(), both);
        fused = both;
      }
      output.gpu_blocks(fused);
    }
    schedule = "gpu: threads over the innermost dim";
    return;
  }
  if (inner >= sched.vector) output.vectorize(vars[0], sched.vector);
  if (vars.size() >= 3) {
    Var both("outer");
    output.fuse(vars[vars.size() - 2], vars.back(), both).parallel(both);
  } else {
    output.parallel(vars.back());
  }
  schedule = fmt::format("cpu: vectorized by {}, parallel over the outer dims", sched.vector);
}

namespace {

// `value` with the fused activations `ops` applied in their order (a Func over the same args).
Func with_activations(Func value, const std::vector<Node::FusedOp>& ops) {
  std::vector<Expr> at = as_exprs(value.args());
  for (const Node::FusedOp& fused : ops) {
    Func activated(fused.def->name);
    activated(at) = halide_op(*fused.def).activate(value(at), fused.attrs);
    value = activated;
  }
  return value;
}

}  // namespace

Func ForwardContext::fold(Func value) {
  folded = true;
  if (kernel.fold >= 0) value = fold_affine(value);
  if (kernel.residual < 0) return value;
  // The residual add: its inputs summed in its order, the kernel's value at its place, the
  // others read from the buffers after the node's own inputs; then the add's fused activation.
  const Node& sum = graph.nodes[size_t(kernel.residual)];
  std::vector<Expr> at = as_exprs(value.args());
  int own = kernel.fold >= 0 ? kernel.fold : node.id;
  size_t next = node.inputs.size();
  Expr total;
  for (int input : sum.inputs) {
    Expr term = input == own ? Expr(value(at)) : Expr(inputs.at(next++)(at));
    total = total.defined() ? total + term : term;
  }
  Func result("folded_" + sum.name);
  result(at) = total;
  return with_activations(result, sum.fused);
}

Func ForwardContext::fold_affine(Func value) {
  const Node& affine = graph.nodes[size_t(kernel.fold)];
  std::vector<Var> vars = value.args();
  std::vector<Expr> at = as_exprs(vars);
  if (affine.def->traits.activation) {  // an activation node of its own (swish, gelu, ...)
    Func activated("folded_" + affine.name);
    activated(at) = halide_op(*affine.def).activate(value(at), affine.attrs);
    return activated;
  }
  // The formula of batchnorm's inference kernel (batchnorm.cpp): (x - moving_mean) * scale + beta,
  // scale = gamma / sqrt(moving_variance + epsilon), here once per channel.
  float epsilon = float(affine.attrs.get_float("epsilon"));
  Var c("c");
  Func scale("fold_scale");
  scale(c) = fold_params.at("gamma")(c) / sqrt(fold_params.at("moving_variance")(c) + epsilon);
  if (hand && !sched.gpu) scale.compute_root().vectorize(c, std::min(int(affine.shape.back()), sched.vector), TailStrategy::GuardWithIf);
  Func normalized("folded_" + affine.name);
  normalized(at) = (value(at) - fold_params.at("moving_mean")(vars[0])) * scale(vars[0]) + fold_params.at("beta")(vars[0]);
  return with_activations(normalized, affine.fused);
}

ChannelSoftmax channel_softmax(Func logits, int channels) {
  Var c("c"), x("x"), y("y"), n("n");
  RDom k(0, channels, "k");
  ChannelSoftmax softmax{Func("softmax"), Func("softmax_max"), Func("softmax_exp"), Func("softmax_sum")};
  softmax.max(x, y, n) = maximum(logits(k, x, y, n));
  softmax.exp(c, x, y, n) = vector_exp(logits(c, x, y, n) - softmax.max(x, y, n));
  softmax.sum(x, y, n) = Halide::sum(softmax.exp(k, x, y, n));
  softmax.value(c, x, y, n) = softmax.exp(c, x, y, n) / softmax.sum(x, y, n);
  return softmax;
}

Func elementwise_kernel(ForwardContext& ctx,
                        const std::function<Func(const std::vector<Var>& vars, std::vector<Func>& inner)>& define) {
  std::vector<Var> vars = make_vars(ctx.node.shape.size() + 1);
  std::vector<Expr> at = as_exprs(vars);
  std::vector<Func> inner;  // Funcs computed per row of the output
  Func value = with_activations(define(vars, inner), ctx.node.fused);
  Func output("output");
  output(at) = value(at);
  if (!ctx.hand) return output;
  ctx.schedule_elementwise(output, vars);
  for (Func& func : inner) {
    if (ctx.sched.gpu) func.compute_at(output, ctx.gpu_thread);
    else func.compute_at(output, vars[1]);
  }
  return output;
}

void define_forward_kernel(const Graph& graph, const KernelInfo& kernel, const Target& target, PipelineBuild& build) {
  ForwardContext ctx(graph, kernel, target, build);
  const Node& node = ctx.node;
  for (size_t i = 0; i < kernel.inputs.size(); ++i) {
    const Shape& shape = graph.nodes[kernel.inputs[i]].shape;
    ctx.inputs.push_back(build.buffer(Float(32), halide_extents(shape), true, fmt::format("input{}", i)));
  }
  for (const std::string& name : kernel.params)
    for (const ParamSpec& spec : node.params)
      if (spec.name == name) {
        ctx.params[name] = build.buffer(Float(32), halide_extents(spec.shape), false, name);
        build.args.back().non_negative = spec.non_negative;
      }
  if (kernel.fold >= 0)
    for (const std::string& name : kernel.fold_params)
      for (const ParamSpec& spec : graph.nodes[size_t(kernel.fold)].params)
        if (spec.name == name) {
          ctx.fold_params[name] = build.buffer(Float(32), halide_extents(spec.shape), false, name);
          build.args.back().non_negative = spec.non_negative;
        }
  if (node.def->traits.random) {
    build.scalar(ctx.seed, 1);
    build.scalar(ctx.step, 1);
    build.scalar(ctx.example_offset, 0);
  }
  Func output = halide_op(*node.def).forward(ctx);
  CNNC_ASSERT((kernel.fold < 0 && kernel.residual < 0) || ctx.folded,
              "the forward kernel of " + node.name + " did not apply its folded nodes");
  CNNC_ASSERT(kernel.pool < 0 || ctx.pooled, "the forward kernel of " + node.name + " did not apply its folded pooling");
  build.output(output, halide_extents(graph.nodes[size_t(kernel.written_node())].shape), true);
  // A training form's new state: one output per non-trainable parameter, in their order.
  size_t next_state = 0;
  for (const ParamSpec& spec : node.params) {
    if (spec.trainable || !ctx.train || !node.def->traits.training_form) continue;
    CNNC_ASSERT(next_state < ctx.state.size(), "the training forward of " + node.name + " gives no new " + spec.name);
    build.output(ctx.state[next_state++], halide_extents(spec.shape), false);
  }
  CNNC_ASSERT(next_state == ctx.state.size(), "the training forward of " + node.name + " gives state it has no parameter for");
  if (kernel.has_saved && !ctx.tuple_saved) {
    CNNC_ASSERT(ctx.saved.defined(), "node " + node.name + " should keep a tensor for backward");
    build.output(ctx.saved, halide_extents(saved_shape(node)), true);
  }
  build.schedule = ctx.hand ? ctx.schedule : "";
  build.executed_flops = ctx.hand ? ctx.executed_flops : 0;
}

// ---------------------------------------------------------------------------------------------
// Schedule spaces

std::vector<ScheduleKnobs> register_tile_space() {
  // Register tiles: vectors of output channels x pixels (forward), or x input channels (weight
  // gradients); enough accumulators to hide the FMA latency, few enough to stay in registers.
  std::vector<ScheduleKnobs> space;
  for (int vectors : {1, 2, 3, 4})
    for (int pixels : {2, 3, 4, 6, 8, 12, 16}) {
      int accumulators = vectors * pixels;
      if (accumulators < 6 || accumulators > 28) continue;
      ScheduleKnobs knobs;
      knobs.channel_vectors = vectors;
      knobs.pixel_tile = pixels;
      space.push_back(knobs);
    }
  return space;
}

// The search space of every kernel, beside the schedules that read the knobs: the default, then
// what the node's op adds (HalideOp::schedule_space) for its forward, training forward and
// backward kernels:
//   conv2d and dense (register_tile_space):
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
  bool op_kernel = kernel.kind == KernelKind::Forward || kernel.kind == KernelKind::ForwardTrain ||
                   kernel.kind == KernelKind::Backward;
  if (!op_kernel) return space;
  const HalideOp& op = halide_op(*graph.nodes[kernel.node].def);
  if (!op.schedule_space) return space;
  std::vector<ScheduleKnobs> more = op.schedule_space(graph.nodes[kernel.node], kernel);
  space.insert(space.end(), more.begin(), more.end());
  return space;
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
std::pair<Pipeline, PipelineBuild> make_pipeline(const Graph& graph, const KernelInfo& kernel, const Target& target) {
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
    const int batch_estimate = 1;
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
                     const std::string& kernels_object, const std::string& runtime_object,
                     const CompileProgress& progress) {
  Target target = Target(target_info.halide).with_feature(Target::NoRuntime);
  std::vector<Module> modules;
  size_t count = 0;
  for (const KernelInfo& kernel : kernels) count += kernel.reuses_inference_kernel ? 0 : 1;
  try {
    for (KernelInfo& kernel : kernels) {
      if (kernel.reuses_inference_kernel) continue;
      if (progress) progress(modules.size() + 1, count, &kernel);
      std::optional<QuietOutput> quiet;  // (an error still surfaces, after the output is back)
      if (!kernel.knobs.autoscheduler.empty()) quiet.emplace();
      auto [pipeline, build] = make_pipeline(graph, kernel, target);
      modules.push_back(pipeline.compile_to_module(build.arguments(), kernel.function, target));
      kernel.schedule = build.schedule;
      kernel.executed_flops = build.executed_flops;
    }
    if (modules.empty())
      throw UserError(SourceLoc{graph.file, 0, 0},
                      "the model computes nothing: each of its layers only passes its input on (flatten, dropout "
                      "at inference), so there is no kernel to compile");
    if (progress) progress(count + 1, count, nullptr);
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

struct CompiledBaseline {
  Pipeline pipeline;
  PipelineBuild build;
};

std::shared_ptr<const CompiledBaseline> compile_baseline(const Graph& graph, const KernelInfo& kernel,
                                                         const TargetInfo& target_info) {
  Target target(target_info.halide);
  auto [pipeline, build] = make_pipeline(graph, kernel, target);
  pipeline.compile_jit(target);
  return std::make_shared<const CompiledBaseline>(CompiledBaseline{pipeline, build});
}

KernelTiming time_kernel(const Graph& graph, const KernelInfo& kernel, const TargetInfo& target_info, int batch,
                         int repetitions, const std::vector<int>& check_batches, InjectedFault fault,
                         const CompiledBaseline* baseline) {
  KernelTiming timing;
  std::optional<QuietOutput> quiet;
  if (!kernel.knobs.autoscheduler.empty()) quiet.emplace();
  int running_batch = batch;
  try {
    Target target(target_info.halide);
    auto [pipeline, build] = make_pipeline(graph, kernel, target);
    timing.schedule = build.schedule;
    pipeline.compile_jit(target);
    // The baseline (paired timing): its own parameters, set to the same buffers and scalars.
    std::optional<std::pair<Pipeline, PipelineBuild>> base;
    if (baseline) {
      base.emplace(baseline->pipeline, baseline->build);
      if (base->second.args.size() != build.args.size())
        throw InternalError(kernel.function + ": the baseline schedule has other arguments");
    }
    std::mt19937 random(7);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::vector<Buffer<>> keep;  // the argument buffers must outlive the runs
    // Fresh guarded output buffers for `examples` examples.
    auto new_outputs = [&](int examples) {
      std::vector<std::unique_ptr<GuardedOutput>> outputs;
      for (size_t i = 0; i < build.output_extents.size(); ++i) {
        std::vector<int> extents = build.output_extents[i];
        if (build.output_batched[i]) extents.push_back(examples);
        outputs.push_back(std::make_unique<GuardedOutput>(build.output_types[i], extents, build.output_batched[i] ? 1 : 0));
      }
      return outputs;
    };
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
      if (base)
        for (size_t i = 0; i < build.args.size(); ++i) {
          PipelineBuild::Arg &from = build.args[i], &to = base->second.args[i];
          if (from.kind == 1) to.real.set(from.value);
          else if (from.kind == 2) to.integer.set(int(from.value));
          else to.image.set(from.image.get());
        }
      return new_outputs(examples);
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
    // Timed as a package runs it: parallel loops on a spinning pool like the plan's, per-task
    // scratch blocks kept by each thread, denormals flushed to zero.
    auto set_handlers = [](Pipeline& timed) {
      timed.jit_handlers().custom_malloc = [](JITUserContext*, size_t size) { return cnnc_jit_malloc(size); };
      timed.jit_handlers().custom_free = [](JITUserContext*, void* block) { cnnc_jit_free(block); };
      timed.jit_handlers().custom_do_par_for = [](JITUserContext* context, int (*task)(JITUserContext*, int, uint8_t*),
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
    };
    set_handlers(pipeline);
    if (base) set_handlers(base->first);
    struct FlushDenormals {
      unsigned previous = cnnc_jit_flush_denormals();
      ~FlushDenormals() { cnnc_jit_restore_fp(previous); }
    } flush;
    std::vector<std::unique_ptr<GuardedOutput>> outputs = prepare(batch);
    Realization realization = realization_of(outputs);
    // The baseline writes into outputs of its own: the kernel's are checked and collected.
    std::vector<std::unique_ptr<GuardedOutput>> base_outputs;
    std::optional<Realization> base_realization;
    if (base) {
      base_outputs = new_outputs(batch);
      base_realization.emplace(realization_of(base_outputs));
      base->first.realize(*base_realization, target);  // warm-up
    }
    pipeline.realize(realization, target);  // warm-up
    if (fault == InjectedFault::OutOfBounds) outputs.front()->write_past_end();
    else if (fault != InjectedFault::None) commit_fault(fault);
    if (timing.error = check_guards(outputs); !timing.error.empty()) return timing;
    auto time_once = [&](Pipeline& timed, Realization& into) {
      auto start = std::chrono::steady_clock::now();
      timed.realize(into, target);
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    timing.seconds = 1e30;
    if (base) timing.baseline_seconds = 1e30;
    for (int r = 0; r < repetitions; ++r) {
      if (base) timing.baseline_seconds = std::min(timing.baseline_seconds, time_once(base->first, *base_realization));
      timing.seconds = std::min(timing.seconds, time_once(pipeline, realization));
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
