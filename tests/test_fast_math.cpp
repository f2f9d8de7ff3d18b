// The vectorized transcendentals (codegen/fast_math.h) against the double-precision std::
// functions over the whole float range: every 101st bit pattern (NaNs skipped), a dense sweep of
// [-20, 20], and the edges (zeros, infinities, FLT_MAX, denormals, the exp overflow and
// underflow thresholds, the switch points of tanh and erf and the floats around them). Each
// function is JIT-compiled for the host, vectorized as the kernels are.
#include <catch2/catch.hpp>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iomanip>
#include <limits>

#include "codegen/fast_math.h"

using namespace cnnc;

namespace {

constexpr double kRelativeTolerance = 1e-6;
// Below this |reference| (the denormals and just above), an absolute error is asked for instead.
constexpr double kTiny = 1e-30;
constexpr double kTinyAbsoluteTolerance = 1e-36;
constexpr float kInf = std::numeric_limits<float>::infinity();

float from_bits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// The inputs: a stride through all 2^32 bit patterns, a dense sweep of the interesting range, and
// the edges with the 16 floats either side of each.
std::vector<float> test_inputs() {
  std::vector<float> inputs;
  for (uint64_t bits = 0; bits < (uint64_t(1) << 32); bits += 101) {
    float x = from_bits(uint32_t(bits));
    if (!std::isnan(x)) inputs.push_back(x);
  }
  for (int i = -200000; i <= 200000; ++i) inputs.push_back(float(i) * 1e-4f);
  std::vector<float> edges = {0.0f, FLT_MAX, FLT_MIN, std::numeric_limits<float>::denorm_min(), 1e-38f, 1e-30f,
                              1e-20f, 1e-10f, 1e-4f,
                              88.72283935546875f,  // the largest x with e^x < FLT_MAX is just below
                              87.33654475f,        // e^x = FLT_MIN
                              103.972077f,         // e^-x = 2^-150, half the smallest denormal
                              89.0f, 104.0f, 0.625f, 1.0f, 3.92f, 4.0f, 9.0f, 44.0f};
  for (float edge : edges)
    for (float sign : {1.0f, -1.0f}) {
      float below = sign * edge, above = sign * edge;
      inputs.push_back(sign * edge);
      for (int i = 0; i < 16; ++i) {
        below = std::nextafter(below, -kInf);
        above = std::nextafter(above, kInf);
        inputs.push_back(below);
        inputs.push_back(above);
      }
    }
  inputs.push_back(kInf);
  inputs.push_back(-kInf);
  return inputs;
}

// `approximation` over `inputs`, JIT-compiled for the host and vectorized, in chunks.
std::vector<float> evaluate(const std::function<Expr(Expr)>& approximation, const std::vector<float>& inputs) {
  const int chunk = 1 << 20;
  ImageParam input(Float(32), 1, "input");
  Var i("i");
  Func f("f");
  f(i) = approximation(input(i));
  Target target = get_jit_target_from_environment();
  f.vectorize(i, target.natural_vector_size<float>() * 2, TailStrategy::GuardWithIf);
  f.compile_jit(target);
  std::vector<float> outputs(inputs.size());
  for (size_t start = 0; start < inputs.size(); start += chunk) {
    int count = int(std::min(inputs.size() - start, size_t(chunk)));
    Buffer<float> in(const_cast<float*>(inputs.data() + start), count);
    Buffer<float> out(outputs.data() + start, count);
    input.set(in);
    f.realize(out);
  }
  return outputs;
}

struct Worst {
  double error = 0;
  float at = 0;
  float got = 0;
  double expected = 0;
};

// Checks every output against the reference and returns the worst relative error where the
// reference is not tiny (the absolute errors below are checked, not returned).
Worst check_against(const std::string& name, const std::function<Expr(Expr)>& approximation,
                    double (*reference)(double)) {
  static const std::vector<float> inputs = test_inputs();
  std::vector<float> outputs = evaluate(approximation, inputs);
  Worst worst;
  size_t failures = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    double expected = reference(double(inputs[i]));
    float got = outputs[i];
    bool ok;
    double error = 0;
    if (std::isnan(got)) {
      ok = false;
    } else if (std::isinf(float(expected)) || std::isinf(got)) {
      // Overflow: inf where the reference rounds to inf in float (or within tolerance of FLT_MAX).
      ok = (got == float(expected)) ||
           (!std::isinf(got) && std::fabs(double(got) - expected) <= kRelativeTolerance * std::fabs(expected));
    } else if (std::fabs(expected) < kTiny) {
      ok = std::fabs(double(got) - expected) <= kTinyAbsoluteTolerance;
    } else {
      error = std::fabs(double(got) - expected) / std::fabs(expected);
      ok = error <= kRelativeTolerance;
      if (error > worst.error) worst = {error, inputs[i], got, expected};
    }
    if (!ok && failures++ < 5) {
      INFO(std::setprecision(9) << name << "(" << inputs[i] << " = bits 0x" << std::hex << [&] {
        uint32_t bits;
        std::memcpy(&bits, &inputs[i], sizeof bits);
        return bits;
      }() << std::dec << ") = " << got << ", expected " << expected);
      CHECK(ok);
    }
  }
  WARN(std::setprecision(9) << name << ": max relative error " << worst.error << " at x = " << worst.at << " (got " << worst.got
            << ", expected " << worst.expected << ") over " << inputs.size() << " inputs; " << failures
            << " failures");
  CHECK(failures == 0);
  return worst;
}

