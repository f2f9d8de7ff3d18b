#!/usr/bin/python3
"""cnnc against PyTorch on every network of the model zoo, same machine, same run.

For each model (default: every models/*.yaml): `cnnc bench MODEL --json` (cnnc), then a PyTorch
twin built from the same model -- the graph `cnnc check --dump-after infer-shapes` prints, so
names, defaults and inputs are cnnc's own -- measured with the same protocol: training images/s
at the model's batch size (its optimizer, Adam or SGD, cross-entropy on the logits), batch-256
inference images/s (with the softmax), batch-1 median latency; each the best of R repetitions,
2 threads, PyTorch in both NCHW and channels_last, the faster kept (PyTorch at its best). The
two never run at once; with --rounds N each is measured N times, alternating, and keeps its best
(a slow stretch of a shared machine then falls on both sides, not on one). Prints one table
with the ratios (> 1: cnnc faster) and each cnnc inference kernel's % of the FMA peak
(effective FLOPs: the layer's multiply-adds as written; and, labelled apart in brackets,
executed FLOPs where its algorithm does other work: Winograd), writes all of it as JSON
(--json) and a chart (--chart, needs python3-matplotlib).

PyTorch is only a peer here, never a test dependency:
  apt-get install python3-torch libopenblas0-openmp python3-yaml [python3-matplotlib]
  /usr/bin/python3 bench/zoo.py [--models models/lenet5.yaml ...] [--json zoo.json] [--chart zoo.svg]

The twin computes what the cnnc model computes, up to the order of a flatten's elements (NCHW
here, NHWC in cnnc), which changes no timing.
"""
import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

import yaml

from torch_timing import best_training_rate

NODE = re.compile(r"^\s+%(\d+) (\S+) = (\w+)\(([^)]*)\)(?: (\{.*\}))? -> \(None, ([^)]*)\)$")


def read_graph(cnnc, model):
    """The model's nodes after shape inference: (id, name, op, inputs, attrs, shape) in order."""
    text = subprocess.run([cnnc, "check", model, "--dump-after", "infer-shapes"], check=True, capture_output=True,
                          text=True).stdout
    nodes = []
    for line in text.splitlines():
        m = NODE.match(line)
        if not m:
            continue
        inputs = [int(i.strip().lstrip("%")) for i in m.group(4).split(",") if i.strip()]
        attrs = yaml.safe_load(m.group(5)) if m.group(5) else {}
        shape = [int(d) for d in m.group(6).split(",")]
        nodes.append({"id": int(m.group(1)), "name": m.group(2), "op": m.group(3), "inputs": inputs, "attrs": attrs,
                      "shape": shape})
    if not nodes:
        raise SystemExit(f"cannot read the graph of {model}")
    trainable = re.search(r"Trainable params: ([0-9,]+)", text)
    nodes[0]["trainable_params"] = int(trainable.group(1).replace(",", "")) if trainable else None
    return nodes


