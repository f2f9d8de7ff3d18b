#!/usr/bin/env python3
"""Writes an IDX data set (MNIST / Fashion-MNIST format) as folders of PNG files, one per class:
OUT/train/<class>/<n>.png and OUT/test/<class>/<n>.png, the layout `cnnc train --data OUT` reads.

    python3 scripts/idx-to-png-folders.py OUT [--data /usr/share/datasets/fashion-mnist]
                                              [--train-limit N] [--test-limit N]

Class folder names default to Fashion-MNIST's ten names ("/" written as "-"); --numbers names
them 0..9 instead. Standard library only (PNG written with zlib).
"""
import argparse
import gzip
import os
import struct
import sys
import zlib

FASHION = ["T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return shape, data[4 + 4 * dims:]


def find(data, name):
    for candidate in (os.path.join(data, name + ".gz"), os.path.join(data, name)):
        if os.path.exists(candidate):
            return candidate
    sys.exit(f"idx-to-png-folders: no {name}[.gz] in {data}")


def png(width, height, pixels):
    raw = b"".join(b"\x00" + pixels[y * width:(y + 1) * width] for y in range(height))
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def write(data, prefix, out, limit, names):
    (count, height, width), pixels = read_idx(find(data, prefix + "-images-idx3-ubyte"))
    (label_count,), labels = read_idx(find(data, prefix + "-labels-idx1-ubyte"))
    assert label_count == count, "image and label counts differ"
    count = min(count, limit) if limit else count
    for name in names:
        os.makedirs(os.path.join(out, name), exist_ok=True)
    size = height * width
    for i in range(count):
        with open(os.path.join(out, names[labels[i]], f"{i:05d}.png"), "wb") as f:
            f.write(png(width, height, pixels[i * size:(i + 1) * size]))
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--train-limit", type=int, default=0, help="0: all")
    parser.add_argument("--test-limit", type=int, default=0, help="0: all")
    parser.add_argument("--numbers", action="store_true", help="name the class folders 0..9")
    args = parser.parse_args()
    names = [str(k) for k in range(10)] if args.numbers else FASHION
    n_train = write(args.data, "train", os.path.join(args.out, "train"), args.train_limit, names)
    n_test = write(args.data, "t10k", os.path.join(args.out, "test"), args.test_limit, names)
    print(f"wrote {n_train} training and {n_test} test images as PNG under {args.out}/train and {args.out}/test")


if __name__ == "__main__":
    main()
