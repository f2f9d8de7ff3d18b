// Vectorizable float transcendentals for the kernels: exp, tanh, sigmoid and erf built from
// arithmetic, select, min/max, round and bit casts only, so that they vectorize on AVX2, AVX-512
// and NEON and compile for CUDA, where Halide's own exp/tanh/erf lower to scalar libm calls
// (Halide::fast_exp vectorizes too but is far less exact). Float Exprs in, float Exprs out.
//
// Maximum errors, measured by tests/test_fast_math.cpp (JIT, host target: AVX-512 with FMA)
// against the double-precision std:: functions over 42.8 million inputs: every 101st float bit
// pattern (NaNs skipped), a sweep of [-20, 20] in steps of 1e-4, and the 16 floats either side of
// each edge (0, FLT_MIN, FLT_MAX, the denormals, exp's overflow and underflow thresholds, the
// switch points). Relative error where |reference| >= 1e-30 (an absolute error <= 1e-36 below):
//   vector_exp      8.30e-8  (at x = -59.955)
//   vector_tanh     1.37e-7  (at x = 0.63069, just past the switch at 0.625)
//   vector_sigmoid  2.82e-7  (at x = -67.632, where sigmoid(x) is about e^x)
//   vector_erf      2.14e-7  (at x = -1.0021, just past the switch at 1)
// (One ulp is 6.0e-8 to 1.19e-7 of a float's value.)
// For finite inputs none returns NaN; at the infinities they saturate exactly: exp(-inf) = 0,
// exp(inf) = inf, tanh(±inf) = ±1, sigmoid(-inf) = 0, sigmoid(inf) = 1, erf(±inf) = ±1.
// exp of NaN is NaN. Methods: fast_math.cpp.
#pragma once

#include "codegen/halide_common.h"

namespace cnnc {

// e^x: Cody–Waite reduction to r = x - n ln2 with |r| <= ln2/2, a degree-7 polynomial for e^r,
// and 2^n applied as two exactly built powers of two so that results near the float range's
// ends (denormal or near FLT_MAX) are right. x > 88.72... gives inf; x < -103.97... gives 0.
Expr vector_exp(Expr x);

// tanh(x): an odd polynomial for |x| < 0.625 (so tanh(x) = x stays exact for tiny x), else
// sign(x) (1 - 2 / (e^(2|x|) + 1)) with vector_exp, which saturates to ±1.
Expr vector_tanh(Expr x);

// The logistic function 1 / (1 + e^(-x)) with vector_exp.
Expr vector_sigmoid(Expr x);

// erf(x): the Maclaurin series to x^19 for |x| < 1, else sign(x) (1 - q(t) e^(-x^2)) with
// t = 1 / (1 + p |x|) (Abramowitz & Stegun 7.1.26), |x| clamped to 4 where erf is 1 in float.
Expr vector_erf(Expr x);

}  // namespace cnnc
