// cnnc build: a fused graph to a package, as a list of steps (see build_package at the end).
// The steps live in their own files: plan_kernels.cpp and plan.cpp (plan the kernels),
// schedules.cpp (choose schedules), halide_kernels.cpp / halide_training.cpp (generate kernels),
// emit_c.cpp (the plan's C and the header), manifest.cpp, toolchain.cpp (compile and link) and
// package_cache.cpp (store in the cache). No Halide here except through codegen.h (compile_kernels).
#include "codegen/package.h"

#include <chrono>
#include <filesystem>
#include <ostream>

#include <fmt/format.h>

#include "codegen/codegen.h"
#include "codegen/emit_c.h"
#include "codegen/manifest.h"
#include "codegen/package_cache.h"
#include "codegen/plan.h"
#include "codegen/schedules.h"
#include "codegen/toolchain.h"
#include "support/text.h"

#ifndef CNNC_VERSION
#define CNNC_VERSION "unknown"
#endif

namespace fs = std::filesystem;

namespace cnnc {

// Each file that writes part of a package changes its stamp whenever it is recompiled.
const char* plan_kernels_build_stamp();
const char* plan_build_stamp();
const char* emit_c_build_stamp();
const char* manifest_build_stamp();

namespace {

// Bump when generated code changes in a way the cache key would not otherwise see.
constexpr int kCodegenRevision = 1;

// The cache key: the model, target, versions, the builds of every code generator (kernels and
// plan: they change whenever they are recompiled, so that packages from an older cnnc are never
// reused), the build stamp of each op's Halide half the graph uses (HalideOp::stamp) and the
// chosen schedules.
std::string package_cache_key(const Plan& plan, const TargetInfo& target, const std::string& fingerprint,
                              bool guard_zones) {
  std::string schedules;
  for (const KernelInfo& kernel : plan.kernels) schedules += kernel.knobs.str() + ";";
  for (const KernelInfo& kernel : plan.training) schedules += kernel.knobs.str() + ";";
  std::string plan_stamp = fmt::format("{} {} {} {} {}", __DATE__ " " __TIME__, plan_kernels_build_stamp(),
                                       plan_build_stamp(), emit_c_build_stamp(), manifest_build_stamp());
  return hash_hex(fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}", plan.graph.name, fingerprint, target.halide, CNNC_VERSION,
                              halide_version(), kCodegenRevision, codegen_build_stamp(), plan_stamp,
                              schedules + op_build_stamps(plan.graph) + (guard_zones ? "|guard zones" : "")));
}

// Generate kernels: every kernel of the plan into kernels.o, the Halide runtime into runtime.o,
// and the schedule each got (and the FLOPs it executes) recorded in the plan.
void generate_kernels(Plan& plan, const TargetInfo& target, const std::string& work, const CompileProgress& progress) {
  std::vector<KernelInfo> all = plan.kernels;
  all.insert(all.end(), plan.training.begin(), plan.training.end());
  compile_kernels(plan.graph, all, target, work + "/kernels.o", work + "/runtime.o", progress);
  for (size_t i = 0; i < plan.kernels.size(); ++i) {
    plan.kernels[i].schedule = all[i].schedule;
    plan.kernels[i].executed_flops = all[i].executed_flops;
  }
  for (size_t i = 0; i < plan.training.size(); ++i) {
    plan.training[i].schedule = all[plan.kernels.size() + i].schedule;
    plan.training[i].executed_flops = all[plan.kernels.size() + i].executed_flops;
  }
}

// What the build is compiling, while it compiles the kernels: on a terminal one line rewritten
// in place ("cnnc: compiling kernel 12/40: NAME (backward)", then "generating machine code for
// 40 kernels", most of the time), erased when done. Otherwise plain lines, few: a kernel's when
// some seconds have passed since the last line, and the machine code's where the kernels took
// a second or more (a big model), so that a log says what a long build is doing without a line
// per kernel in every log.
class CompileProgressLine {
 public:
  explicit CompileProgressLine(const BuildOptions& options) : options_(options) {}
  ~CompileProgressLine() { close(); }
  void operator()(size_t number, size_t count, const KernelInfo* kernel) {
    if (!options_.log) return;
    std::string text = kernel ? fmt::format("compiling kernel {}/{}: {} ({})", number, count, kernel->function,
                                            kernel_kind_name(kernel->kind))
                              : fmt::format("generating machine code for {}", plural(int64_t(count), "kernel"));
    if (options_.log_in_place) {
      *options_.log << "\r\033[K" << fit_line("cnnc: " + text, terminal_columns(STDERR_FILENO)) << std::flush;
      open_ = true;
      return;
    }
    auto now = std::chrono::steady_clock::now();
    if (kernel ? now - last_ >= std::chrono::seconds(3) : now - start_ >= std::chrono::seconds(1)) {
      *options_.log << "cnnc: " << text << "\n" << std::flush;
      last_ = now;
    }
  }
  // Erases the line (before the next message, or an error).
  void close() {
    if (open_ && options_.log) *options_.log << "\r\033[K" << std::flush;
    open_ = false;
  }

