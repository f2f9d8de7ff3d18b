#!/usr/bin/env bash
# Draws random networks with new seeds and checks each one (every kernel against the reference,
# one training step's gradients against finite differences) for as long as asked:
#   bash scripts/fuzz-nets.sh --seconds 3600 [--seed S] [--keep DIR] [--timeout S]
# Failing models are written to DIR (default fuzz-failures/) with the failure as a comment;
# reduce each to a small model and keep it as tests/models/regress_*.yaml. Builds cnnc first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " != *" --seed "* ]]; then set -- "$@" --seed "$(date +%s)"; fi
cmake -S . -B build -G Ninja >/dev/null
cmake --build build --target fuzz_nets >/dev/null
exec build/tests/fuzz_nets "$@"
