#!/usr/bin/python3
"""Random networks of realistic size, for measuring cnnc on networks nobody tuned for.

The model zoo (models/) holds the networks the schedules were developed on; these are drawn
from a seed instead, so a benchmark run can ask how the shape rules do on networks they have
never seen. Each network is one of four families people write --

  plain      conv stacks with max pooling or strided convs between stages (VGG / LeNet style)
  residual   basic blocks (conv, batchnorm, act, conv, batchnorm, + shortcut, act), projection
             shortcuts where the size or width changes (ResNet style)
  separable  a stem, then depthwise 3x3 + batchnorm + act + 1x1 conv + batchnorm + act blocks,
             some strided (MobileNet style)
  mixed      plain stages with dilated convs, separable convs and optional batchnorm

-- with channel counts drawn from every integer in a range (not only powers of two: 20, 24, 33
...), kernel sizes 1-7, activations from relu to gelu, a 28x28x1, 32x32x3 or 24x24x3 input,
global pooling or flatten + dense at the end, batch 32, 64 or 128 and Adam or SGD.

  /usr/bin/python3 bench/random_nets.py --seed 7 --count 8 --out /tmp/nets
  /usr/bin/python3 bench/zoo.py --models /tmp/nets/*.yaml --no-tuning --json r.json

Deterministic: the same seed and count write the same files (Python's own `random`).
"""
import argparse
import os
import random

ACTIVATIONS = ["relu", "relu", "relu6", "swish", "leaky_relu", "elu", "tanh", "gelu", "hard_swish"]
INPUTS = [[28, 28, 1], [32, 32, 3], [24, 24, 3]]


class Net:
    def __init__(self):
        self.lines = []
        self.count = 0

    def layer(self, op, **attrs):
        self.count += 1
        name = attrs.pop("name", f"l{self.count}")
        body = ", ".join([f"name: {name}"] + [f"{k}: {fmt(v)}" for k, v in attrs.items()])
        self.lines.append(f"  - {op}: {{{body}}}")
        return name


def fmt(value):
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def widths(rng, stages):
    """Channel counts per stage: any integer in a range, roughly doubling, capped at 160."""
    first = rng.randint(8, 48)
    out = [first]
    for _ in range(stages - 1):
        out.append(min(160, int(out[-1] * rng.uniform(1.4, 2.2))))
    return out


def plain(net, rng, size):
    act = rng.choice(ACTIVATIONS)
    stages = rng.randint(2, 3)
    bn = rng.random() < 0.4
    for s, c in enumerate(widths(rng, stages)):
        for _ in range(rng.randint(1, 2)):
            k = rng.choice([3, 3, 3, 5]) if s > 0 or rng.random() < 0.5 else rng.choice([5, 7])
            net.layer("conv2d", filters=c, kernel=k, padding="same", use_bias=not bn,
                      **({} if bn else {"activation": act}))
            if bn:
                net.layer("batchnorm")
                net.layer(act)
        if size >= 8:
            if rng.random() < 0.7:
                net.layer(rng.choice(["maxpool2d", "maxpool2d", "avgpool2d"]), size=2)
            else:
                net.layer("conv2d", filters=c, kernel=3, stride=2, padding="same", activation=act)
            size = (size + 1) // 2
    return size


def residual(net, rng, size):
    act = rng.choice(["relu", "relu", "relu6", "swish", "leaky_relu"])
    c0 = rng.randint(8, 32)
    prev = net.layer("conv2d", filters=c0, kernel=3, padding="same", use_bias=False)
    net.layer("batchnorm")
    prev = net.layer(act)
    channels = c0
    for s, c in enumerate(widths(rng, rng.randint(2, 3))):
        c = max(c, c0) if s == 0 else c
        for b in range(rng.randint(1, 2)):
            stride = 2 if (s > 0 and b == 0 and size >= 8) else 1
            net.layer("conv2d", filters=c, kernel=3, stride=stride, padding="same", use_bias=False, inputs=[prev])
            net.layer("batchnorm")
            net.layer(act)
            net.layer("conv2d", filters=c, kernel=3, padding="same", use_bias=False)
            main = net.layer("batchnorm")
            shortcut = prev
            if stride != 1 or c != channels:
                net.layer("conv2d", filters=c, kernel=1, stride=stride, use_bias=False, inputs=[prev])
                shortcut = net.layer("batchnorm")
            net.layer("add", inputs=[main, shortcut])
            prev = net.layer(act)
            channels = c
            if stride == 2:
                size = (size + 1) // 2
    return size


