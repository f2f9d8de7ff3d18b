#!/usr/bin/python3
"""Loads weights written by `cnnc train` into the equivalent PyTorch model (the reference
network, models/mnist_cnn.yaml) and checks that both give the same answers.

    /usr/bin/python3 scripts/load_in_pytorch.py mnist_cnn.safetensors [--data DIR] [--cnnc build/cnnc]

Needs python3-torch and python3-numpy (Debian); not part of the tests. The loading code is the
snippet documented in docs/checkpoints.md.
"""
import argparse
import gzip
import json
import os
import struct
import subprocess

import numpy as np
import torch
import torch.nn as nn


# --- the snippet of docs/checkpoints.md -------------------------------------------------------
def load_safetensors(path):
    """Reads a safetensors file with the standard library and NumPy alone."""
    with open(path, "rb") as f:
        header_size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_size))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[begin:end], dtype="<f4").reshape(info["shape"]).copy()
    return tensors


def mnist_cnn_in_pytorch(weights):
    """The Keras MNIST CNN in PyTorch (NCHW) with cnnc's weights (Keras layouts)."""
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10), nn.Softmax(dim=1))
    t = torch.from_numpy
    conv = lambda k: t(k).permute(3, 2, 0, 1).contiguous()      # [kh, kw, in, out] -> [out, in, kh, kw]
    with torch.no_grad():
        model[0].weight.copy_(conv(weights["conv2d.kernel"]))
        model[0].bias.copy_(t(weights["conv2d.bias"]))
        model[3].weight.copy_(conv(weights["conv2d_1.kernel"]))
        model[3].bias.copy_(t(weights["conv2d_1.bias"]))
        # Keras flattens (H, W, C), PyTorch (C, H, W): reorder the first dense layer's input rows.
        dense = weights["dense.kernel"].reshape(5, 5, 64, 128).transpose(2, 0, 1, 3).reshape(1600, 128)
        model[7].weight.copy_(t(dense.T.copy()))                  # [in, out] -> [out, in]
        model[7].bias.copy_(t(weights["dense.bias"]))
        model[9].weight.copy_(t(weights["dense_1.kernel"].T.copy()))
        model[9].bias.copy_(t(weights["dense_1.bias"]))
    return model.eval()
# ----------------------------------------------------------------------------------------------


def read_idx(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--cnnc", default=os.path.join(os.path.dirname(__file__), "..", "build", "cnnc"))
    parser.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "..", "models", "mnist_cnn.yaml"))
    args = parser.parse_args()

    model = mnist_cnn_in_pytorch(load_safetensors(args.weights))
    images = read_idx(os.path.join(args.data, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz"))
    with torch.no_grad():
        probabilities = model(torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)).numpy()
    accuracy = float((probabilities.argmax(1) == labels).mean())
    print(f"PyTorch with the cnnc weights: test accuracy {accuracy:.4f} on {len(labels)} images")

    # cnnc's own answer on the first images, from `cnnc predict`.
    count = 20
    out = subprocess.run([args.cnnc, "predict", "-q", args.model, "--weights", args.weights, "-k", "1", "-n", str(count),
                          os.path.join(args.data, "t10k-images-idx3-ubyte.gz")], check=True, capture_output=True, text=True)
    worst = 0.0
    for i, line in enumerate(out.stdout.splitlines()):
        cls, prob = line.rsplit(": ", 1)[1].split(" (")
        prob = float(prob.rstrip(")"))
        if int(cls) != int(probabilities[i].argmax()):
            raise SystemExit(f"image {i}: cnnc says class {cls}, PyTorch {probabilities[i].argmax()}")
        worst = max(worst, abs(prob - float(probabilities[i].max())))
    print(f"cnnc predict and PyTorch agree on the top class of the first {count} images; "
          f"largest probability difference {worst:.2e}")


if __name__ == "__main__":
    main()
