// The tuning loop of `cnnc tune`: measures each kernel's schedule candidates on this machine (the
// explicit search space of schedule_space, plus Halide's autoschedulers), checks each against the
// default schedule's output, and keeps every measurement in the tuning database
// ($CNNC_CACHE/tuning.sqlite). cnnc build then uses the fastest valid schedule of each kernel.
// Interrupted runs resume where they stopped.
//
// Generated code never runs in this process: every candidate, and the default schedule whose
// outputs are the reference, is compiled and timed in a child process (codegen/child_timing.h)
// with a time limit, so that a schedule that traps, crashes, writes outside its output or loops
// is recorded as rejected with its reason and tuning goes on. This file includes no Halide.
#pragma once

#include <chrono>
#include <iosfwd>
#include <string>
#include <vector>

#include "codegen/target.h"
#include "graph/graph.h"

namespace cnnc {

struct TuneOptions {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();  // the budget counts from here
  double budget = 600;              // seconds to spend at most
  int batch = 1;                    // batch size to time at
  int repetitions = 20;             // timed runs per candidate (alternating with the default's) after a warm-up
  double candidate_timeout = 120;   // seconds one candidate may take (at most half the budget)
  std::vector<std::string> autoschedulers;  // checked names: Mullapudi2016, Li2018, Adams2019
  std::string json;                 // write per-kernel results here ("" for none)
  // Progress as one line rewritten in place ('\r', for a terminal); else one line per kernel
  // when it is done. Either way a table of every kernel follows at the end.
  bool progress_in_place = false;
  int progress_columns = 150;       // the terminal's width: the line rewritten in place is cut to it
};

// Tunes every kernel of a fused graph (inference, then training; one per signature) for
// `target`, which must run here. Progress and the final summary go to `out`, warnings to `err`.
// Ctrl-C stops it after the candidate being measured. Returns the exit status for cnnc tune:
// 0 when done or stopped by the budget (a later run continues), 130 when interrupted.
int tune_kernels(const Graph& graph, const TargetInfo& target, const TuneOptions& options, std::ostream& out,
                 std::ostream& err);

}  // namespace cnnc
