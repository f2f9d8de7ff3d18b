#!/usr/bin/python3
"""cnnc against PyTorch on the same network, same machine, same run.

Runs build/bench/bench_inference (cnnc) and the same network in PyTorch (the Keras MNIST CNN,
as in shared/reference/torch_seed.py) one after the other, with the same protocol: batch-1
median latency over N runs and batch-256 images/s over M batches, each best of R repetitions,
2 threads. Prints both and the ratios. PyTorch is only a peer here, never a test dependency:
  apt-get install python3-torch libopenblas0-openmp
  /usr/bin/python3 bench/compare_pytorch.py [--cnnc-bench build/bench/bench_inference] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def torch_inference(threads, repetitions, latency_runs, batches):
    import torch
    import torch.nn as nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10), nn.Softmax(dim=1))
    model.eval()
    x = torch.rand(1024, 1, 28, 28)
    best_latency, best_throughput = float("inf"), 0.0
    with torch.no_grad():
        for _ in range(100):
            model(x[:1])
        for _ in range(repetitions):
            times = []
            for i in range(latency_runs):
                xi = x[i % 1024:i % 1024 + 1]
                start = time.perf_counter()
                model(xi)
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
    return {"torch_version": torch.__version__, "infer_latency_ms_batch1": best_latency * 1e3,
            "infer_images_per_second_batch256": best_throughput}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cnnc-bench", default=os.path.join(here, "..", "build", "bench", "bench_inference"))
    parser.add_argument("--model", default=os.path.join(here, "..", "models", "mnist_cnn.yaml"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--latency-runs", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--json", help="write both results and the ratios here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cnnc.json")
        subprocess.run([args.cnnc_bench, "--model", args.model, "--threads", str(args.threads),
                        "--repetitions", str(args.repetitions), "--latency-runs", str(args.latency_runs),
                        "--batches", str(args.batches), "--json", out], check=True)
        with open(out) as f:
            cnnc = json.load(f)
    try:
        torch = torch_inference(args.threads, args.repetitions, args.latency_runs, args.batches)
    except ImportError:
        print("PyTorch is not installed (apt-get install python3-torch libopenblas0-openmp): no comparison")
        return 0
    ratios = {
        "batch256_images_per_second": cnnc["infer_images_per_second_batch256"] / torch["infer_images_per_second_batch256"],
        "batch1_latency": torch["infer_latency_ms_batch1"] / cnnc["infer_latency_ms_batch1"],
    }
    print(f"\n{'':32} {'cnnc':>12} {'PyTorch ' + torch['torch_version']:>18} {'cnnc / PyTorch':>15}")
    print(f"{'inference batch 256, images/s':32} {cnnc['infer_images_per_second_batch256']:12.0f} "
          f"{torch['infer_images_per_second_batch256']:18.0f} {ratios['batch256_images_per_second']:14.2f}x")
    print(f"{'inference batch 1, latency ms':32} {cnnc['infer_latency_ms_batch1']:12.4f} "
          f"{torch['infer_latency_ms_batch1']:18.4f} {ratios['batch1_latency']:14.2f}x faster")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cnnc": cnnc, "pytorch": torch, "ratios": ratios}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