 private:
  const BuildOptions& options_;
  bool open_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_ = start_;
};

// A work directory beside the cache entry, removed on the way out unless released.
struct WorkDirectory {
  std::string dir;
  explicit WorkDirectory(const std::string& entry) : dir(temporary_name(entry)) {
    std::error_code error;
    fs::create_directories(cache_directory() + "/packages", error);
    if (error)
      throw UserError(SourceLoc{cache_directory(), 0, 0},
                      fmt::format("cannot create the cache directory: {} (set CNNC_CACHE to a writable directory)",
                                  error.message()));
    fs::create_directories(dir);
  }
  ~WorkDirectory() {
    std::error_code ignored;
    if (!dir.empty()) fs::remove_all(dir, ignored);
  }
};

// Store in the cache: publish the work directory as the entry atomically (a concurrent build of
// the same package may have won the race; its package is as good).
void store_in_cache(WorkDirectory& work, const std::string& entry) {
  std::error_code error, ignored;
  fs::rename(work.dir, entry, error);
  if (error && !fs::exists(entry + "/manifest.json", ignored))
    throw UserError(SourceLoc{entry, 0, 0}, "cannot write the package into the cache: " + error.message());
  if (!error) work.dir = "";
}

}  // namespace

PackageResult build_package(const Graph& graph, const BuildOptions& options) {
  auto start = std::chrono::steady_clock::now();
  auto log = [&](const std::string& line) {
    if (options.log) *options.log << "cnnc: " << line << "\n" << std::flush;
  };
  TargetInfo target = resolve_target(options.target);
  std::string fingerprint = model_fingerprint(graph);

  // 1. Plan the kernels (inference and training) and the plan's memory.
  Plan plan = make_plan(graph, target.gpu);
  if (options.dump_kernel_plan) *options.dump_kernel_plan << format_kernel_plan(plan);
  // 2. Choose schedules: the tuning database's best where it has one, else the defaults.
  if (options.use_tuning) choose_schedules(plan, target);

  PackageResult result;
  result.cache_key = package_cache_key(plan, target, fingerprint, options.guard_zones);
  std::string entry = cache_directory() + "/packages/" + graph.name + "-" + result.cache_key;
  auto finish = [&](const std::string& dir) {
    result.dir = dir;
    if (!options.output_dir.empty() && options.output_dir != dir) {
      copy_package(dir, options.output_dir);
      result.dir = options.output_dir;
    }
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
  };
  std::error_code ignored;
  if (options.use_cache && fs::exists(entry + "/manifest.json", ignored)) {
    result.from_cache = true;
    return finish(entry);
  }
  WorkDirectory work(entry);

  // 3. Generate kernels (Halide).
  size_t compiled = plan.kernels.size();
  for (const KernelInfo& kernel : plan.training) compiled += kernel.reuses_inference_kernel ? 0 : 1;
  log(fmt::format("{} for {}: compiling {} ({} for inference) with Halide {}", graph.name, target.name,
                  plural(int64_t(compiled), "kernel"), plan.kernels.size(), halide_version()));
  {
    CompileProgressLine progress(options);
    generate_kernels(plan, target, work.dir, std::ref(progress));
  }
  // 4. Emit the plan's C; 5. the header and the manifest.
  write_file(work.dir + "/plan.c", generate_plan_c(plan));
  write_file(work.dir + "/" + graph.name + ".h", generate_header(plan, target));
  write_file(work.dir + "/manifest.json", generate_manifest(plan, target, fingerprint).dump(2) + "\n");
  // 6. Compile and link.
  log("compiling the plan and linking kernels.a, kernels.so");
  compile_and_link(work.dir, target, options.guard_zones);

  // 7. Store in the cache (or only in the output directory).
  if (!options.use_cache) {
    std::string dir = options.output_dir.empty() ? entry : options.output_dir;
    copy_package(work.dir, dir);
    return finish(dir);
  }
  store_in_cache(work, entry);
  return finish(entry);
}

}  // namespace cnnc
