#include "codegen/child_timing.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <thread>

#include <fmt/format.h>

#include "support/diagnostics.h"

namespace cnnc {

namespace {

// The message a child sends: a magic number, then ok, seconds, the error and every output.
constexpr uint32_t kMagic = 0x544b4e43;  // "CNKT"

template <typename T>
void put(std::string& out, const T& value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

std::string serialize(const KernelTiming& timing) {
  std::string out;
  put(out, kMagic);
  put(out, uint8_t(timing.ok));
  put(out, timing.seconds);
  put(out, timing.baseline_seconds);
  put(out, uint64_t(timing.error.size()));
  out += timing.error;
  put(out, uint64_t(timing.outputs.size()));
  for (const std::vector<float>& values : timing.outputs) {
    put(out, uint64_t(values.size()));
    out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  }
  put(out, kMagic);  // the end: a message cut short is never taken for a whole one
  return out;
}

// Reads what serialize wrote; false if the message is malformed or incomplete.
bool deserialize(const std::string& in, KernelTiming& timing) {
  size_t at = 0;
  auto get = [&](auto& value) {
    if (in.size() - at < sizeof value) return false;
    std::memcpy(&value, in.data() + at, sizeof value);
    at += sizeof value;
    return true;
  };
  uint32_t magic = 0;
  uint8_t ok = 0;
  uint64_t size = 0;
  if (!get(magic) || magic != kMagic || !get(ok) || !get(timing.seconds) || !get(timing.baseline_seconds) ||
      !get(size) || in.size() - at < size)
    return false;
  timing.ok = ok != 0;
  timing.error.assign(in, at, size);
  at += size;
  uint64_t count = 0;
  if (!get(count) || count > (in.size() - at) / sizeof(uint64_t)) return false;
  timing.outputs.resize(count);
  for (std::vector<float>& values : timing.outputs) {
    if (!get(size) || size > (in.size() - at) / sizeof(float)) return false;
    values.resize(size);
    std::memcpy(values.data(), in.data() + at, size * sizeof(float));
    at += size * sizeof(float);
  }
  return get(magic) && magic == kMagic && at == in.size();
}

bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t written = ::write(fd, data, size);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return false;
    data += written;
    size -= size_t(written);
  }
  return true;
}

// The threads of this process (Linux); 0 if unknown.
int thread_count() {
  DIR* dir = ::opendir("/proc/self/task");
  if (!dir) return 0;
  int count = 0;
  while (dirent* entry = ::readdir(dir))
    if (entry->d_name[0] != '.') ++count;
  ::closedir(dir);
  return count;
}

// In the child: time the kernel, send the result, and end without running the parent's exit
// handlers or destructors (which own the parent's database, output buffers and thread pool).
[[noreturn]] void run_child(int fd, pid_t parent, const Graph& graph, const KernelInfo& kernel, const TargetInfo& target,
                            int batch, int repetitions, const std::vector<int>& check_batches, InjectedFault fault,
                            const CompiledBaseline* baseline) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a killed tuner leaves no kernel running
  if (::getppid() != parent) ::_exit(3);  // it died before prctl
  std::signal(SIGINT, SIG_IGN);          // Ctrl-C is the parent's to handle (it kills the child)
  KernelTiming timing;
  try {
    timing = time_kernel(graph, kernel, target, batch, repetitions, check_batches, fault, baseline);
  } catch (const std::exception& error) {
    timing = KernelTiming{};
    timing.error = error.what();
  } catch (...) {
    timing = KernelTiming{};
    timing.error = "an unknown exception";
  }
  std::string message = serialize(timing);
  ::_exit(write_all(fd, message.data(), message.size()) ? 0 : 4);
}

}  // namespace

std::string describe_signal(int signal_number) {
  const char* name = ::sigabbrev_np(signal_number);
  const char* description = ::strsignal(signal_number);
  return fmt::format("{} ({})", name ? "SIG" + std::string(name) : fmt::format("signal {}", signal_number),
                     description ? description : "unknown signal");
}

