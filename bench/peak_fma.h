// This machine's FP32 FMA peak, measured (not assumed): each thread runs independent chains of
// AVX2 FMAs, enough of them to hide the instruction latency.
#pragma once

// GFLOP/s with `threads` threads, best of `repetitions`, with the widest FMA the CPU has (AVX-512
// where present, else AVX2). 0 where the CPU lacks AVX2/FMA or is not x86-64.
double measure_fma_peak_gflops(int threads, int repetitions = 3);
