// Compiling the plan's C and linking a package (see toolchain.h).
#include "codegen/toolchain.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

// Runs a program (no shell), failing with its output if it exits non-zero.
void run_program(const std::vector<std::string>& argv, const std::string& log_path) {
  pid_t pid = fork();
  if (pid < 0) throw UserError(SourceLoc{argv[0], 0, 0}, "cannot start a process (fork failed)");
  if (pid == 0) {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
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
