// Timing a schedule candidate in a child process, so that a candidate whose generated code traps,
// crashes, corrupts the heap or loops forever costs `cnnc tune` that candidate, not the run.
//
// time_kernel_in_child forks; the child compiles and times the kernel with time_kernel (JIT),
// sends the KernelTiming (ok, error, seconds, outputs) back through a pipe and exits with _exit.
// The caller never runs generated code: it reads until the pipe's end, then reaps the child.
// A child killed by a signal, one that exits without a whole result, or one still running at the
// time limit (killed with SIGKILL) gives a KernelTiming that is not ok, with the reason.
//
// Fork safety: the caller must not run kernels itself (no JIT, so no thread-pool workers, no
// LLVM state in use): the child is then a copy of a single-threaded process. A warning goes to
// stderr (once) if the caller has other threads at the moment of the fork. The child dies with
// the caller (PR_SET_PDEATHSIG), so a killed `cnnc tune` leaves no kernel running.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "codegen/codegen.h"

namespace cnnc {

struct ChildTiming {
  KernelTiming timing;       // not ok (with `error`) if the child failed, crashed or timed out
  bool timed_out = false;    // killed at the time limit
  bool interrupted = false;  // killed because `stop` said so: the result says nothing about the candidate
};

// Runs time_kernel(graph, kernel, target, batch, repetitions, check_batches, fault, baseline) in a
// child process, for at most `time_limit_seconds` (wall clock; compiling included). `stop` is asked
// about ten times a second while the child runs (e.g. "was Ctrl-C pressed?"); true kills it.
ChildTiming time_kernel_in_child(const Graph& graph, const KernelInfo& kernel, const TargetInfo& target, int batch,
                                 int repetitions, const std::vector<int>& check_batches, double time_limit_seconds,
                                 const std::function<bool()>& stop = {}, InjectedFault fault = InjectedFault::None,
                                 const CompiledBaseline* baseline = nullptr);

// "SIGSEGV (Segmentation fault)" for a signal number.
std::string describe_signal(int signal_number);

// Test-only: reads CNNC_TUNE_TEST_FAULT, a comma-separated list of KIND@INDEX or
// KIND@INDEX@KERNEL (KIND: abort, segv, hang or oob; INDEX: the candidate's number in cnnc tune's
// progress, 1 = the default; KERNEL: a kernel function name, else every kernel), and returns the
// fault for candidate `index` of `kernel_function`. Throws a UserError naming the variable if it
// is malformed. Unset (as everywhere outside the tests): InjectedFault::None.
InjectedFault test_fault_for(const std::string& kernel_function, size_t index);

}  // namespace cnnc
