#!/usr/bin/env bash
# cnnc predict as a user runs it: a PNG and the same image in an IDX file give the same answer,
# and a bad input is a clear error with exit status 1.
set -u
cnnc=$1 source=$2
png=$("$cnnc" predict -q "$source/models/mnist_cnn.yaml" "$source/tests/data/seven.png") || { echo "predict failed"; exit 1; }
idx=$("$cnnc" predict -q "$source/models/mnist_cnn.yaml" "$source/tests/data/two-images-idx3-ubyte.gz" -n 1) || exit 1
echo "$png"; echo "$idx"
[[ "${png#*: }" == "${idx#*: }" ]] || { echo "PNG and IDX predictions differ"; exit 1; }
[[ "$png" =~ ^.*seven.png:\ [0-9]\ \(0\.[0-9]{4}\),\ [0-9]\ \(0\.[0-9]{4}\),\ [0-9]\ \(0\.[0-9]{4}\)$ ]] || { echo "unexpected format"; exit 1; }
"$cnnc" predict -q "$source/models/mnist_cnn.yaml" "$source/README.md" 2>err.txt; status=$?
[[ $status -eq 1 ]] && grep -q "README.md: error: cannot read the image" err.txt || { echo "bad image: status $status"; cat err.txt; exit 1; }
"$cnnc" predict -q "$source/models/lenet5.yaml" "$source/tests/data/seven.png" --weights "$source/tests/data/seven.png" 2>err.txt; status=$?
[[ $status -eq 1 ]] && grep -q "not a safetensors file" err.txt || { echo "bad weights: status $status"; cat err.txt; exit 1; }
echo ok