def separable(net, rng, size):
    act = rng.choice(["relu", "relu6", "relu6", "swish", "hard_swish"])
    c = rng.randint(8, 32)
    net.layer("conv2d", filters=c, kernel=3, stride=rng.choice([1, 2]) if size > 24 else 1, padding="same",
              use_bias=False)
    net.layer("batchnorm")
    net.layer(act)
    for _ in range(rng.randint(4, 7)):
        stride = 2 if (rng.random() < 0.4 and size >= 8) else 1
        net.layer("depthwise_conv2d", kernel=rng.choice([3, 3, 5]), stride=stride, padding="same", use_bias=False)
        net.layer("batchnorm")
        net.layer(act)
        if stride == 2 or rng.random() < 0.4:
            c = min(160, int(c * rng.uniform(1.3, 2.1)))
        net.layer("conv2d", filters=c, kernel=1, use_bias=False)
        net.layer("batchnorm")
        net.layer(act)
        if stride == 2:
            size = (size + 1) // 2
    return size


def mixed(net, rng, size):
    act = rng.choice(ACTIVATIONS)
    for s, c in enumerate(widths(rng, rng.randint(2, 3))):
        op = rng.choice(["conv2d", "conv2d", "dilated", "separable_conv2d"]) if s > 0 else "conv2d"
        if op == "dilated":
            net.layer("conv2d", filters=c, kernel=3, dilation=rng.choice([2, 3]), padding="same", activation=act)
        elif op == "separable_conv2d":
            net.layer("separable_conv2d", filters=c, kernel=3, padding="same", activation=act)
        else:
            net.layer("conv2d", filters=c, kernel=rng.choice([3, 5]), padding="same", activation=act)
        if rng.random() < 0.5:
            net.layer("batchnorm")
        if size >= 8:
            net.layer("maxpool2d", size=2)
            size = (size + 1) // 2
    return size


FAMILIES = {"plain": plain, "residual": residual, "separable": separable, "mixed": mixed}


def random_net(seed, index):
    rng = random.Random(seed * 1000 + index)
    family = sorted(FAMILIES)[(seed + index) % len(FAMILIES)]  # every family in any 4 in a row
    name = f"rand{seed}_{index}_{family}"
    net = Net()
    shape = rng.choice(INPUTS)
    size = FAMILIES[family](net, rng, shape[0])
    if size > 4 and rng.random() < 0.3 or rng.random() < 0.5 and family != "plain":
        net.layer(rng.choice(["global_avgpool2d", "global_avgpool2d", "global_maxpool2d"]))
    else:
        net.layer("flatten")
        net.layer("dense", units=rng.randint(24, 128), activation=rng.choice(["relu", "relu", "tanh", "swish"]))
        if rng.random() < 0.5:
            net.layer("dropout", rate=0.25)
    net.layer("dense", units=10, activation="softmax")
    optimizer = rng.choice(["adam", "adam", "sgd"])
    return name, "\n".join([
        f"# Drawn by bench/random_nets.py --seed {seed} (network {index}, family {family}).",
        f"name: {name}",
        f"input: {{shape: {fmt(shape)}}}",
        "layers:",
        *net.lines,
        "train:",
        "  loss: categorical_crossentropy",
        f"  optimizer: {optimizer}",
        f"  batch_size: {rng.choice([32, 64, 64, 128])}",
        "  epochs: 1",
        f"  seed: {seed}",
        "",
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--out", required=True, help="folder for the .yaml files (created)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for index in range(args.count):
        name, text = random_net(args.seed, index)
        path = os.path.join(args.out, name + ".yaml")
        with open(path, "w") as f:
            f.write(text)
        print(path)


if __name__ == "__main__":
    main()
