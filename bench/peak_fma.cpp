// This machine's FP32 FMA peak (see peak_fma.h). On x86-64 the file is compiled with -mavx2 -mfma
// and only called where the CPU has them.
#include "peak_fma.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

namespace {

// 10 independent chains: more than FMA latency (4 cycles) x throughput (2 per cycle) needs.
float fma_chains(long iterations) {
  // Written out so that every chain lives in its own register (an array may be spilled).
  const __m256 scale = _mm256_set1_ps(0.999999f), offset = _mm256_set1_ps(1e-7f);
  __m256 a0 = _mm256_set1_ps(0.1f), a1 = _mm256_set1_ps(0.2f), a2 = _mm256_set1_ps(0.3f), a3 = _mm256_set1_ps(0.4f),
         a4 = _mm256_set1_ps(0.5f), a5 = _mm256_set1_ps(0.6f), a6 = _mm256_set1_ps(0.7f), a7 = _mm256_set1_ps(0.8f),
         a8 = _mm256_set1_ps(0.9f), a9 = _mm256_set1_ps(1.0f);
  for (long i = 0; i < iterations; ++i) {
    a0 = _mm256_fmadd_ps(a0, scale, offset);
    a1 = _mm256_fmadd_ps(a1, scale, offset);
    a2 = _mm256_fmadd_ps(a2, scale, offset);
    a3 = _mm256_fmadd_ps(a3, scale, offset);
    a4 = _mm256_fmadd_ps(a4, scale, offset);
    a5 = _mm256_fmadd_ps(a5, scale, offset);
    a6 = _mm256_fmadd_ps(a6, scale, offset);
    a7 = _mm256_fmadd_ps(a7, scale, offset);
    a8 = _mm256_fmadd_ps(a8, scale, offset);
    a9 = _mm256_fmadd_ps(a9, scale, offset);
  }
  __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(_mm256_add_ps(a6, a7), _mm256_add_ps(a8, a9))));
  float lanes[8];
  _mm256_storeu_ps(lanes, sum);
  return lanes[0];
}

// The same with 16-lane AVX-512 FMAs, for machines that have them (the kernels use them there).
__attribute__((target("avx512f"))) float fma_chains_512(long iterations) {
  const __m512 scale = _mm512_set1_ps(0.999999f), offset = _mm512_set1_ps(1e-7f);
  __m512 a0 = _mm512_set1_ps(0.1f), a1 = _mm512_set1_ps(0.2f), a2 = _mm512_set1_ps(0.3f), a3 = _mm512_set1_ps(0.4f),
         a4 = _mm512_set1_ps(0.5f), a5 = _mm512_set1_ps(0.6f), a6 = _mm512_set1_ps(0.7f), a7 = _mm512_set1_ps(0.8f),
         a8 = _mm512_set1_ps(0.9f), a9 = _mm512_set1_ps(1.0f);
  for (long i = 0; i < iterations; ++i) {
    a0 = _mm512_fmadd_ps(a0, scale, offset);
    a1 = _mm512_fmadd_ps(a1, scale, offset);
    a2 = _mm512_fmadd_ps(a2, scale, offset);
    a3 = _mm512_fmadd_ps(a3, scale, offset);
    a4 = _mm512_fmadd_ps(a4, scale, offset);
    a5 = _mm512_fmadd_ps(a5, scale, offset);
    a6 = _mm512_fmadd_ps(a6, scale, offset);
    a7 = _mm512_fmadd_ps(a7, scale, offset);
    a8 = _mm512_fmadd_ps(a8, scale, offset);
    a9 = _mm512_fmadd_ps(a9, scale, offset);
  }
  __m512 sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(_mm512_add_ps(a6, a7), _mm512_add_ps(a8, a9))));
  float lanes[16];
  _mm512_storeu_ps(lanes, sum);
  return lanes[0];
}

}  // namespace

double measure_fma_peak_gflops(int threads, int repetitions) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
  bool wide = __builtin_cpu_supports("avx512f");
  const long iterations = 50'000'000;
  const int lanes = wide ? 16 : 8;
  double best = 0;
  for (int r = 0; r < repetitions; ++r) {
    std::vector<std::thread> workers;
    std::vector<float> sink(static_cast<size_t>(threads));
    auto start = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t)
      workers.emplace_back([&, t] { sink[size_t(t)] = wide ? fma_chains_512(iterations) : fma_chains(iterations); });
    for (std::thread& worker : workers) worker.join();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double flops = double(threads) * double(iterations) * 10 * lanes * 2;
    best = std::max(best, flops / seconds / 1e9);
  }
  return best;
}
#else
double measure_fma_peak_gflops(int, int) { return 0; }
#endif