def same_padding(size, window, stride, dilation=1):
    """Keras 'same' padding of one axis: (before, after)."""
    span = (window - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def build_twin(nodes, torch, nn):
    """A torch.nn.Module computing the graph in NCHW (vectors: NC); the final softmax left out
    (training uses the logits; inference adds it back)."""
    F = torch.nn.functional

    def activation(name, attrs, as_layer):
        if name in ("linear", "none", None):
            return nn.Identity()
        alpha = attrs.get("alpha")
        table = {
            "relu": lambda: nn.ReLU(), "sigmoid": lambda: nn.Sigmoid(), "tanh": lambda: nn.Tanh(),
            "relu6": lambda: nn.ReLU6(), "elu": lambda: nn.ELU(alpha if alpha is not None else 1.0),
            "leaky_relu": lambda: nn.LeakyReLU(alpha if alpha is not None else (0.3 if as_layer else 0.2)),
            "hard_sigmoid": lambda: nn.Hardsigmoid(), "swish": lambda: nn.SiLU(), "silu": lambda: nn.SiLU(),
            "gelu": lambda: nn.GELU(), "hard_swish": lambda: nn.Hardswish(), "softmax": lambda: nn.Softmax(dim=1),
        }
        return table[name]()

    def padded_conv(in_shape, attrs, conv_of):
        """A convolution with Keras padding: the conv's own symmetric padding where it suffices."""
        kh, kw = attrs["kernel"]
        sh, sw = attrs["stride"]
        dh, dw = attrs["dilation"]
        if attrs["padding"] == "same":
            top, bottom = same_padding(in_shape[0], kh, sh, dh)
            left, right = same_padding(in_shape[1], kw, sw, dw)
        else:
            top = bottom = left = right = 0
        if top == bottom and left == right:
            return conv_of((top, left))
        return nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), conv_of((0, 0)))

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList()
            self.plan = []  # (op, inputs, layer index or None, extra)
            shapes = {n["id"]: n["shape"] for n in nodes}
            last = nodes[-1]["id"]
            for n in nodes[1:]:
                op, a, inputs = n["op"], n["attrs"], n["inputs"]
                in_shape = shapes[inputs[0]]
                act = a.get("activation")
                if n["id"] == last and (act == "softmax" or op == "softmax"):
                    act = None  # the logits (see above)
                    if op == "softmax":
                        self.plan.append(("identity", inputs, None))
                        continue
                if op == "conv2d":
                    cin = in_shape[2]
                    layer = padded_conv(in_shape, a, lambda pad: nn.Conv2d(
                        cin, a["filters"], tuple(a["kernel"]), tuple(a["stride"]), pad, tuple(a["dilation"]),
                        bias=a["use_bias"]))
                    layer = nn.Sequential(layer, activation(act, {}, False))
                elif op in ("depthwise_conv2d", "separable_conv2d"):
                    cin, mult = in_shape[2], a["depth_multiplier"]
                    depthwise = padded_conv(in_shape, a, lambda pad: nn.Conv2d(
                        cin, cin * mult, tuple(a["kernel"]), tuple(a["stride"]), pad, tuple(a["dilation"]), groups=cin,
                        bias=a["use_bias"] and op == "depthwise_conv2d"))
                    parts = [depthwise]
                    if op == "separable_conv2d":
                        parts.append(nn.Conv2d(cin * mult, a["filters"], 1, bias=a["use_bias"]))
                    layer = nn.Sequential(*parts, activation(act, {}, False))
                elif op == "dense":
                    layer = nn.Sequential(nn.Linear(in_shape[0], a["units"], bias=a["use_bias"]), activation(act, {}, False))
                elif op in ("maxpool2d", "avgpool2d"):
                    ph, pw = a["size"]
                    sh, sw = a["stride"]
                    pad = (0, 0)
                    if a["padding"] == "same":
                        top, bottom = same_padding(in_shape[0], ph, sh)
                        left, right = same_padding(in_shape[1], pw, sw)
                        if top != bottom or left != right:
                            raise SystemExit(f"{n['name']}: asymmetric 'same' pooling has no PyTorch twin here")
                        pad = (top, left)
                    layer = (nn.MaxPool2d((ph, pw), (sh, sw), pad) if op == "maxpool2d" else
                             nn.AvgPool2d((ph, pw), (sh, sw), pad, count_include_pad=False))
                elif op == "global_avgpool2d":
                    layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
                elif op == "global_maxpool2d":
                    layer = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
                elif op == "flatten":
                    layer = nn.Flatten()
                elif op == "dropout":
                    layer = nn.Dropout(a["rate"])
                elif op == "batchnorm":
                    bn = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
                    layer = bn(in_shape[-1], eps=a["epsilon"], momentum=1 - a["momentum"])
                elif op == "zero_padding2d":
                    (top, bottom), (left, right) = a["padding"]
                    layer = nn.ZeroPad2d((left, right, top, bottom))
                elif op == "upsampling2d":
                    layer = nn.Upsample(scale_factor=tuple(float(s) for s in a["size"]), mode="nearest")
                elif op == "add":
                    self.plan.append(("add", inputs, None))
                    continue
                elif op == "concat":
                    axis = a.get("axis", -1)
                    rank = len(in_shape)
                    axis = axis + rank if axis < 0 else axis - 1  # Keras axis (batch = 0) -> per example
                    dim = 1 if axis == rank - 1 else axis + 2  # NHWC per-example axis -> NCHW dim
                    self.plan.append(("concat", inputs, dim))
                    continue
                else:
                    layer = activation(op, a, True)
                self.layers.append(layer)
                self.plan.append(("layer", inputs, len(self.layers) - 1))

        def forward(self, x):
            values = [x]
            for kind, inputs, extra in self.plan:
                if kind == "layer":
                    values.append(self.layers[extra](values[inputs[0]]))
                elif kind == "identity":
                    values.append(values[inputs[0]])
                elif kind == "add":
                    total = values[inputs[0]]
                    for i in inputs[1:]:
                        total = total + values[i]
                    values.append(total)
                else:
                    values.append(torch.cat([values[i] for i in inputs], dim=extra))
            return values[-1]

    return Twin()


