#!/usr/bin/python3
"""Per-kernel times from `cnnc tune --json FILE` as an SVG bar chart (standard library only).

For each kernel, one group of horizontal bars: "default" (the hand-written schedule), "tuned"
(the winner of the search), and each Halide autoscheduler (Mullapudi2016, Adams2019, Li2018).
An autoscheduler that was not tried, or whose candidate was invalid (wrong output or failed to
compile), has no bar but a note in its place. The time axis is logarithmic (--linear for a linear
one); every bar is labelled with its time, the tuned bar also with its speed-up over default.

Usage:
  python3 bench/plot_kernels.py tune.json -o kernels.svg
  python3 bench/plot_kernels.py tune.json -o kernels.svg --png            # also kernels.png
  python3 bench/plot_kernels.py tune.json -o kernels.svg --png chart.png  # also chart.png
  python3 bench/plot_kernels.py tune.json --linear --title "after the tiling change"

--png converts the SVG with rsvg-convert (apt-get install librsvg2-bin) or, failing that,
ImageMagick's convert; with neither it says so and exits with status 1 (the SVG is still written).

Input (the keys read; others are ignored):
  {"model": "mnist_cnn", "target": "x86-64-linux-avx2-...", "batch_size": 32,
   "kernels": [{"name": "mnist_cnn_b2_conv2d_1", "default_ms": 2.4, "tuned_ms": 1.1,
                "tuned_candidate": "channel_vectors=2 pixel_tile=6",       (optional)
                "candidates": [{"candidate": "autoscheduler=Mullapudi2016", "ms": 9.8, "valid": true,
                                "note": ""}, ...]}]}
default_ms or tuned_ms may be null or absent (shown as "not measured"). Candidates other than
"autoscheduler=..." are ignored; where an autoscheduler appears more than once, its fastest valid
time is shown.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from xml.sax.saxutils import escape

AUTOSCHEDULERS = ["Mullapudi2016", "Adams2019", "Li2018"]
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
SERIES = [("default", "#7f7f7f"), ("tuned", "#0072B2"), ("Mullapudi2016", "#E69F00"),
          ("Adams2019", "#009E73"), ("Li2018", "#CC79A7")]

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
FONT_SIZE = 12
CHAR_WIDTH = 0.62 * FONT_SIZE  # a generous estimate of the mean glyph width, for layout only
BAR_HEIGHT = 11
BAR_GAP = 2
GROUP_GAP = 16
PLOT_WIDTH = 560
VALUE_SPACE = 230  # right of the plot: value labels and notes
NAME_WRAP = 34     # characters per line of a kernel name


class InputError(Exception):
    pass


def fail(path, message):
    print(f"plot_kernels.py: {path}: error: {message}", file=sys.stderr)
    sys.exit(1)


def positive_or_none(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def read_tune_json(path):
    """The chart's rows: (kernel name, {series: (ms or None, note)}) per kernel, in file order."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}")
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e}")
    if not isinstance(data, dict) or not isinstance(data.get("kernels"), list):
        raise InputError('expected an object with a "kernels" list, as written by `cnnc tune --json`')
    rows = []
    for index, kernel in enumerate(data["kernels"]):
        if not isinstance(kernel, dict) or not isinstance(kernel.get("name"), str):
            raise InputError(f'kernels[{index}] has no "name"')
        bars = {}
        for series, key in (("default", "default_ms"), ("tuned", "tuned_ms")):
            ms = positive_or_none(kernel.get(key))
            bars[series] = (ms, "" if ms else "not measured")
        if bars["tuned"][0] and kernel.get("tuned_candidate"):
            bars["tuned"] = (bars["tuned"][0], str(kernel["tuned_candidate"]))
        tried = {}
        for candidate in kernel.get("candidates") or []:
            name = str(candidate.get("candidate", ""))
            if not name.startswith("autoscheduler="):
                continue
            scheduler = name.split("=", 1)[1]
            ms = positive_or_none(candidate.get("ms"))
            valid = candidate.get("valid", True) is True and ms is not None
            note = str(candidate.get("note") or "") if valid else "invalid" + (
                f": {candidate['note']}" if candidate.get("note") else "")
            previous = tried.get(scheduler)
            if previous is None or (valid and (previous[0] is None or ms < previous[0])):
                tried[scheduler] = (ms if valid else None, note)
        for scheduler in AUTOSCHEDULERS:
            bars[scheduler] = tried.get(scheduler, (None, "not tried"))
        rows.append((kernel["name"], bars))
    if not rows:
        raise InputError('"kernels" is empty: nothing to plot')
    return data, rows


def wrap_greedy(name, width):
    lines = []
    while len(name) > width:
        cut = max(name.rfind("_", 0, width), name.rfind(" ", 0, width))
        cut = cut + 1 if cut > width // 3 else width
        lines.append(name[:cut])
        name = name[cut:]
    lines.append(name)
    return lines


