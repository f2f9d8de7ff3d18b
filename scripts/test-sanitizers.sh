#!/usr/bin/env bash
# Builds cnnc, libcnnrt and the tests with AddressSanitizer + UndefinedBehaviorSanitizer in
# build-asan/ and runs the whole test suite there. Any report fails the run. Takes about three
# times as long as scripts/test.sh; run it before changing memory handling in the compiler or
# the runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --check >/dev/null || bash scripts/setup.sh
cmake -S . -B build-asan -G Ninja -DCNNC_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-asan
cd build-asan
# LLVM (inside libHalide) keeps global allocations until exit: leaks are not checked. The
# tuner's tests make candidates segfault on purpose and expect them to die by the signal, so
# ASan leaves SIGSEGV alone (handle_segv=0): a real one still fails the test that meets it.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:handle_segv=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --output-on-failure -j2 --timeout 1800 "$@"
