#!/usr/bin/env bash
# Builds cnnc and runs the whole test suite (ctest). Installs missing packages first.
# In CI (CI=true) warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --check >/dev/null || bash scripts/setup.sh
werror=OFF
[[ "${CI:-}" == "true" ]] && werror=ON
cmake -S . -B build -G Ninja -DCNNC_WERROR=$werror >/dev/null
cmake --build build
cd build
ctest --output-on-failure -j2 --timeout 900
