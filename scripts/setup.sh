#!/usr/bin/env bash
# Installs every Debian 12 package cnnc needs to build, test and train. Idempotent and
# non-interactive; run it as root (sudo is used only when it is not root and sudo exists).
#   bash scripts/setup.sh           install what is missing
#   bash scripts/setup.sh --check   exit 0 if everything is installed, 1 otherwise (installs nothing)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config  # toolchain
  libhalide14-0-dev                             # Halide 14 (pulls LLVM 14): code generation
  libpng-dev libjpeg-dev                        # ... whose CMake package asks for PNG and JPEG
  libyaml-cpp-dev                               # model files
  libfmt-dev                                    # formatting
  libcli11-dev                                  # command line
  nlohmann-json3-dev                            # manifest.json, metrics
  libsqlite3-dev                                # tuning database
  zlib1g-dev                                    # gzipped IDX data
  libstb-dev                                    # PNG input for predict
  libonnx-dev libprotobuf-dev                   # ONNX import/export (libonnx-dev lacks the protobuf headers' dependency)
  catch2                                        # tests (v2.13)
  libonnx-testdata                              # ONNX's conformance cases, run by the tests
  libopenmpi-dev openmpi-bin                    # data-parallel training under mpirun (and its tests)
  g++-aarch64-linux-gnu qemu-user               # ARM64 cross build and run
  dataset-fashion-mnist                         # the real training data
  python3                                       # scripts/ (e.g. idx-to-png-folders.py, used by a test)
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if [[ "${1:-}" == "--check" ]]; then
  if ((${#missing[@]})); then echo "missing packages: ${missing[*]}"; exit 1; fi
  exit 0
fi
if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages are installed"
  exit 0
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: run as root (missing: ${missing[*]})" >&2; exit 1; }
  as_root=(sudo)
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
