// Compiling the plan's C and linking a package (see toolchain.h).
#include "codegen/toolchain.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "support/diagnostics.h"

#ifndef CNNC_HALIDE_INCLUDE_DIR
#define CNNC_HALIDE_INCLUDE_DIR "/usr/include/halide14"
#endif

namespace cnnc {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw UserError(SourceLoc{path, 0, 0}, "cannot write this file");
}

// Runs a program (no shell), failing with its output if it exits non-zero. posix_spawn, not
// fork: no copy of a process that has threads (and, under mpirun, MPI's memory registrations).
void run_program(const std::vector<std::string>& argv, const std::string& log_path) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  int error = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error == ENOENT)
    throw UserError(SourceLoc{argv[0], 0, 0},
                    fmt::format("cannot run '{}'; is it installed? (bash scripts/setup.sh installs the toolchains)", argv[0]));
  if (error != 0)
    throw UserError(SourceLoc{argv[0], 0, 0}, fmt::format("cannot start '{}': {}", argv[0], std::strerror(error)));
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  std::string output = read_file(log_path);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && output.empty())
    throw UserError(SourceLoc{argv[0], 0, 0},
                    fmt::format("cannot run '{}'; is it installed? (bash scripts/setup.sh installs the toolchains)", argv[0]));
  throw UserError(SourceLoc{argv[0], 0, 0}, fmt::format("'{}' failed:\n{}", fmt::join(argv, " "), output));
}

void compile_and_link(const std::string& work, const TargetInfo& target, bool guard_zones) {
  std::vector<std::string> compile_plan = {target.c_compiler, "-O2", "-fPIC", "-std=c99", "-Wall", "-I",
                                            CNNC_HALIDE_INCLUDE_DIR, "-I", work, "-c", work + "/plan.c", "-o", work + "/plan.o"};
  if (guard_zones) compile_plan.push_back("-DCNNC_GUARD_ZONES");
  run_program(compile_plan, work + "/build.log");
  run_program({"ar", "rcs", work + "/kernels.a", work + "/kernels.o", work + "/runtime.o", work + "/plan.o"},
              work + "/build.log");
  run_program({target.c_compiler, "-shared", "-o", work + "/kernels.so", work + "/kernels.o", work + "/runtime.o",
               work + "/plan.o", "-lpthread", "-ldl", "-lm"},
              work + "/build.log");
  std::error_code ignored;
  std::filesystem::remove(work + "/build.log", ignored);
}

}  // namespace cnnc