ChildTiming time_kernel_in_child(const Graph& graph, const KernelInfo& kernel, const TargetInfo& target, int batch,
                                 int repetitions, const std::vector<int>& check_batches, double time_limit_seconds,
                                 const std::function<bool()>& stop, InjectedFault fault, const CompiledBaseline* baseline) {
  static bool warned = false;
  if (int threads = thread_count(); threads > 1 && !warned) {
    warned = true;
    std::cerr << fmt::format("warning: timing kernels in child processes while this process has {} threads; "
                             "a child could inherit a lock held by another thread\n",
                             threads);
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw InternalError(fmt::format("cannot create a pipe to time a kernel in: {}", std::strerror(errno)));
  // Whatever is buffered would be written twice (the child's QuietOutput flushes).
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  pid_t parent = ::getpid();
  pid_t child = ::fork();
  if (child < 0) {
    int error = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw InternalError(fmt::format("cannot fork to time a kernel in: {}", std::strerror(error)));
  }
  if (child == 0) {
    ::close(fds[0]);
    run_child(fds[1], parent, graph, kernel, target, batch, repetitions, check_batches, fault, baseline);
  }
  ::close(fds[1]);

  ChildTiming result;
  auto start = std::chrono::steady_clock::now();
  auto deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                              std::chrono::duration<double>(std::max(0.0, time_limit_seconds)));
  // Read until the end of the pipe (the child exited or closed it), the deadline, or a stop.
  std::string message;
  char chunk[1 << 16];
  bool ended = false;
  while (!ended) {
    if (stop && stop()) {
      result.interrupted = true;
      break;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      result.timed_out = true;
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    int ready = ::poll(&pfd, 1, int(std::min<long long>(left, 100)));
    if (ready < 0 && errno != EINTR) throw InternalError(fmt::format("poll failed: {}", std::strerror(errno)));
    if (ready <= 0) continue;
    ssize_t got = ::read(fds[0], chunk, sizeof chunk);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got <= 0) ended = true;  // end of file (or an error: as good as one)
    else message.append(chunk, size_t(got));
  }
  ::close(fds[0]);
  // Reap it: a child that closed the pipe exits at once; give it until the deadline, then kill.
  int status = 0;
  if (ended) {
    while (::waitpid(child, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() >= deadline) {
        result.timed_out = true;
        break;
      }
      if (stop && stop()) {
        result.interrupted = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (!result.timed_out && !result.interrupted) {
      KernelTiming& timing = result.timing;
      if (WIFSIGNALED(status)) {
        timing.error = "crashed: killed by " + describe_signal(WTERMSIG(status));
      } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        timing.error = fmt::format("crashed: exited with status {} without a result", WEXITSTATUS(status));
      } else if (!deserialize(message, timing)) {
        timing = KernelTiming{};
        timing.error = "crashed: its result arrived incomplete";
      }
      return result;
    }
  }
  ::kill(child, SIGKILL);
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  result.timing = KernelTiming{};
  result.timing.error = result.interrupted ? "interrupted"
                                           : fmt::format("timed out: still running after {:.0f} s (killed)",
                                                         std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return result;
}

InjectedFault test_fault_for(const std::string& kernel_function, size_t index) {
  const char* text = std::getenv("CNNC_TUNE_TEST_FAULT");
  if (!text || !*text) return InjectedFault::None;
  std::string all = text;
  size_t at = 0;
  while (at <= all.size()) {
    size_t comma = all.find(',', at);
    std::string item = all.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    at = comma == std::string::npos ? all.size() + 1 : comma + 1;
    size_t first = item.find('@');
    size_t second = first == std::string::npos ? first : item.find('@', first + 1);
    std::string kind = item.substr(0, first);
    std::string number = first == std::string::npos ? "" : item.substr(first + 1, second == std::string::npos ? second : second - first - 1);
    std::string function = second == std::string::npos ? "" : item.substr(second + 1);
    InjectedFault fault = kind == "abort" ? InjectedFault::Abort
                          : kind == "segv" ? InjectedFault::Segv
                          : kind == "hang" ? InjectedFault::Hang
                          : kind == "oob"  ? InjectedFault::OutOfBounds
                                           : InjectedFault::None;
    char* end = nullptr;
    unsigned long value = number.empty() ? 0 : std::strtoul(number.c_str(), &end, 10);
    if (fault == InjectedFault::None || number.empty() || *end != '\0' || value == 0)
      throw UserError(SourceLoc{"CNNC_TUNE_TEST_FAULT"},
                      fmt::format("'{}' is not KIND@INDEX or KIND@INDEX@KERNEL with KIND abort, segv, hang or oob "
                                  "(a test-only variable: unset it)",
                                  item));
    if (value == index && (function.empty() || function == kernel_function)) return fault;
  }
  return InjectedFault::None;
}

}  // namespace cnnc
