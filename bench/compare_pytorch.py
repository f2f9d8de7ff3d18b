#!/usr/bin/python3
"""cnnc against PyTorch on the reference network, same machine, same run.

Runs `cnnc bench models/mnist_cnn.yaml --json` (cnnc), then the same network in PyTorch (as in
shared/reference/torch_seed.py: Keras MNIST CNN, Adam, cross-entropy) with the same protocol:
training images/s at batch 32 over N steps, batch-1 median latency, batch-256 images/s; each the
best of R repetitions, 2 threads. The two run one after the other, never at once. Prints both
and the ratios. PyTorch is only a peer here, never a test dependency:
  apt-get install python3-torch libopenblas0-openmp
  /usr/bin/python3 bench/compare_pytorch.py [--cnnc build/cnnc] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from torch_timing import best_training_rate


def torch_measure(threads, repetitions, steps, batch_size, latency_runs, batches):
    import torch
    import torch.nn as nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def make_model():
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10))

    x = torch.rand(1024, 1, 28, 28)
    y = torch.randint(0, 10, (1024,))
    result = {"torch_version": torch.__version__}

    # Training: Adam + cross-entropy on logits (the stable fused form), as torch_seed.py does.
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()

    result["train_images_per_second"] = best_training_rate(model, optimizer, loss_fn, x, y, batch_size, steps,
                                                           repetitions, warmup=10)

    # Inference (with the softmax, as the Keras model's output).
    model = nn.Sequential(make_model(), nn.Softmax(dim=1)).eval()
    best_latency, best_throughput = float("inf"), 0.0
    with torch.no_grad():
        for _ in range(100):
            model(x[:1])
        for _ in range(repetitions):
            times = []
            for i in range(latency_runs):
                start = time.perf_counter()
                model(x[i % 1024:i % 1024 + 1])
                times.append(time.perf_counter() - start)
            times.sort()
            best_latency = min(best_latency, times[len(times) // 2])
            for _ in range(3):
                model(x[:256])
            start = time.perf_counter()
            for i in range(batches):
                s = (i * 256) % (1024 - 256)
                model(x[s:s + 256])
            best_throughput = max(best_throughput, batches * 256 / (time.perf_counter() - start))
    result["infer_latency_ms_batch1"] = best_latency * 1e3
    result["infer_images_per_second_batch256"] = best_throughput
    return result


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cnnc", default=os.path.join(here, "..", "build", "cnnc"))
    parser.add_argument("--model", default=os.path.join(here, "..", "models", "mnist_cnn.yaml"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--latency-runs", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--json", help="write both results and the ratios here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cnnc.json")
        subprocess.run([args.cnnc, "bench", args.model, "--threads", str(args.threads),
                        "--repetitions", str(args.repetitions), "--steps", str(args.steps),
                        "--batch-size", str(args.batch_size), "--latency-runs", str(args.latency_runs),
                        "--batches", str(args.batches), "--json", out], check=True)
        with open(out) as f:
            cnnc = json.load(f)
    try:
        torch = torch_measure(args.threads, args.repetitions, args.steps, args.batch_size, args.latency_runs, args.batches)
    except ImportError:
        print("PyTorch is not installed (apt-get install python3-torch libopenblas0-openmp): no comparison")
        return 0
    ratios = {
        "train_images_per_second": cnnc["train_images_per_second"] / torch["train_images_per_second"],
        "infer_images_per_second_batch256": cnnc["infer_images_per_second_batch256"] / torch["infer_images_per_second_batch256"],
        "infer_latency_batch1_speedup": torch["infer_latency_ms_batch1"] / cnnc["infer_latency_ms_batch1"],
    }
    print(f"\n{'reference network, ' + str(args.threads) + ' threads':36} {'cnnc':>10} {'PyTorch ' + torch['torch_version']:>18} {'ratio':>8}")
    print(f"{'training, batch ' + str(args.batch_size) + ', images/s':36} {cnnc['train_images_per_second']:10.0f} "
          f"{torch['train_images_per_second']:18.0f} {ratios['train_images_per_second']:7.2f}x")
    print(f"{'inference, batch 256, images/s':36} {cnnc['infer_images_per_second_batch256']:10.0f} "
          f"{torch['infer_images_per_second_batch256']:18.0f} {ratios['infer_images_per_second_batch256']:7.2f}x")
    print(f"{'inference, batch 1, median ms':36} {cnnc['infer_latency_ms_batch1']:10.4f} "
          f"{torch['infer_latency_ms_batch1']:18.4f} {ratios['infer_latency_batch1_speedup']:7.2f}x faster")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cnnc": cnnc, "pytorch": torch, "ratios": ratios}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
