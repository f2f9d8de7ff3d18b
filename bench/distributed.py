#!/usr/bin/env python3
"""Data-parallel training speed: N ranks x 1 thread against 1 rank x 1 thread (docs/distributed.md).

For each model: `cnnc train` for one epoch on the first --images Fashion-MNIST images, with
  - 1 process, 1 thread                      (the baseline)
  - 1 process, --threads T (T = ranks)       (the other way to use the same cores)
  - mpirun -np N, 1 thread each, buckets     (gradients reduced while backward runs)
  - mpirun -np N, 1 thread each, one bucket  (--bucket-kib 0: reduced after backward)
  - mpirun -np N, 1 thread each, batch N x B (each rank the model's batch B: weak scaling)
each the best of --repeat runs (the machines here are shared and noisy), and prints training
images/s, the speed-ups against the baseline, the seconds ranks waited for gradients after
backward, what the scaling model needs (parameters, bytes all-reduced per step, compute seconds
per image) and its predictions for 8, 64 and 512 ranks on 10 and 100 Gbit/s networks (the model
and its assumptions: predicted_speedup below, and docs/distributed.md). Only the training loop is timed (the epoch's
images/s from --metrics; validation and compilation are outside it).

  python3 bench/distributed.py [--cnnc build/cnnc] [--ranks 2] [--images 16000] [--repeat 7]
                               [--models models/mnist_cnn.yaml models/lenet5.yaml] [--json F]
                               [--bind-to core|none] [--single-copy none|cma]
Needs openmpi-bin (bash scripts/setup.sh). Ranks are bound to cores (--bind-to core; --bind-to none
leaves them to the kernel) and copy through shared memory (--single-copy none; cma: process_vm_readv).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile


def run(command, metrics):
    if os.path.exists(metrics):
        os.remove(metrics)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    with open(metrics) as f:
        row = json.loads(f.readlines()[-1])
    return row["images_per_second"], row.get("gradient_wait_seconds", 0.0), row["seconds"]


# The scaling model of docs/distributed.md. One step on N ranks, each with `local` examples:
#   compute  = local * c                      (c: measured seconds per image on one core)
#   reduce   = 2 * (alpha + (N-1) * o + (N-1)/N * bytes / bandwidth)
#              (the all-to-all, then the all-gather: each rank sends and receives (N-1)/N of the
#              bucket twice; alpha: a message's latency, o: the cost of each of the N-1 messages)
#   exposed  = reduce (no overlap), or max(0, reduce - backward) with backward = 2/3 of compute
#              (backward does twice the forward's multiply-adds: what buckets can hide behind)
#   speed-up = N * compute / (compute + exposed)   (per-rank batch fixed: weak scaling)
NETWORKS = {"10 Gbit/s": (10e9 / 8, 30e-6), "100 Gbit/s": (100e9 / 8, 3e-6)}  # bytes/s, alpha
MESSAGE_COST = 1e-6  # o: seconds per message per rank


def predicted_speedup(ranks, local_batch, seconds_per_image, bytes_per_step, network, overlap):
    bandwidth, alpha = NETWORKS[network]
    compute = local_batch * seconds_per_image
    reduce = 2 * (alpha + (ranks - 1) * MESSAGE_COST + (ranks - 1) / ranks * bytes_per_step / bandwidth)
    exposed = max(0.0, reduce - 2 / 3 * compute) if overlap else reduce
    return ranks * compute / (compute + exposed), compute, reduce


def print_predictions(row):
    print(f"  predicted speed-up, {row['batch']} images per rank per step (weak scaling), "
          f"{row['compute_seconds_per_image_1_thread'] * 1e3:.3f} ms per image per core:")
    print(f"  {'ranks':>6} " + " ".join(f"{net + (' overlap' if o else ' no overlap'):>22}"
                                         for net in NETWORKS for o in (False, True)))
    row["predicted"] = {}
    for ranks in (8, 64, 512):
        cells = []
        for net in NETWORKS:
            for overlap in (False, True):
                speedup, compute, reduce = predicted_speedup(ranks, row["batch"], row["compute_seconds_per_image_1_thread"],
                                                             row["bytes_all_reduced_per_step"], net, overlap)
                row["predicted"][f"{ranks} {net} {'overlap' if overlap else 'no overlap'}"] = {
                    "speedup": speedup, "compute_ms": compute * 1e3, "reduce_ms": reduce * 1e3}
                cells.append(f"{speedup:>8.1f}x ({reduce * 1e3:5.2f} ms)")
        print(f"  {ranks:>6} " + " ".join(f"{c:>22}" for c in cells))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cnnc", default="build/cnnc")
    parser.add_argument("--models", nargs="+", default=["models/mnist_cnn.yaml", "models/lenet5.yaml"])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--images", type=int, default=16000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--bind-to", default="core", help="mpirun --bind-to (core, none, ...)")
    parser.add_argument("--single-copy", default="none",
                        help="OpenMPI's btl_vader_single_copy_mechanism: none (copies through shared memory) or cma")
    parser.add_argument("--json")
    args = parser.parse_args()
    mpirun = ["mpirun", "--bind-to", args.bind_to, "--mca", "btl_vader_single_copy_mechanism", args.single_copy]
    if os.geteuid() == 0:
        mpirun.append("--allow-run-as-root")
    if args.ranks > (os.cpu_count() or 1):
        mpirun.append("--oversubscribe")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        metrics = os.path.join(scratch, "metrics.jsonl")
        for model in args.models:
            def train(images):
                return [args.cnnc, "train", model, "--epochs", "1", "--train-limit", str(images), "--test-limit", "500",
                        "-o", os.path.join(scratch, "w.safetensors"), "--metrics", metrics]
            common = train(args.images)
            check = subprocess.run([args.cnnc, "check", model], capture_output=True, text=True, check=True).stdout
            params = int(re.search(r"Trainable params: ([0-9,]+)", check).group(1).replace(",", ""))
            batch = int(re.search(r"batch_size: (\d+)", open(model).read()).group(1))
            configs = {
                "1 rank x 1 thread": common + ["--threads", "1"],
                f"1 rank x {args.ranks} threads": common + ["--threads", str(args.ranks)],
                f"{args.ranks} ranks x 1 thread": mpirun + ["-np", str(args.ranks)] + common + ["--threads", "1"],
                f"{args.ranks} ranks x 1 thread, one bucket": mpirun + ["-np", str(args.ranks)] + common +
                ["--threads", "1", "--bucket-kib", "0"],
                f"{args.ranks} ranks x 1 thread, batch {args.ranks}x": mpirun + ["-np", str(args.ranks)] + common +
                ["--threads", "1", "--batch-size", str(args.ranks * batch)],
            }
            subprocess.run(train(batch) + ["--threads", "1"], capture_output=True, check=True)  # compiles the package
            row = {"model": model, "trainable_params": params, "batch": batch,
                   "bytes_all_reduced_per_step": 4 * params, "configs": {}}
            for name, command in configs.items():
                best = max((run(command, metrics) for _ in range(args.repeat)), key=lambda r: r[0])
                row["configs"][name] = {"images_per_second": best[0], "gradient_wait_seconds": best[1],
                                        "epoch_seconds": best[2]}
            base = row["configs"]["1 rank x 1 thread"]["images_per_second"]
            row["compute_seconds_per_image_1_thread"] = 1.0 / base
            results.append(row)
            print(f"\n{model}: {params:,} trainable parameters ({4 * params / 1e6:.2f} MB all-reduced per step), "
                  f"global batch {batch}, {args.images} images, best of {args.repeat}")
            print(f"  {'configuration':<40} {'images/s':>10} {'speed-up':>9} {'gradient wait':>14}")
            for name, value in row["configs"].items():
                wait = value["gradient_wait_seconds"]
                share = f"{wait:.3f}s ({100 * wait / value['epoch_seconds']:.1f}%)" if "ranks" in name else ""
                print(f"  {name:<40} {value['images_per_second']:>10.0f} {value['images_per_second'] / base:>8.2f}x "
                      f"{share:>14}")
            print_predictions(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ranks": args.ranks, "images": args.images, "repeat": args.repeat, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
