#!/usr/bin/env python3
"""Compares two safetensors weight files of the same model (tests/cli_distributed.sh).

    compare_weights.py A B                 exit 0 if every tensor is bit for bit the same
    compare_weights.py A B --tolerance T   exit 0 if max |a - b| <= T * max |a| over all tensors
Prints the largest absolute and relative difference. Standard library only (no numpy)."""
import json, struct, sys
from array import array


def read(path):
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            sys.exit(f"{path}: {name} is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        values = array("f")
        values.frombytes(data[begin:end])
        if sys.byteorder != "little":
            values.byteswap()
        tensors[name] = values
    return tensors


def main():
    args = sys.argv[1:]
    tolerance = None
    if "--tolerance" in args:
        at = args.index("--tolerance")
        tolerance = float(args[at + 1])
        del args[at:at + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    a, b = read(args[0]), read(args[1])
    if a.keys() != b.keys():
        sys.exit(f"different tensors: {sorted(a.keys() ^ b.keys())}")
    largest = max((abs(v) for t in a.values() for v in t), default=0.0)
    worst, worst_name, identical = 0.0, "", True
    for name in sorted(a):
        if len(a[name]) != len(b[name]):
            sys.exit(f"{name}: {len(a[name])} vs {len(b[name])} elements")
        if a[name].tobytes() != b[name].tobytes():
            identical = False
        for x, y in zip(a[name], b[name]):
            if abs(x - y) > worst:
                worst, worst_name = abs(x - y), name
    relative = worst / largest if largest > 0 else 0.0
    print(f"identical: {identical}; largest difference {worst:.3g} ({worst_name}), {relative:.3g} of the largest weight {largest:.3g}")
    if tolerance is None:
        sys.exit(0 if identical else 1)
    sys.exit(0 if relative <= tolerance else 1)


if __name__ == "__main__":
    main()
