// Charts as SVG, written by hand (no dependencies beyond fmt): line charts in side-by-side
// panels (`cnnc plot`: loss and accuracy per epoch, train and validation) and horizontal bar
// charts in columns (`cnnc bench --chart`: each kernel's time and % of the FMA peak). An SVG
// file opens in any web browser.
//
// The drawing is plain and regular so that a program can read it back (the tests do): every
// panel is a <g class="panel"> with data-x-min/-x-max/-y-min/-y-max (its axes' ranges), holding a
// <rect class="plot-area"> and one <polyline class="series" data-name="..."> per series whose
// points are the data mapped linearly into that rectangle; every bar is a <rect class="bar">
// with data-label, data-column and data-value, inside a <g class="bar-column"> with data-max
// (the value of a full-length bar) and a <rect class="plot-area"> per section around its bars.
//
// Also here: reading the metrics file of `cnnc train --metrics` (JSON Lines).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cnnc::chart {

// `text` with &, <, >, " and ' replaced by XML entities; bytes that XML 1.0 forbids (control
// characters other than tab, newline and carriage return) replaced by '?'.
std::string xml_escape(const std::string& text);

// An axis over [lo, hi]: a "nice" range that contains it, and its ticks (steps of 1, 2 or 5
// times a power of ten, about `target_ticks` of them; whole numbers only where `integers`).
struct Axis {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
  int decimals = 0;  // digits after the point that tell the ticks apart
};
Axis nice_axis(double lo, double hi, int target_ticks = 5, bool integers = false);
// A tick value as its label ("0.25", "1,000", "3").
std::string tick_label(double value, int decimals);

// --- Line charts ----------------------------------------------------------------------------

struct Series {
  std::string name;   // in the legend
  std::string color;  // an SVG color, "#1f77b4"
  bool dashed = false;
  std::vector<double> x, y;  // one point per x; a y that is not finite (NaN: a diverged loss) is left out
};

struct LinePanel {
  std::string title;  // "loss"
  std::string x_label, y_label;
  std::vector<Series> series;
  bool y_from_zero = false;             // the y axis starts at 0 (when every value is >= 0)
  bool integer_x = true;                // x ticks are whole numbers (epochs)
  std::string value_format = "{:.4f}";  // a point's value in its tooltip
};

// One SVG: `title` above, a legend of every series name, then the panels side by side.
std::string line_chart_svg(const std::string& title, const std::string& subtitle, const std::vector<LinePanel>& panels);

// --- Bar charts -----------------------------------------------------------------------------

struct BarColumn {
  std::string title;        // "time (ms)"
  std::string color;        // the bars'
  int decimals = 1;         // of the value written after each bar
  std::string suffix;       // after that value: "%", " ms"
  std::string marker_name;  // what a row's marker in this column means ("" : no markers)
};

struct BarRow {
  std::string label;            // the kernel's name
  std::vector<double> values;   // one per column; NaN: no bar (nothing measured)
  std::vector<double> markers;  // one per column or none; NaN: no marker (a thin line across the bar)
};

struct BarSection {
  std::string title;  // "inference kernels (batch 256)"
  std::vector<BarRow> rows;
};

// One SVG: `title`, `subtitle`, then for each section its title and one row per BarRow: the
// label, then a bar in each column (each column has its own scale from 0).
std::string bar_chart_svg(const std::string& title, const std::string& subtitle, const std::vector<BarColumn>& columns,
                          const std::vector<BarSection>& sections);

// --- Training metrics -----------------------------------------------------------------------

struct EpochRow {
  int64_t epoch = 0;
  double loss = 0, accuracy = 0;                 // NaN where the file says nan / null
  std::optional<double> val_loss, val_accuracy;  // absent: no validation that epoch
};

struct Metrics {
  std::string model;             // a "model" field of any line, if there is one
  std::vector<EpochRow> epochs;  // sorted by epoch; where a file repeats an epoch (a resumed run), the later line
};

// Reads the JSON Lines of `cnnc train --metrics`: one object per line with at least epoch, loss
// and accuracy; val_loss and val_accuracy optional; other fields ignored; blank lines skipped.
// `nan` and `inf` (written by a run whose loss diverged) read as not-a-number. A missing file,
// a line that is not such an object, or no epoch at all is a UserError at FILE:LINE:COL.
Metrics read_metrics(const std::string& path);

// Two panels, loss and accuracy per epoch, each with a train and (where the file has it) a
// validation line. `title` "" : "<model>: training curves" ("training curves" where the file
// names no model).
std::string training_curves_svg(const Metrics& metrics, const std::string& title);

// A UserError unless `path` ends in .svg (cnnc draws SVG only, not PNG): checked before long work.
void check_svg_path(const std::string& path);
// Writes `svg` to `path`, which must end in .svg (check_svg_path). A file that cannot be written
// is a UserError.
void write_svg(const std::string& path, const std::string& svg);

}  // namespace cnnc::chart
