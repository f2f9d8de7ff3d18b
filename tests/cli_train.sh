#!/usr/bin/env bash
# cnnc train / eval / predict as a user runs them, on the tiny synthetic data set in tests/data/tiny
# (10 classes of bright squares at 10 positions).
set -u
cnnc=$1 source=$2
model=$source/models/mnist_cnn.yaml data=$source/tests/data/tiny
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAILED: $*"; exit 1; }

"$cnnc" train "$model" --data "$data" --epochs 2 --threads 2 -o "$work/w.safetensors" --metrics "$work/m.jsonl" >"$work/out" 2>&1 ||
  { cat "$work/out"; fail "train"; }
cat "$work/out"
grep -q "^Epoch 2/2$" "$work/out" || fail "no epoch line"
grep -Eq "^10/10 - [0-9.]+s - [0-9]+ images/s - loss: [0-9.]+ - accuracy: [0-9.]+ - val_loss: [0-9.]+ - val_accuracy: [0-9.]+$" "$work/out" || fail "epoch summary format"
grep -q "^Test accuracy: " "$work/out" || fail "no test accuracy"
[[ $(wc -l <"$work/m.jsonl") -eq 2 ]] || fail "metrics lines"
head -1 "$work/m.jsonl" | grep -Eq '^\{"epoch": 1, "loss": [0-9.]+, "accuracy": [0-9.]+, "val_loss": [0-9.]+, "val_accuracy": [0-9.]+, "seconds": [0-9.]+, "images_per_second": [0-9.]+, "learning_rate": [0-9.e+-]+\}$' || fail "metrics keys"
[[ -s "$work/w.safetensors" && -s "$work/w.checkpoint.safetensors" ]] || fail "weights or checkpoint missing"

# Resume to 3 epochs from the checkpoint of 2.
"$cnnc" train "$model" --data "$data" --epochs 3 --threads 2 -o "$work/w3.safetensors" --resume "$work/w.checkpoint.safetensors" >"$work/out" 2>&1 ||
  { cat "$work/out"; fail "resume"; }
grep -q "^Resuming from .*: 2 epochs and 0 batches done, step 20$" "$work/out" || { cat "$work/out"; fail "resume message"; }
grep -q "^Epoch 3/3$" "$work/out" && ! grep -q "^Epoch 1/3$" "$work/out" || fail "resume did not continue at epoch 3"

"$cnnc" eval "$model" --data "$data" --weights "$work/w3.safetensors" >"$work/out" 2>&1 || { cat "$work/out"; fail "eval"; }
grep -Eq "^loss: [0-9.]+ - accuracy: [0-9.]+$" "$work/out" || fail "eval output"
grep -q "^Confusion matrix" "$work/out" || fail "no confusion matrix"
"$cnnc" predict -q "$model" --weights "$work/w3.safetensors" "$data/t10k-images-idx3-ubyte.gz" -n 2 >"$work/out" || fail "predict"
[[ $(wc -l <"$work/out") -eq 2 ]] || fail "predict lines"

# Errors: exit status 1 and a message naming what is wrong.
"$cnnc" train "$model" --data "$work/nowhere" 2>"$work/err"; status=$?
[[ $status -eq 1 ]] && grep -q "nowhere: error: no train-images-idx3-ubyte\[.gz\] here" "$work/err" || { cat "$work/err"; fail "missing data: $status"; }
"$cnnc" train "$model" --data "$data" --resume "$work/w3.safetensors" -o "$work/x.safetensors" 2>"$work/err" >/dev/null; status=$?
[[ $status -eq 1 ]] && grep -q "not a cnnc checkpoint" "$work/err" || { cat "$work/err"; fail "weights as checkpoint: $status"; }
"$cnnc" train "$source/tests/models/ops_dag.yaml" --data "$data" 2>"$work/err" >/dev/null; status=$?
[[ $status -eq 1 ]] && grep -q "ops_dag.yaml:.*: error: .*end in a softmax" "$work/err" || { cat "$work/err"; fail "untrainable: $status"; }
touch "$work/a_file"
"$cnnc" build "$model" -q -o "$work/a_file/package" 2>"$work/err"; status=$?
[[ $status -eq 1 ]] && grep -q "a_file/package: error: Not a directory" "$work/err" || { cat "$work/err"; fail "output under a file: $status"; }
echo ok
