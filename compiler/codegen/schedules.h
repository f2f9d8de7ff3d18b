// Choosing the schedule of every kernel of a plan: the best valid measurement of the tuning
// database ($CNNC_CACHE/tuning.sqlite, written by `cnnc tune`) where it has one, else the
// target's default. No Halide here.
#pragma once

#include <vector>

#include "codegen/plan.h"
#include "codegen/target.h"

namespace cnnc {

// Sets the knobs and schedule origin of each of the plan's inference and training kernels the
// database has a better schedule for (never an autoscheduler's for a kernel that adds in place,
// see tuning_candidates). A missing database is not created; one that exists is opened once.
void choose_schedules(Plan& plan, const TargetInfo& target);

}  // namespace cnnc
