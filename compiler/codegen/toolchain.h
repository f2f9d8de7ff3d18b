// The C toolchain of a package build: compiling plan.c and linking kernels.a and kernels.so
// with the target's C compiler and ar (no shell).
#pragma once

#include <string>
#include <vector>

#include "codegen/target.h"

namespace cnnc {

std::string read_file(const std::string& path);
// Throws UserError naming the file if it cannot be written.
void write_file(const std::string& path, const std::string& text);

// Runs a program (no shell), its output going to `log_path`; throws UserError with that output
// if it exits non-zero, or a hint if it could not be started.
void run_program(const std::vector<std::string>& argv, const std::string& log_path);

// In `work`, which holds plan.c, <name>.h, kernels.o and runtime.o: compiles plan.o (-O2 -fPIC
// -std=c99 -Wall; -DCNNC_GUARD_ZONES for `guard_zones`) and links kernels.a and kernels.so.
void compile_and_link(const std::string& work, const TargetInfo& target, bool guard_zones);

}  // namespace cnnc