def wrap_name(name, width=NAME_WRAP):
    """Splits a long kernel name into as few lines as a width of `width` needs, of even length,
    preferring breaks after '_' or ' ' (so that no line is a lone "1")."""
    count = len(wrap_greedy(name, width))
    for narrower in range(math.ceil(len(name) / count), width):
        lines = wrap_greedy(name, narrower)
        if len(lines) <= count:
            return lines
    return wrap_greedy(name, width)


def shorten(text, limit):
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def format_ms(ms):
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    if ms >= 0.1:
        return f"{ms:.2f} ms"
    return f"{ms * 1000:.1f} \u00b5s"


class Axis:
    """Maps milliseconds to x within [0, PLOT_WIDTH], logarithmic or linear, with tick values."""

    def __init__(self, values, log):
        self.log = log
        low, high = min(values), max(values)
        if log:
            self.low = 10 ** math.floor(math.log10(low))
            self.high = 10 ** math.ceil(math.log10(high))
            if self.high <= self.low:
                self.high = self.low * 10
            decades = round(math.log10(self.high / self.low))
            steps = (1, 2, 5) if decades <= 4 else (1,)
            self.ticks = [m * 10 ** e for e in range(round(math.log10(self.low)), round(math.log10(self.high)) + 1)
                          for m in steps if self.low <= m * 10 ** e <= self.high * 1.0001]
        else:
            self.low = 0.0
            step = 10 ** math.floor(math.log10(high / 5))
            for multiple in (1, 2, 5, 10):
                if high / (step * multiple) <= 6:
                    step *= multiple
                    break
            self.high = step * math.ceil(high / step)
            self.ticks = [i * step for i in range(int(round(self.high / step)) + 1)]

    def x(self, ms):
        if self.log:
            return PLOT_WIDTH * math.log(ms / self.low) / math.log(self.high / self.low)
        return PLOT_WIDTH * ms / self.high

    @staticmethod
    def label(ms):
        return f"{ms:g}"


