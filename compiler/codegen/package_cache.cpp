// The content-addressed package cache (see package_cache.h).
#include "codegen/package_cache.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include <fmt/format.h>

#include "codegen/package.h"
#include "graph/print.h"
#include "support/hash.h"

namespace fs = std::filesystem;

namespace cnnc {

std::string hash_hex(const std::string& text) {
  return fmt::format("{:016x}{:016x}", fnv1a(text.data(), text.size()), fnv1a(text.data(), text.size(), 0x9e3779b97f4a7c15ull));
}

std::string model_fingerprint(const Graph& graph) {
  std::string text = format_graph(graph);
  text = text.substr(text.find('\n') + 1);  // drop the header, which names the file
  for (const Node& node : graph.nodes)
    for (const ParamSpec& param : node.params) text += fmt::format("{}.{} {}\n", node.name, param.name, fmt::join(param.shape, "x"));
  return hash_hex(text);
}

std::string cache_directory() {
  if (const char* dir = std::getenv("CNNC_CACHE"); dir && *dir) return dir;
  if (const char* dir = std::getenv("XDG_CACHE_HOME"); dir && *dir) return std::string(dir) + "/cnnc";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/cnnc";
  return "/tmp/cnnc-cache";
}

std::string temporary_name(const std::string& base) {
  std::random_device random;
  return fmt::format("{}.tmp-{}-{:08x}", base, getpid(), random());
}

void copy_package(const std::string& from, const std::string& to) {
  fs::create_directories(to);
  for (const fs::directory_entry& entry : fs::directory_iterator(from)) {
    if (!entry.is_regular_file()) continue;
    std::string name = entry.path().filename().string();
    if (name.rfind("build.", 0) == 0 || entry.path().extension() == ".o") continue;
    fs::path target = fs::path(to) / name;
    fs::path temporary = temporary_name(target.string());
    fs::copy_file(entry.path(), temporary, fs::copy_options::overwrite_existing);
    fs::rename(temporary, target);
  }
}

}  // namespace cnnc
