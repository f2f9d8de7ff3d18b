// Vectorizable exp, tanh, sigmoid and erf (contract and measured errors: fast_math.h).
#include "codegen/fast_math.h"

#include <cmath>
#include <vector>

namespace cnnc {

namespace {

// c[0] x^(k-1) + ... + c[k-1], by Horner's rule (LLVM contracts each step into an FMA where
// the target has one).
Expr horner(Expr x, const std::vector<float>& coefficients) {
  Expr sum;
  for (float c : coefficients) sum = sum.defined() ? sum * x + c : Expr(c);
  return sum;
}

// 2^n for an int32 n in [-126, 127], built from its exponent bits.
Expr power_of_two(Expr n) { return reinterpret(Float(32), (n + 127) << 23); }

// erf's Maclaurin series 2/sqrt(pi) sum_k (-1)^k x^(2k+1) / (k! (2k+1)) divided by x, as a
// polynomial in x^2 to k = 9, highest power first.
std::vector<float> erf_series() {
  std::vector<float> series;
  double factorial = 1;
  for (int k = 0; k <= 9; ++k) {
    if (k > 0) factorial *= k;
    series.insert(series.begin(), float((k % 2 ? -1 : 1) * M_2_SQRTPI / (factorial * (2 * k + 1))));
  }
  return series;
}

}  // namespace

Expr vector_exp(Expr x) {
  // Beyond [-104, 89] e^x is 0 or inf in float; clamping keeps n in [-150, 128].
  Expr clamped = clamp(x, -104.0f, 89.0f);
  Expr n = round(clamped * 1.44269504088896341f);
  // ln 2 = 0.693359375 - 2.12194440e-4 (+ ~5e-12): n * 0.693359375 is exact for |n| < 2^15, so
  // r is x - n ln 2 to about a float ulp (Cody and Waite).
  Expr r = clamped - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  // e^r = 1 + r + r^2 p(r) on |r| <= ln2/2 (Cephes expf's minimax coefficients).
  Expr p = horner(r, {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f,
                      5.0000001201e-1f});
  Expr y = p * (r * r) + r + 1.0f;
  // 2^n as 2^(n/2) 2^(n - n/2): each factor is a normal float for n in [-150, 128], and the
  // product rounds once into the denormals or overflows to inf where e^x does.
  Expr whole = cast<int32_t>(n);
  Expr half = whole >> 1;
  Expr value = y * power_of_two(half) * power_of_two(whole - half);
  return select(is_nan(x), x, value);
}

Expr vector_tanh(Expr x) {
  Expr magnitude = abs(x);
  // |x| < 0.625: x + x^3 q(x^2) (Cephes tanhf). Evaluated on a clamped x so that the branch not
  // taken stays finite.
  Expr small = clamp(x, -0.625f, 0.625f);
  Expr squared = small * small;
  Expr odd = horner(squared, {-5.70498872745e-3f, 2.06390887954e-2f, -5.37397155531e-2f, 1.33314422036e-1f,
                              -3.33332819422e-1f}) * squared * small + small;
  // Else 1 - 2 / (e^(2|x|) + 1): e^(2|x|) = inf for |x| > 44 gives exactly 1.
  Expr large = 1.0f - 2.0f / (vector_exp(2.0f * magnitude) + 1.0f);
  return select(magnitude < 0.625f, odd, select(x < 0.0f, -large, large));
}

Expr vector_sigmoid(Expr x) { return 1.0f / (1.0f + vector_exp(-x)); }

Expr vector_erf(Expr x) {
  // erf(x) rounds to ±1 in float beyond |x| = 3.92.
  Expr magnitude = min(abs(x), 4.0f);
  // |x| < 1: the Maclaurin series to x^19 (erf_series); its first omitted term is below
  // 1.3e-8 erf(x) there. Evaluated on a clamped x so that the branch not taken stays finite.
  Expr small = clamp(x, -1.0f, 1.0f);
  static const std::vector<float> series = erf_series();
  Expr odd = small * horner(small * small, series);
  // |x| >= 1: 1 - t q(t) e^(-x^2), t = 1 / (1 + 0.3275911 |x|) (A&S 7.1.26, absolute error
  // <= 1.5e-7, at most 1.8e-7 relative to erf(x) >= 0.84).
  Expr t = 1.0f / (1.0f + 0.3275911f * magnitude);
  Expr q = horner(t, {1.061405429f, -1.453152027f, 1.421413741f, -0.284496736f, 0.254829592f}) * t;
  Expr large = 1.0f - q * vector_exp(-(magnitude * magnitude));
  return select(magnitude < 1.0f, odd, select(x < 0.0f, -large, large));
}

}  // namespace cnnc