def render_svg(data, rows, log=True, title=None):
    values = [ms for _, bars in rows for ms, _ in bars.values() if ms]
    if not values:
        raise InputError("no kernel has any time to plot")
    axis = Axis(values, log)

    name_lines = {name: wrap_name(name) for name, _ in rows}
    # Kernel names are bold: wider than CHAR_WIDTH.
    label_width = max(len(line) for lines in name_lines.values() for line in lines) * CHAR_WIDTH * 1.1 + 24
    left = max(140, label_width)
    group_height = len(SERIES) * (BAR_HEIGHT + BAR_GAP) - BAR_GAP
    top = 100
    plot_height = len(rows) * (group_height + GROUP_GAP)
    width = int(left + PLOT_WIDTH + VALUE_SPACE)
    height = int(top + plot_height + 70)

    model = data.get("model", "?")
    batch = data.get("batch_size")
    heading = title or f"Per-kernel time: {model}" + (f", batch {batch}" if batch else "")
    out = []
    add = out.append
    add(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{FONT}" font-size="{FONT_SIZE}">')
    add(f'<rect width="{width}" height="{height}" fill="white"/>')
    add(f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="17" font-weight="bold">{escape(heading)}</text>')
    add(f'<text x="{width / 2}" y="44" text-anchor="middle" fill="#444">target '
        f'{escape(shorten(str(data.get("target", "?")), 110))}</text>')

    # Legend: one row of swatches.
    legend_width = sum(18 + len(name) * CHAR_WIDTH + 22 for name, _ in SERIES)
    x = (width - legend_width) / 2
    for name, colour in SERIES:
        add(f'<rect x="{x:.1f}" y="60" width="14" height="12" fill="{colour}"/>')
        add(f'<text x="{x + 18:.1f}" y="70.5">{escape(name)}</text>')
        x += 18 + len(name) * CHAR_WIDTH + 22

    # Grid and axis labels.
    bottom = top + plot_height
    for tick in axis.ticks:
        tx = left + axis.x(tick)
        major = not log or f"{tick:.0e}".startswith("1")
        add(f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{bottom}" '
            f'stroke="{"#bbb" if major else "#e4e4e4"}" stroke-width="1"/>')
        add(f'<text x="{tx:.1f}" y="{bottom + 16}" text-anchor="middle" fill="{"#222" if major else "#777"}" '
            f'font-size="{FONT_SIZE if major else FONT_SIZE - 2}">{axis.label(tick)}</text>')
    add(f'<text x="{left + PLOT_WIDTH / 2}" y="{bottom + 36}" text-anchor="middle">time per call, ms'
        f'{" (log scale)" if log else ""} \u2014 shorter is faster</text>')

    for index, (name, bars) in enumerate(rows):
        y0 = top + index * (group_height + GROUP_GAP)
        if index % 2 == 1:
            add(f'<rect x="0" y="{y0 - GROUP_GAP / 2}" width="{left + PLOT_WIDTH}" '
                f'height="{group_height + GROUP_GAP}" fill="#f4f6f8"/>')
        lines = name_lines[name]
        first_baseline = y0 + group_height / 2 - (len(lines) - 1) * 7 + 4
        add(f'<text x="{left - 10}" y="{first_baseline:.1f}" text-anchor="end" font-weight="bold">'
            + "".join(f'<tspan x="{left - 10}" dy="{0 if i == 0 else 14}">{escape(line)}</tspan>'
                      for i, line in enumerate(lines)) + "</text>")
        default_ms = bars["default"][0]
        for slot, (series, colour) in enumerate(SERIES):
            ms, note = bars[series]
            y = y0 + slot * (BAR_HEIGHT + BAR_GAP)
            baseline = y + BAR_HEIGHT - 2
            if ms is None:
                add(f'<text x="{left + 4}" y="{baseline}" font-size="{FONT_SIZE - 2}" font-style="italic" '
                    f'fill="#888">{escape(series)}: {escape(shorten(note, 90))}</text>')
                continue
            bar = max(1.0, axis.x(ms))
            label = format_ms(ms)
            if series == "tuned" and default_ms:
                label += f"  ({default_ms / ms:.2f}\u00d7 default)"
            if series == "tuned" and note:
                label += f" \u2014 {shorten(note, 40)}"
            add(f'<rect x="{left}" y="{y}" width="{bar:.1f}" height="{BAR_HEIGHT}" fill="{colour}">'
                f'<title>{escape(name)} \u2014 {escape(series)}: {ms:g} ms</title></rect>')
            add(f'<text x="{left + bar + 4:.1f}" y="{baseline}" font-size="{FONT_SIZE - 1}" fill="#333">'
                f'{escape(label)}</text>')
    add(f'<line x1="{left}" y1="{top - 6}" x2="{left}" y2="{bottom}" stroke="#222"/>')

    # Whole-model totals, where every kernel has both times.
    if all(bars["default"][0] and bars["tuned"][0] for _, bars in rows):
        total_default = sum(bars["default"][0] for _, bars in rows)
        total_tuned = sum(bars["tuned"][0] for _, bars in rows)
        add(f'<text x="{left + PLOT_WIDTH / 2}" y="{bottom + 56}" text-anchor="middle" fill="#0072B2">'
            f'all {len(rows)} kernels: default {format_ms(total_default)}, tuned {format_ms(total_tuned)} '
            f'({total_default / total_tuned:.2f}\u00d7)</text>')
    add("</svg>")
    return "\n".join(out) + "\n"


def write_png(svg_path, png_path):
    """Converts with rsvg-convert or ImageMagick; returns an explanation if neither can."""
    if shutil.which("rsvg-convert"):
        command = ["rsvg-convert", "--format", "png", "--output", png_path, svg_path]
    elif shutil.which("convert"):
        command = ["convert", "-density", "96", svg_path, png_path]
    else:
        return ("cannot write PNG: neither rsvg-convert (Debian: apt-get install librsvg2-bin) nor ImageMagick's "
                f"convert is installed; the SVG {svg_path} opens in any web browser")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return f"cannot write PNG: {' '.join(command)} failed: {result.stderr.strip()}"
    return None


def main():
    parser = argparse.ArgumentParser(description="SVG bar chart of per-kernel times from `cnnc tune --json`.")
    parser.add_argument("input", help="JSON file written by `cnnc tune --json FILE`")
    parser.add_argument("-o", "--output", help="SVG to write (default: the input's name with .svg)")
    parser.add_argument("--png", nargs="?", const="", metavar="FILE",
                        help="also write a PNG (default name: the SVG's with .png)")
    parser.add_argument("--linear", action="store_true", help="linear time axis instead of logarithmic")
    parser.add_argument("--title", help="chart title (default: model and batch size)")
    args = parser.parse_args()

    try:
        data, rows = read_tune_json(args.input)
        svg = render_svg(data, rows, log=not args.linear, title=args.title)
    except InputError as e:
        fail(args.input, str(e))
    output = args.output or os.path.splitext(args.input)[0] + ".svg"
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(svg)
    except OSError as e:
        fail(output, f"cannot write: {e.strerror}")
    print(f"wrote {output} ({len(rows)} kernels)")
    if args.png is not None:
        png = args.png or os.path.splitext(output)[0] + ".png"
        problem = write_png(output, png)
        if problem:
            print(f"plot_kernels.py: {problem}", file=sys.stderr)
            sys.exit(1)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
