// The package's C: the header `<name>.h` (the C API, see docs/c-api.md) and `plan.c`, the
// execution plan that owns every buffer and calls the kernels in order (inference and
// training). Both are written from a Plan; no Halide here.
#pragma once

#include <string>
#include <vector>

#include "codegen/plan.h"
#include "codegen/target.h"

namespace cnnc {

// The functions of the C API (c_api.def) without their prefix, in the header's order.
std::vector<std::string> c_api_functions();

// The text of `<name>.h` for this plan and target; its declarations come from c_api.def.
std::string generate_header(const Plan& plan, const TargetInfo& target);

// The text of plan.c: compiled with -std=c99 against HalideRuntime.h and `<name>.h`
// (-DCNNC_GUARD_ZONES puts every block of the plan between checked guard zones).
std::string generate_plan_c(const Plan& plan);

}  // namespace cnnc
