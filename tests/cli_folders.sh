#!/usr/bin/env bash
# Training on a folder of PNG images as a user does it: Fashion-MNIST written as PNG folders by
# scripts/idx-to-png-folders.py, `cnnc train --data DIR`, then predict and eval print the class
# names; a corrupt image stops training with its path, or is skipped with --skip-bad-images.
set -u
cnnc=$1 source=$2
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
python3 "$source/scripts/idx-to-png-folders.py" "$dir/data" --train-limit 640 --test-limit 160 || fail "writing the PNG folders"
model=$source/models/mnist_cnn.yaml
"$cnnc" train "$model" --data "$dir/data" --epochs 1 -o "$dir/w.safetensors" >"$dir/train.txt" 2>&1 \
  || { cat "$dir/train.txt"; fail "train on image folders"; }
grep -q "on 640 images from $dir/data (10 classes: Ankle boot, Bag, Coat" "$dir/train.txt" || { cat "$dir/train.txt"; fail "the data line"; }
image=$(ls "$dir/data/test/Sneaker" | head -1)
out=$("$cnnc" predict -q "$model" -w "$dir/w.safetensors" "$dir/data/test/Sneaker/$image") || fail "predict"
echo "$out"
[[ "$out" =~ :\ (T-shirt-top|Trouser|Pullover|Dress|Coat|Sandal|Shirt|Sneaker|Bag|Ankle\ boot)\ \(0\.[0-9]{4}\), ]] || fail "predict does not name the class"
"$cnnc" eval "$model" -w "$dir/w.safetensors" --data "$dir/data" >"$dir/eval.txt" || fail "eval"
grep -q "^9 Trouser" "$dir/eval.txt" || { cat "$dir/eval.txt"; fail "eval's confusion matrix is not labelled"; }
echo "not an image" >"$dir/data/train/Bag/broken.png"
"$cnnc" train "$model" --data "$dir/data" --epochs 1 -o "$dir/w2.safetensors" >"$dir/out.txt" 2>&1; status=$?
[[ $status -eq 1 ]] && grep -q "broken.png: error:" "$dir/out.txt" || { cat "$dir/out.txt"; fail "a corrupt image: status $status"; }
"$cnnc" train "$model" --data "$dir/data" --epochs 1 --skip-bad-images -o "$dir/w2.safetensors" >"$dir/out.txt" 2>&1 \
  || { cat "$dir/out.txt"; fail "--skip-bad-images"; }
grep -q "skipped .*broken.png" "$dir/out.txt" || fail "the skipped image is not reported"
echo ok
