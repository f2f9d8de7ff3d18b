// Choosing schedules: the tuning database's best measurement of each kernel, and what
// `cnnc tune` may measure (see schedules.h).
#include "codegen/schedules.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>

#include "codegen/codegen.h"
#include "codegen/package.h"
#include "tune/tuning_db.h"

namespace fs = std::filesystem;

namespace cnnc {

bool adds_in_place(const KernelInfo& kernel) {
  return std::find(kernel.accumulate.begin(), kernel.accumulate.end(), true) != kernel.accumulate.end();
}

std::vector<ScheduleKnobs> tuning_candidates(const Graph& graph, const KernelInfo& kernel, const TargetInfo& target,
                                             const std::vector<std::string>& autoschedulers) {
  std::vector<ScheduleKnobs> candidates = schedule_space(graph, kernel, target);
  if (adds_in_place(kernel)) return candidates;
  for (const std::string& name : autoschedulers) {
    ScheduleKnobs knobs;
    knobs.autoscheduler = name;
    candidates.push_back(knobs);
  }
  return candidates;
}

std::vector<std::pair<KernelInfo, std::string>> tuning_order(const Graph& graph, const std::vector<KernelInfo>& kernels) {
  std::map<std::string, int64_t> flops;
  std::vector<std::pair<KernelInfo, std::string>> work;
  for (const KernelInfo& kernel : kernels) {
    std::string signature = kernel_signature(graph, kernel);
    if (!flops.count(signature)) work.emplace_back(kernel, signature);
    flops[signature] += training_kernel_flops(graph, kernel);
  }
  std::stable_sort(work.begin(), work.end(), [&](const auto& a, const auto& b) { return flops[a.second] > flops[b.second]; });
  return work;
}

void choose_schedules(Plan& plan, const TargetInfo& target) {
  std::string path = TuningDb::default_path(cache_directory());
  std::error_code ignored;
  if (!fs::exists(path, ignored)) return;  // nothing tuned yet: never create the database here
  TuningDb db(path);
  for (std::vector<KernelInfo>* kernels : {&plan.kernels, &plan.training})
    for (KernelInfo& kernel : *kernels) {
      if (kernel.reuses_inference_kernel) continue;
      std::optional<Measurement> best = db.best(kernel_signature(plan.graph, kernel), target.halide, halide_version());
      if (!best || best->candidate == "default") continue;
      ScheduleKnobs knobs = ScheduleKnobs::parse(best->candidate);
      if (adds_in_place(kernel) && !knobs.autoscheduler.empty()) continue;  // (see tuning_candidates)
      kernel.knobs = knobs;
      kernel.schedule_origin = best->origin;
    }
}

}  // namespace cnnc