def torch_measure(nodes, train, args):
    import torch
    import torch.nn as nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = nodes[0]["shape"]
    classes = nodes[-1]["shape"][-1]
    batch = train.get("batch_size", 32)
    x = torch.rand(1024, *([shape[2], shape[0], shape[1]] if len(shape) == 3 else shape))
    y = torch.randint(0, classes, (1024,))
    best = {"train_images_per_second": 0.0, "infer_images_per_second_batch256": 0.0,
            "infer_latency_ms_batch1": float("inf")}
    formats = [("nchw", torch.contiguous_format)]
    if len(shape) == 3:
        formats.append(("channels_last", torch.channels_last))
    for label, memory_format in formats:
        xs = x.contiguous(memory_format=memory_format) if len(shape) == 3 else x
        model = build_twin(nodes, torch, nn).to(memory_format=memory_format)
        twin_params = sum(p.numel() for p in model.parameters())
        if twin_params != nodes[0]["trainable_params"]:  # the twin must be the same network
            raise SystemExit(f"the PyTorch twin has {twin_params} parameters, the cnnc model "
                             f"{nodes[0]['trainable_params']} trainable ones")
        optimizer_spec = train.get("optimizer", "adam")
        kind = optimizer_spec if isinstance(optimizer_spec, str) else next(iter(optimizer_spec))
        settings = {} if isinstance(optimizer_spec, str) else (optimizer_spec[kind] or {})
        if kind == "sgd":
            optimizer = torch.optim.SGD(model.parameters(), lr=settings.get("learning_rate", 0.01),
                                        momentum=settings.get("momentum", 0.0))
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=settings.get("learning_rate", 1e-3), eps=1e-7)
        loss_fn = nn.CrossEntropyLoss()
        model.train()

        rate = best_training_rate(model, optimizer, loss_fn, xs, y, batch, args.steps, args.repetitions, warmup=5)
        if rate > best["train_images_per_second"]:
            best["train_images_per_second"] = rate
            best["train_format"] = label
        inference = nn.Sequential(model, nn.Softmax(dim=1)).eval()
        big = xs[:256]
        with torch.no_grad():
            inference(big)
            for _ in range(args.repetitions):
                start = time.perf_counter()
                for _ in range(args.batches):
                    inference(big)
                rate = args.batches * 256 / (time.perf_counter() - start)
                if rate > best["infer_images_per_second_batch256"]:
                    best["infer_images_per_second_batch256"] = rate
                    best["infer_format"] = label
                one = xs[:1]
                times = []
                for _ in range(args.latency_runs):
                    start = time.perf_counter()
                    inference(one)
                    times.append(time.perf_counter() - start)
                times.sort()
                latency = times[len(times) // 2] * 1e3
                if latency < best["infer_latency_ms_batch1"]:
                    best["infer_latency_ms_batch1"] = latency
                    best["latency_format"] = label
    best["torch_version"] = torch.__version__
    return best


def keep_best(best, new):
    """The better of two measurements of one side, measure by measure (a measure's own details,
    such as cnnc's per-kernel times or PyTorch's memory format, come with it)."""
    if best is None:
        return new
    merged = dict(best)
    for key, faster in (("train_images_per_second", max), ("infer_images_per_second_batch256", max),
                        ("infer_latency_ms_batch1", min)):
        if key not in new or new[key] is None or (merged.get(key) is not None and faster(merged[key], new[key]) == merged[key]):
            continue
        merged[key] = new[key]
        if key == "train_images_per_second":
            merged.update({k: new[k] for k in ("training_kernels", "train_format") if k in new})
        elif key == "infer_images_per_second_batch256":
            merged.update({k: new[k] for k in ("inference_kernels", "infer_format") if k in new})
        elif "latency_format" in new:
            merged["latency_format"] = new["latency_format"]
    return merged


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.join(here, "..")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cnnc", default=os.path.join(root, "build", "cnnc"))
    parser.add_argument("--models", nargs="*", default=sorted(glob.glob(os.path.join(root, "models", "*.yaml"))))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--no-tuning", action="store_true", help="cnnc with its default schedules")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure cnnc and PyTorch this many times each, alternating; each keeps its best")
    parser.add_argument("--json", help="write every result here")
    parser.add_argument("--chart", help="write a chart of the ratios here (.svg or .png)")
    args = parser.parse_args()
    if args.chart:
        try:
            import matplotlib  # noqa: F401  (checked before the measurements, not after them)
        except ImportError:
            raise SystemExit("--chart needs matplotlib (apt-get install python3-matplotlib)")

    results = []
    for model in args.models:
        name = os.path.splitext(os.path.basename(model))[0]
        print(f"== {name}", flush=True)
        with open(model) as f:
            train = (yaml.safe_load(f) or {}).get("train") or {}
        nodes = read_graph(args.cnnc, model)
        # Rounds alternate the two (cnnc, PyTorch, cnnc, PyTorch, ...), each side keeping its best
        # of every measure: a stretch of time in which the shared machine is slow then falls on
        # both sides, not on one whole side.
        cnnc, peer = None, None
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "cnnc.json")
                command = [args.cnnc, "bench", model, "--threads", str(args.threads), "--repetitions",
                           str(args.repetitions), "--steps", str(args.steps), "--latency-runs", str(args.latency_runs),
                           "--batches", str(args.batches), "--json", out]
                if args.no_tuning:
                    command.append("--no-tuning")
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                with open(out) as f:
                    cnnc = keep_best(cnnc, json.load(f))
            try:
                peer = keep_best(peer, torch_measure(nodes, train, args))
            except ImportError:
                raise SystemExit("PyTorch is not installed (apt-get install python3-torch libopenblas0-openmp)")
        ratios = {
            "train": cnnc["train_images_per_second"] / peer["train_images_per_second"],
            "infer256": cnnc["infer_images_per_second_batch256"] / peer["infer_images_per_second_batch256"],
            "latency1": peer["infer_latency_ms_batch1"] / cnnc["infer_latency_ms_batch1"],
        }
        results.append({"model": name, "cnnc": cnnc, "pytorch": peer, "ratios": ratios})

    print(f"\n{args.threads} threads; ratio > 1: cnnc faster; PyTorch at the faster of NCHW and channels_last")
    print(f"{'network':16} {'train img/s cnnc / torch':>26} {'ratio':>7} {'b256 img/s cnnc / torch':>26} {'ratio':>7} "
          f"{'b1 ms cnnc / torch':>22} {'ratio':>7}")
    for r in results:
        c, p, q = r["cnnc"], r["pytorch"], r["ratios"]
        print(f"{r['model']:16} {c['train_images_per_second']:12.0f} / {p['train_images_per_second']:<11.0f} {q['train']:6.2f}x "
              f"{c['infer_images_per_second_batch256']:12.0f} / {p['infer_images_per_second_batch256']:<11.0f} {q['infer256']:6.2f}x "
              f"{c['infer_latency_ms_batch1']:9.4f} / {p['infer_latency_ms_batch1']:<10.4f} {q['latency1']:6.2f}x")
    for key in ("train", "infer256", "latency1"):
        geo = math.exp(sum(math.log(r["ratios"][key]) for r in results) / len(results))
        print(f"geometric mean {key}: {geo:.2f}x")
    print("\ncnnc inference kernels (batch 256), % of the FMA peak: effective FLOPs (the layer's multiply-adds as "
          "written), then in brackets the executed FLOPs where the kernel's algorithm does other work (Winograd):")
    for r in results:
        kernels = r["cnnc"]["inference_kernels"]
        prefix = r["cnnc"].get("model", r["model"]) + "_"
        parts = []
        for k in kernels:
            name = k['name'][len(prefix):] if k['name'].startswith(prefix) else k['name']
            executed = k.get("executed_percent_of_peak", k["percent_of_peak"])
            extra = f" [{executed:.0f}%]" if abs(executed - k["percent_of_peak"]) > 0.05 else ""
            parts.append(f"{name} {k['percent_of_peak']:.0f}%{extra}")
        print(f"  {r['model']}: " + ", ".join(parts))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.chart:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        names = [r["model"] for r in results]
        fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 4))
        width = 0.27
        for i, (key, label) in enumerate([("train", "training"), ("infer256", "inference b256"),
                                          ("latency1", "batch-1 latency")]):
            ax.bar([j + (i - 1) * width for j in range(len(names))], [r["ratios"][key] for r in results], width,
                   label=label)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names)
        ax.set_ylabel("cnnc speed / PyTorch speed")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
