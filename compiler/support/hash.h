// FNV-1a, 64 bits: the package cache's keys (codegen/package_cache.cpp) and the data-parallel
// trainer's check that every rank trains the same thing (runtime/trainer.cpp). Header-only;
// shared by the compiler and the runtime.
#pragma once

#include <cstddef>
#include <cstdint>

namespace cnnc {

constexpr uint64_t kFnvOffsetBasis = 14695981039346656037ull;

// `size` bytes at `data` folded into `hash` (start from kFnvOffsetBasis, or another seed).
inline uint64_t fnv1a(const void* data, size_t size, uint64_t hash = kFnvOffsetBasis) {
  const unsigned char* bytes = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) {
    hash ^= bytes[i];
    hash *= 1099511628211ull;
  }
  return hash;
}

}  // namespace cnnc
