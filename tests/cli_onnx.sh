#!/usr/bin/env bash
# ONNX on the command line as a user runs it: export a zoo model, use the .onnx file wherever a
# model goes (check, predict with its own weights, train from them), import it back to YAML and
# safetensors with the same predictions, and a bad file is a clear error with exit status 1.
set -u
cnnc=$1 source=$2
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
model=$source/models/mnist_cnn.yaml image=$source/tests/data/seven.png

"$cnnc" export "$model" -o "$dir/mnist_cnn.onnx" || fail "export"
"$cnnc" check -q "$dir/mnist_cnn.onnx" || fail "check of the .onnx file"
# Without --weights, predict uses the .onnx file's weights: the exported initial weights of seed 0,
# the same as predict on the YAML model without --weights.
from_yaml=$("$cnnc" predict -q "$model" "$image" --digits 6) || fail "predict (yaml)"
from_onnx=$("$cnnc" predict -q "$dir/mnist_cnn.onnx" "$image" --digits 6) || fail "predict (onnx)"
echo "$from_yaml"; echo "$from_onnx"
[[ "${from_yaml#*: }" == "${from_onnx#*: }" ]] || fail "the .onnx file predicts differently"
"$cnnc" import -q "$dir/mnist_cnn.onnx" -o "$dir/imported.yaml" -w "$dir/imported.safetensors" || fail "import"
from_import=$("$cnnc" predict -q "$dir/imported.yaml" -w "$dir/imported.safetensors" "$image" --digits 6) || fail "predict (imported)"
[[ "${from_yaml#*: }" == "${from_import#*: }" ]] || fail "the imported model predicts differently"
# Training starts from the file's weights.
"$cnnc" train "$dir/mnist_cnn.onnx" --train-limit 64 --test-limit 32 --batch-size 32 -o "$dir/trained.safetensors" \
  >"$dir/train.txt" 2>&1 || { cat "$dir/train.txt"; fail "train from the .onnx file"; }
grep -q "Starting from the weights in" "$dir/train.txt" || fail "train did not start from the file's weights"
# Bad files.
head -c 1000 "$dir/mnist_cnn.onnx" >"$dir/cut.onnx"
"$cnnc" check "$dir/cut.onnx" 2>"$dir/err.txt"; status=$?
[[ $status -eq 1 ]] && grep -q "cut.onnx: error: not an ONNX model" "$dir/err.txt" || { cat "$dir/err.txt"; fail "truncated file: status $status"; }
"$cnnc" import "$source/README.md.onnx" 2>"$dir/err.txt"; status=$?
[[ $status -eq 1 ]] && grep -q "cannot open" "$dir/err.txt" || { cat "$dir/err.txt"; fail "missing file: status $status"; }
echo ok
