// fuzz_nets: draws random networks (random_nets.h) with new seeds and checks each one -- every
// kernel against the reference at batches 1, 7 and 17, one training step's gradients against finite
// differences -- for as long as asked. Each network runs in a child process with a time limit,
// so that a crash or a hang is reported with its seed and the run goes on. Every failing model
// is written to --keep DIR with the failure as a comment. scripts/fuzz-nets.sh runs it.
//
//   fuzz_nets [--seconds N] [--count N] [--seed S] [--keep DIR] [--timeout S] [--print SEED] [--model FILE]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "codegen/target.h"
#include "random_nets.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

struct Outcome {
  std::string status;  // "ok", "fail", "crash", "timeout"
  std::string detail;
  int kernels = 0;
};

// Runs the check of one network in a child process, its own package cache in `work`.
Outcome run_one(const std::string& yaml, uint32_t seed, const fs::path& work, double timeout) {
  fs::path result_file = work / "result.txt";
  fs::remove(result_file);
  std::cout.flush();
  pid_t child = fork();
  if (child < 0) return {"crash", std::string("fork failed: ") + std::strerror(errno), 0};
  if (child == 0) {
    setenv("CNNC_CACHE", (work / "cache").c_str(), 1);
    cnnc::test::NetCheckResult result = cnnc::test::check_net(yaml, "random.yaml", seed);
    // Every third network also for AVX2 (8-float vectors), where this machine runs it.
    if (result.ok() && seed % 3 == 0 && cnnc::resolve_target("x86-64-linux-avx2").runs_here) {
      cnnc::test::NetCheckOptions avx2;
      avx2.target = "x86-64-linux-avx2";
      result = cnnc::test::check_net(yaml, "random.yaml", seed, avx2);
      if (!result.ok()) result.stage = "x86-64-linux-avx2 " + result.stage;
    }
    std::ofstream out(result_file);
    out << result.kernels << "\n" << result.stage << "\n" << result.message << "\n";
    out.close();
    _exit(result.ok() ? 0 : 1);
  }
  auto start = Clock::now();
  int status = 0;
  while (true) {
    pid_t done = waitpid(child, &status, WNOHANG);
    if (done == child) break;
    if (since(start) > timeout) {
      kill(child, SIGKILL);
      waitpid(child, &status, 0);
      return {"timeout", "no result after " + std::to_string(int(timeout)) + " s", 0};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (WIFSIGNALED(status))
    return {"crash", std::string("killed by signal ") + strsignal(WTERMSIG(status)), 0};
  Outcome outcome;
  std::ifstream in(result_file);
  std::string kernels, stage, message;
  std::getline(in, kernels);
  std::getline(in, stage);
  std::stringstream rest;
  rest << in.rdbuf();
  message = rest.str();
  while (!message.empty() && message.back() == '\n') message.pop_back();
  outcome.kernels = kernels.empty() ? 0 : std::atoi(kernels.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    outcome.status = "ok";
  } else {
    outcome.status = "fail";
    outcome.detail = stage.empty() ? "exit status " + std::to_string(WEXITSTATUS(status)) : stage + ": " + message;
  }
  return outcome;
}

int usage() {
  std::cerr << "usage: fuzz_nets [--seconds N] [--count N] [--seed S] [--keep DIR] [--timeout S] [--print SEED]\n"
               "  --seconds N   stop starting new networks after N seconds (default 60)\n"
               "  --count N     stop after N networks (default: no limit)\n"
               "  --seed S      first seed (default: drawn from the clock); seeds S, S+1, ...\n"
               "  --keep DIR    write every failing model there (default fuzz-failures)\n"
               "  --timeout S   seconds one network may take (default 600)\n"
               "  --print SEED  print the model of one seed and exit\n"
               "  --model FILE  check one model file in this process (parameters from --seed, default 42) and exit\n"
               "  --gradient-batch B  with --model: the batch of the gradient check (default: from the seed)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 60, timeout = 600;
  long count = -1;
  uint32_t seed = uint32_t(std::random_device()());
  std::string keep = "fuzz-failures", model;
  bool seed_given = false;
  int gradient_batch = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) return usage();
    std::string value = argv[++i];
    if (arg == "--seconds") seconds = std::atof(value.c_str());
    else if (arg == "--count") count = std::atol(value.c_str());
    else if (arg == "--seed") {
      seed = uint32_t(std::strtoul(value.c_str(), nullptr, 10));
      seed_given = true;
    }
    else if (arg == "--keep") keep = value;
    else if (arg == "--timeout") timeout = std::atof(value.c_str());
    else if (arg == "--model") model = value;
    else if (arg == "--gradient-batch") gradient_batch = std::atoi(value.c_str());
    else if (arg == "--print") {
      std::cout << cnnc::test::random_model_yaml(uint32_t(std::strtoul(value.c_str(), nullptr, 10)));
      return 0;
    } else return usage();
  }
  if (!model.empty()) {
    std::ifstream in(model);
    if (!in) return usage();
    std::stringstream text;
    text << in.rdbuf();
    cnnc::test::NetCheckOptions options;
    options.gradient_batch = gradient_batch;
    cnnc::test::NetCheckResult result = cnnc::test::check_net(text.str(), model, seed_given ? seed : 42, options);
    std::cout << model << ": " << (result.ok() ? "ok" : result.stage + ": " + result.message) << std::endl;
    return result.ok() ? 0 : 1;
  }
  fs::path work = fs::temp_directory_path() / ("cnnc-fuzz-nets-" + std::to_string(getpid()));
  fs::create_directories(work);
  std::cout << "fuzz_nets: seeds from " << seed << ", " << seconds << " s" << std::endl;
  auto start = Clock::now();
  long tried = 0, failed = 0, kernels = 0;
  for (uint32_t s = seed; (count < 0 || tried < count) && since(start) < seconds; ++s) {
    std::string yaml = cnnc::test::random_model_yaml(s);
    auto net_start = Clock::now();
    Outcome outcome = run_one(yaml, s, work, timeout);
    fs::remove_all(work / "cache");
    ++tried;
    kernels += outcome.kernels;
    std::cout << "[" << tried << "] seed " << s << ": " << outcome.status;
    if (outcome.status == "ok") std::cout << " (" << outcome.kernels << " kernels)";
    std::cout << ", " << std::fixed;
    std::cout.precision(1);
    std::cout << since(net_start) << " s" << std::endl;
    if (outcome.status != "ok") {
      ++failed;
      std::cout << "    " << outcome.detail << std::endl;
      fs::create_directories(keep);
      std::ofstream out(fs::path(keep) / ("seed-" + std::to_string(s) + ".yaml"));
      std::string comment = outcome.status + ": " + outcome.detail;
      for (char& c : comment)
        if (c == '\n') c = ' ';
      out << "# fuzz_nets seed " << s << ", " << comment << "\n" << yaml;
    }
  }
  fs::remove_all(work);
  std::cout << "fuzz_nets: " << tried << " networks (" << kernels << " kernels) in " << int(since(start)) << " s, "
            << failed << " failed" << std::endl;
  std::cout << (tried - failed) << " passed, " << failed << " failed" << std::endl;
  return failed ? 1 : 0;
}