double sigmoid_reference(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double exp_reference(double x) { return std::exp(x); }
double tanh_reference(double x) { return std::tanh(x); }
double erf_reference(double x) { return std::erf(x); }

// The function's exact values at single inputs (the saturations).
void check_exact(const std::string& name, const std::function<Expr(Expr)>& approximation,
                 const std::vector<std::pair<float, float>>& cases) {
  std::vector<float> inputs;
  for (auto [x, expected] : cases) inputs.push_back(x);
  std::vector<float> outputs = evaluate(approximation, inputs);
  for (size_t i = 0; i < cases.size(); ++i) {
    INFO(std::setprecision(9) << name << "(" << cases[i].first << ") = " << outputs[i] << ", expected " << cases[i].second);
    CHECK((outputs[i] == cases[i].second || (std::isnan(outputs[i]) && std::isnan(cases[i].second))));
  }
}

}  // namespace

TEST_CASE("fast math: exp is within 1e-6 relative of std::exp over the float range", "[fast_math]") {
  check_against("vector_exp", vector_exp, exp_reference);
  float nan = std::numeric_limits<float>::quiet_NaN();
  check_exact("vector_exp", vector_exp,
              {{-kInf, 0.0f}, {-FLT_MAX, 0.0f}, {-104.0f, 0.0f}, {0.0f, 1.0f}, {89.0f, kInf}, {FLT_MAX, kInf},
               {kInf, kInf}, {nan, nan}});
}

TEST_CASE("fast math: tanh is within 1e-6 relative of std::tanh over the float range", "[fast_math]") {
  check_against("vector_tanh", vector_tanh, tanh_reference);
  check_exact("vector_tanh", vector_tanh,
              {{kInf, 1.0f}, {-kInf, -1.0f}, {FLT_MAX, 1.0f}, {-FLT_MAX, -1.0f}, {10.0f, 1.0f}, {-10.0f, -1.0f},
               {0.0f, 0.0f}, {1e-30f, 1e-30f}, {-1e-30f, -1e-30f}});
}

TEST_CASE("fast math: sigmoid is within 1e-6 relative of 1 / (1 + e^-x) over the float range", "[fast_math]") {
  check_against("vector_sigmoid", vector_sigmoid, sigmoid_reference);
  check_exact("vector_sigmoid", vector_sigmoid,
              {{kInf, 1.0f}, {-kInf, 0.0f}, {FLT_MAX, 1.0f}, {-FLT_MAX, 0.0f}, {0.0f, 0.5f}, {20.0f, 1.0f}});
}

TEST_CASE("fast math: erf is within 1e-6 relative of std::erf over the float range", "[fast_math]") {
  check_against("vector_erf", vector_erf, erf_reference);
  check_exact("vector_erf", vector_erf,
              {{kInf, 1.0f}, {-kInf, -1.0f}, {FLT_MAX, 1.0f}, {-FLT_MAX, -1.0f}, {5.0f, 1.0f}, {-5.0f, -1.0f},
               {0.0f, 0.0f}});
}

// They compile, vectorized, for the other targets the kernels are built for (the device code too).
TEST_CASE("fast math: the functions compile for AVX2, ARM NEON and CUDA", "[fast_math]") {
  ImageParam input(Float(32), 1, "input");
  std::string assembly = (std::filesystem::temp_directory_path() / "cnnc_test_fast_math.s").string();
  for (const char* name : {"x86-64-linux-avx2-fma-f16c-sse41", "arm-64-linux", "x86-64-linux-cuda-cuda_capability_61"}) {
    Target target(name);
    Var i("i"), block("block"), thread("thread");
    Func f("f");
    f(i) = vector_exp(input(i)) + vector_tanh(input(i)) + vector_sigmoid(input(i)) + vector_erf(input(i));
    if (target.has_gpu_feature()) f.gpu_tile(i, block, thread, 64, TailStrategy::GuardWithIf);
    else f.vectorize(i, target.natural_vector_size<float>(), TailStrategy::GuardWithIf);
    INFO(name);
    CHECK_NOTHROW(f.compile_to_assembly(assembly, {input}, "fast_math", target));
  }
  std::filesystem::remove(assembly);
}
