#!/usr/bin/python3
"""A network defined and trained in PyTorch, exported with torch.onnx.export, run by cnnc.

    /usr/bin/python3 examples/onnx/pytorch_to_cnnc.py [--cnnc build/cnnc] [--out /tmp/cnnc-onnx]

Trains a small CNN (convolutions with padding, batch normalization, max pooling, dropout,
flatten, two linear layers, softmax) on Fashion-MNIST for one short epoch, exports it to ONNX
(opset 13), then runs `cnnc predict MODEL.onnx` on the first test images and compares cnnc's
probabilities with PyTorch's. Exits 1 if any differs by more than 1e-4. Needs python3-torch and
python3-onnx (Debian 12); PyTorch is not part of cnnc's test suite, this is a documented cross-check
(docs/onnx.md).
"""
import argparse
import gzip
import os
import re
import subprocess
import sys

import numpy as np
import torch
from torch import nn

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(name):
    with gzip.open(os.path.join(DATA, name + ".gz")) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 6 * 6, 64), nn.ReLU(), nn.Linear(64, 10), nn.Softmax(dim=1))

    def forward(self, x):
        return self.classifier(self.features(x))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cnnc", default="build/cnnc")
    parser.add_argument("--out", default="/tmp/cnnc-onnx")
    parser.add_argument("--images", type=int, default=100, help="test images to compare")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)

    images = torch.tensor(read_idx("train-images-idx3-ubyte"), dtype=torch.float32).unsqueeze(1) / 255
    labels = torch.tensor(read_idx("train-labels-idx1-ubyte"), dtype=torch.long)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    steps = 600  # one pass over 38,400 images at batch 64: enough to be a trained network
    for step in range(steps):
        batch = torch.randint(0, images.shape[0], (64,))
        loss = nn.functional.nll_loss(torch.log(model(images[batch]) + 1e-9), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()

    test = torch.tensor(read_idx("t10k-images-idx3-ubyte"), dtype=torch.float32).unsqueeze(1) / 255
    test_labels = read_idx("t10k-labels-idx1-ubyte")
    with torch.no_grad():
        accuracy = (model(test).argmax(1).numpy() == test_labels).mean()
        expected = model(test[:args.images]).numpy()
    onnx_path = os.path.join(args.out, "fashion_torch.onnx")
    torch.onnx.export(model, test[:1], onnx_path, opset_version=13, input_names=["image"],
                      output_names=["probabilities"], dynamic_axes={"image": {0: "batch"}})
    print(f"PyTorch: test accuracy {accuracy:.4f} after {steps} steps; exported {onnx_path}")

    command = [args.cnnc, "predict", onnx_path, os.path.join(DATA, "t10k-images-idx3-ubyte.gz"),
               "-n", str(args.images), "-k", "10", "--digits", "8", "-q"]
    print("$ " + " ".join(command))
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    worst = 0.0
    lines = output.strip().split("\n")
    for i, line in enumerate(lines):
        got = np.zeros(10)
        for cls, p in re.findall(r"(\d+) \(([0-9.]+)\)", line.split(": ", 1)[1]):
            got[int(cls)] = float(p)
        worst = max(worst, float(np.abs(got - expected[i]).max()))
    print(lines[0])
    print(f"cnnc vs PyTorch on {len(lines)} test images: largest difference in a probability {worst:.2e}")
    if len(lines) != args.images or worst > 1e-4:
        print("FAILED: more than 1e-4 apart")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
