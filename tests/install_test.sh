#!/usr/bin/env bash
# `cmake --install` as a user runs it: installs the build in $1 (the source tree is $2) into a
# temporary prefix, moves the prefix elsewhere (nothing may depend on where it was installed),
# then builds tests/install/, a project of its own, against that prefix alone: find_package(cnnc),
# cnnc_add_model with the installed cnnc, cnnc::cnnrt. Then compiles and links a program with
# pkg-config's flags for cnnrt. Everything lives in a temporary directory, removed at the end.
set -euo pipefail
build=$(cd "$1" && pwd) source=$(cd "$2" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
run() {  # run LOG COMMAND...: the command's output goes to LOG, shown if it fails
  local log=$1; shift
  "$@" >"$log" 2>&1 || { cat "$log"; fail "$*"; }
}

# A sanitized build (scripts/test-sanitizers.sh) installs instrumented libraries: link with the same.
sanitize=
grep -q '^CNNC_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" && sanitize=-fsanitize=address,undefined

run "$tmp/install.log" cmake --install "$build" --prefix "$tmp/staging"
mv "$tmp/staging" "$tmp/prefix"
prefix=$tmp/prefix
echo "installed:"; (cd "$prefix" && find . -type f | sort | sed 's|^\./|  |')

config=$(find "$prefix" -name cnncConfig.cmake)
libdir=$(dirname "$(find "$prefix" -name libcnnrt.a)")
[[ -f "$prefix/bin/cnnc" && -f "$libdir/pkgconfig/cnnrt.pc" && -f "$(dirname "$config")/cnncConfigVersion.cmake" &&
   -f "$(dirname "$config")/CnncModel.cmake" && -f "$prefix/include/cnnc/package.h" &&
   -f "$prefix/include/cnnc/codegen/c_api.def" && -f "$prefix/include/cnnc/support/diagnostics.h" ]] ||
  fail "missing installed files"
# No installed text file names the source tree, the build tree or the prefix it was installed to.
if grep -rlI -e "$source" -e "$build" -e "$tmp/staging" "$prefix"; then fail "the files above name a build-time path"; fi

# The project of tests/install, configured with nothing of cnnc's but the prefix.
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
flags=()
[[ -n "$sanitize" ]] && flags=("-DCMAKE_CXX_FLAGS=$sanitize" "-DCMAKE_EXE_LINKER_FLAGS=$sanitize")
run "$tmp/configure.log" cmake -S "$source/tests/install" -B "$tmp/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -DCNNC_TEST_MODEL="$source/models/mnist_cnn.yaml" "${flags[@]}"
grep -E "cnnc [0-9]+\.[0-9]+\.[0-9]+: $prefix/bin/cnnc\$" "$tmp/configure.log" || { cat "$tmp/configure.log"; fail "cnnc not found in the prefix"; }
run "$tmp/build.log" cmake --build "$tmp/build" --verbose
grep -q "$prefix/bin/cnnc build $source/models/mnist_cnn.yaml" "$tmp/build.log" ||
  { cat "$tmp/build.log"; fail "the model was not compiled by the installed cnnc"; }

c_api=$("$tmp/build/c_api") || fail "c_api"
echo "$c_api"
[[ "$c_api" =~ ^c_api:\ [0-9]+\ floats,\ probabilities(\ 0\.[0-9]{6}){10}$ ]] || fail "c_api: unexpected output"

# The runtime library on a package built by the installed cnnc itself.
run "$tmp/cnnc-build.log" "$prefix/bin/cnnc" build "$source/models/mnist_cnn.yaml" --name mnist_cnn -o "$tmp/package" --quiet
idx=$source/tests/data/two-images-idx3-ubyte.gz
runtime=$("$tmp/build/runtime" "$tmp/package" "$tmp/weights.safetensors" "$idx") || { echo "$runtime"; fail "runtime"; }
echo "$runtime"
[[ "$(head -1 <<<"$runtime")" == "runtime: ${c_api#c_api: }" ]] || fail "libcnnrt and the C API disagree"
grep -qx "runtime: 8 tensors in $tmp/weights.safetensors" <<<"$runtime" || fail "runtime: weights"
grep -qx "runtime: 2 images in $idx" <<<"$runtime" || fail "runtime: IDX images"
grep -qx "runtime: $tmp/package/missing/manifest.json: error: cannot open the package manifest; build the package with cnnc build" \
  <<<"$runtime" || fail "runtime: the error of a missing package"

# pkg-config: the flags for a program of one file using the runtime (gzipped IDX data, a package).
export PKG_CONFIG_PATH=$libdir/pkgconfig
echo "pkg-config cnnrt $(pkg-config --modversion cnnrt): $(pkg-config --cflags --libs cnnrt)"
cat >"$tmp/pc.cpp" <<'CPP'
#include <cstdio>
#include <vector>

#include <cnnc/data.h>
#include <cnnc/package.h>
#include <cnnc/trainer.h>
#include <cnnc/weights.h>

int main(int argc, char** argv) {
  cnnc::rt::ImageSet images = cnnc::rt::read_idx_images(argv[2]);
  cnnc::rt::Network network(cnnc::rt::Package::open(argv[1]));
  cnnc::rt::init_params(network, 42);
  std::vector<float> input(network.package().input_elements());
  cnnc::rt::to_floats(images, 0, 1, input.data());
  std::printf("pkg-config: %lld images, %zu scores\n", (long long)images.count, network.forward(input, 1).size());
}
CPP
# shellcheck disable=SC2046
run "$tmp/pc.log" "${CXX:-c++}" -std=c++17 $sanitize "$tmp/pc.cpp" -o "$tmp/pc" $(pkg-config --cflags --libs cnnrt)
pc=$("$tmp/pc" "$tmp/package" "$idx") || fail "pc"
echo "$pc"
[[ "$pc" == "pkg-config: 2 images, 10 scores" ]] || fail "pkg-config: unexpected output"
echo ok
