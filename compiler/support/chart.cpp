// Charts as SVG (see chart.h).
#include "support/chart.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "support/diagnostics.h"
#include "support/text.h"

namespace fs = std::filesystem;

namespace cnnc::chart {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A coordinate, short and exact enough for a drawing.
std::string px(double value) {
  std::string text = fmt::format("{:.2f}", value);
  if (text == "-0.00") text = "0.00";
  return text;
}

// The length of a UTF-8 sequence that starts at `text[i]` and is valid, or 0.
size_t utf8_sequence(const std::string& text, size_t i) {
  unsigned char c = static_cast<unsigned char>(text[i]);
  size_t length = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (length == 0 || i + length > text.size()) return 0;
  for (size_t k = 1; k < length; ++k)
    if ((static_cast<unsigned char>(text[i + k]) >> 6) != 0x2) return 0;
  if (length == 2 && c < 0xc2) return 0;  // overlong
  return length;
}

// The start of an SVG document of `width` x `height` with a white background and a <title>.
std::string svg_open(double width, double height, const std::string& title) {
  return fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<title>{2}</title>\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"#ffffff\"/>\n",
      px(width), px(height), xml_escape(title));
}

std::string text_element(double x, double y, const std::string& text, const std::string& attributes = "") {
  return fmt::format("<text x=\"{}\" y=\"{}\"{}{}>{}</text>\n", px(x), px(y), attributes.empty() ? "" : " ", attributes,
                     xml_escape(text));
}

// The title and subtitle at the top of a chart.
std::string header(const std::string& title, const std::string& subtitle) {
  std::string svg = text_element(20, 28, title, "class=\"chart-title\" font-size=\"18\" font-weight=\"bold\"");
  if (!subtitle.empty()) svg += text_element(20, 48, subtitle, "class=\"chart-subtitle\" fill=\"#555555\"");
  return svg;
}

// Bare nan, -nan, inf, -inf, infinity (outside strings) as null: a diverged run writes them, and
// they are not JSON.
std::string nonfinite_as_null(const std::string& line) {
  std::string out;
  bool in_string = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < line.size())
        out += line[++i];
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    size_t start = i + (c == '-' || c == '+' ? 1 : 0);
    if (start < line.size() && std::isalpha(static_cast<unsigned char>(line[start]))) {
      size_t end = start;
      while (end < line.size() && std::isalpha(static_cast<unsigned char>(line[end]))) ++end;
      std::string word = line.substr(start, end - start);
      std::transform(word.begin(), word.end(), word.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
      if (word == "nan" || word == "inf" || word == "infinity") {
        out += "null";
        i = end - 1;
        continue;
      }
    }
    out += c;
  }
  return out;
}

}  // namespace

std::string xml_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    switch (c) {
      case '&':
        out += "&amp;";
        ++i;
        continue;
      case '<':
        out += "&lt;";
        ++i;
        continue;
      case '>':
        out += "&gt;";
        ++i;
        continue;
      case '"':
        out += "&quot;";
        ++i;
        continue;
      case '\'':
        out += "&apos;";
        ++i;
        continue;
      default: break;
    }
    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
      out += '?';
      ++i;
      continue;
    }
    size_t length = utf8_sequence(text, i);
    if (length == 0) {
      out += '?';
      ++i;
      continue;
    }
    out.append(text, i, length);
    i += length;
  }
  return out;
}

Axis nice_axis(double lo, double hi, int target_ticks, bool integers) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0, hi = 1;
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) {
    double pad = integers ? 1 : lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  double rough = (hi - lo) / std::max(1, target_ticks - 1);
  double power = std::pow(10.0, std::floor(std::log10(rough)));
  double fraction = rough / power;
  double step = (fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10) * power;
  if (integers) step = std::max(1.0, std::round(step));
  Axis axis;
  axis.lo = std::floor(lo / step + 1e-9) * step;
  axis.hi = std::ceil(hi / step - 1e-9) * step;
  if (axis.hi <= axis.lo) axis.hi = axis.lo + step;
  int count = int(std::lround((axis.hi - axis.lo) / step));
  // (Rounding may leave an end a hair inside the data: 6 * 5e-6 < 3e-5.)
  axis.lo = std::min(axis.lo, lo);
  axis.hi = std::max(axis.hi, hi);
  for (int i = 0; i <= count; ++i) {
    double value = i == 0 ? axis.lo : i == count ? axis.hi : axis.lo + i * step;
    if (std::fabs(value) < step * 1e-9) value = 0;
    axis.ticks.push_back(value);
  }
  axis.decimals = integers ? 0 : std::max(0, int(-std::floor(std::log10(step) + 1e-9)));
  return axis;
}

std::string tick_label(double value, int decimals) {
  std::string text = fmt::format("{:.{}f}", value, decimals);
  if (text.size() > 1 && text[0] == '-' && text.find_first_not_of("-0.") == std::string::npos) text.erase(0, 1);
  return text;
}

// --- Line charts ----------------------------------------------------------------------------

std::string line_chart_svg(const std::string& title, const std::string& subtitle,
                           const std::vector<LinePanel>& panels) {
  const double panel_width = 460, panel_height = 330, gap = 20, top = 84;
  const double left = 64, right = 16, above = 30, below = 48;  // the plot area inside a panel
  double width = 2 * gap + double(panels.size()) * panel_width + double(std::max<size_t>(panels.size(), 1) - 1) * gap;
  double height = top + panel_height + 10;
  std::string svg = svg_open(width, height, title) + header(title, subtitle);

  // The legend: every series name once, in order of appearance.
  std::vector<const Series*> legend;
  std::set<std::string> named;
  for (const LinePanel& panel : panels)
    for (const Series& series : panel.series)
      if (named.insert(series.name).second) legend.push_back(&series);
  svg += "<g class=\"legend\">\n";
  double x = 20;
  for (const Series* series : legend) {
    svg += fmt::format("<line x1=\"{}\" y1=\"66\" x2=\"{}\" y2=\"66\" stroke=\"{}\" stroke-width=\"2.5\"{}/>\n", px(x),
                       px(x + 28), xml_escape(series->color), series->dashed ? " stroke-dasharray=\"6 4\"" : "");
    svg += text_element(x + 34, 70, series->name);
    x += 34 + 7.0 * double(series->name.size()) + 24;
  }
  svg += "</g>\n";

  for (size_t p = 0; p < panels.size(); ++p) {
    const LinePanel& panel = panels[p];
    double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
    size_t points = 0;
    // x over every point, drawn or not (the panels of one chart then share their x axis).
    for (const Series& series : panel.series)
      for (size_t i = 0; i < series.x.size() && i < series.y.size(); ++i) {
        if (!std::isfinite(series.x[i])) continue;
        x_lo = std::min(x_lo, series.x[i]);
        x_hi = std::max(x_hi, series.x[i]);
        if (!std::isfinite(series.y[i])) continue;
        y_lo = std::min(y_lo, series.y[i]);
        y_hi = std::max(y_hi, series.y[i]);
        ++points;
      }
    if (!(x_lo <= x_hi)) x_lo = 0, x_hi = 1;
    if (points == 0) y_lo = 0, y_hi = 1;
    if (panel.integer_x && x_lo == x_hi) x_lo = std::max(0.0, x_lo - 1), x_hi += 1;
    if (panel.y_from_zero && y_lo >= 0) y_lo = 0;
    Axis x_axis = nice_axis(x_lo, x_hi, 6, panel.integer_x);
    Axis y_axis = nice_axis(y_lo, y_hi, 6, false);
    double area_x = left, area_y = above, area_w = panel_width - left - right, area_h = panel_height - above - below;
    auto map_x = [&](double v) { return area_x + (v - x_axis.lo) / (x_axis.hi - x_axis.lo) * area_w; };
    auto map_y = [&](double v) { return area_y + area_h - (v - y_axis.lo) / (y_axis.hi - y_axis.lo) * area_h; };

    double origin_x = gap + double(p) * (panel_width + gap);
    svg += fmt::format(
        "<g class=\"panel\" data-title=\"{}\" data-x-min=\"{}\" data-x-max=\"{}\" data-y-min=\"{}\" data-y-max=\"{}\" "
        "transform=\"translate({},{})\">\n",
        xml_escape(panel.title), x_axis.lo, x_axis.hi, y_axis.lo, y_axis.hi, px(origin_x), px(top));
    svg += text_element(area_x, 18, panel.title, "class=\"panel-title\" font-size=\"14\" font-weight=\"bold\"");
    svg += fmt::format(
        "<rect class=\"plot-area\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" "
        "stroke=\"#999999\"/>\n",
        px(area_x), px(area_y), px(area_w), px(area_h));
    // Grid and ticks.
    svg += "<g class=\"y-axis\">\n";
    for (double tick : y_axis.ticks) {
      double y = map_y(tick);
      svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#e0e0e0\"/>\n", px(area_x), px(y),
                         px(area_x + area_w), px(y));
      svg += text_element(area_x - 6, y + 4, tick_label(tick, y_axis.decimals), "text-anchor=\"end\"");
    }
    svg += "</g>\n<g class=\"x-axis\">\n";
    for (double tick : x_axis.ticks) {
      double x_tick = map_x(tick);
      svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999999\"/>\n", px(x_tick),
                         px(area_y + area_h), px(x_tick), px(area_y + area_h + 5));
      svg += text_element(x_tick, area_y + area_h + 18, tick_label(tick, x_axis.decimals), "text-anchor=\"middle\"");
    }
    svg += "</g>\n";
    svg += text_element(area_x + area_w / 2, area_y + area_h + 38, panel.x_label, "text-anchor=\"middle\"");
    svg += fmt::format(
        "<text x=\"0\" y=\"0\" text-anchor=\"middle\" transform=\"translate({},{}) rotate(-90)\">{}</text>\n", px(16),
        px(area_y + area_h / 2), xml_escape(panel.y_label));
    // The lines, then a marker on each point (with its value as a tooltip) where they are few.
    for (const Series& series : panel.series) {
      std::vector<std::string> coordinates;
      std::string markers;
      size_t finite = 0;
      for (size_t i = 0; i < series.x.size() && i < series.y.size(); ++i)
        if (std::isfinite(series.x[i]) && std::isfinite(series.y[i])) ++finite;
      for (size_t i = 0; i < series.x.size() && i < series.y.size(); ++i) {
        if (!std::isfinite(series.x[i]) || !std::isfinite(series.y[i])) continue;
        double cx = map_x(series.x[i]), cy = map_y(series.y[i]);
        coordinates.push_back(px(cx) + "," + px(cy));
        if (finite <= 60)
          markers += fmt::format(
              "<circle class=\"marker\" cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\"><title>{}</title></circle>\n", px(cx),
              px(cy), xml_escape(series.color),
              xml_escape(fmt::format("{} {}, {} {}: {}", series.name, panel.title, panel.x_label,
                                     tick_label(series.x[i], panel.integer_x ? 0 : 4),
                                     fmt::format(fmt::runtime(panel.value_format), series.y[i]))));
      }
      svg += fmt::format(
          "<polyline class=\"series\" data-name=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{} "
          "stroke-linejoin=\"round\" points=\"{}\"/>\n",
          xml_escape(series.name), xml_escape(series.color), series.dashed ? " stroke-dasharray=\"6 4\"" : "",
          fmt::join(coordinates, " "));
      svg += markers;
    }
    svg += "</g>\n";
  }
  svg += "</svg>\n";
  return svg;
}

// --- Bar charts -----------------------------------------------------------------------------

std::string bar_chart_svg(const std::string& title, const std::string& subtitle, const std::vector<BarColumn>& columns,
                          const std::vector<BarSection>& sections) {
  const double char_width = 7.3, row_height = 20, bar_height = 13, section_height = 26, column_width = 330, gap = 24;
  const double bar_room = column_width - 96;  // the longest bar; its value is written after it
  size_t longest = 8;
  for (const BarSection& section : sections)
    for (const BarRow& row : section.rows) longest = std::max(longest, row.label.size());
  double label_width = std::min(440.0, char_width * double(longest) + 16);
  double width = 20 + label_width + double(columns.size()) * (column_width + gap);
  // A legend for the markers of a column that has some.
  std::vector<bool> has_markers(columns.size(), false);
  for (const BarSection& section : sections)
    for (const BarRow& row : section.rows)
      for (size_t c = 0; c < columns.size() && c < row.markers.size(); ++c)
        if (std::isfinite(row.markers[c]) && !columns[c].marker_name.empty()) has_markers[c] = true;
  bool any_marker = std::find(has_markers.begin(), has_markers.end(), true) != has_markers.end();
  double legend_y = 66, heads = any_marker ? 92 : 72, first_row = heads + 30;
  double rows_height = 0;
  for (const BarSection& section : sections) rows_height += section_height + row_height * double(section.rows.size());
  double height = first_row + rows_height + 16;
  std::string svg = svg_open(width, height, title) + header(title, subtitle);
  if (any_marker) {
    svg += "<g class=\"legend\">\n";
    double x = 20;
    for (size_t c = 0; c < columns.size(); ++c) {
      const BarColumn& column = columns[c];
      if (!has_markers[c]) continue;
      svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#000000\" stroke-width=\"2\"/>\n",
                         px(x + 4), px(legend_y - 8), px(x + 4), px(legend_y + 4));
      svg += text_element(x + 12, legend_y + 2, column.marker_name);
      x += 12 + 7.0 * double(column.marker_name.size()) + 24;
    }
    svg += "</g>\n";
  }

  // The labels, with each section's title.
  svg += "<g class=\"labels\" font-family=\"monospace\">\n";
  double y = first_row;
  for (const BarSection& section : sections) {
    svg += text_element(20, y + 17, section.title,
                        "class=\"section-title\" font-family=\"sans-serif\" font-weight=\"bold\"");
    y += section_height;
    for (const BarRow& row : section.rows) {
      svg += text_element(20, y + row_height / 2 + 4, row.label);
      y += row_height;
    }
  }
  svg += "</g>\n";

  for (size_t c = 0; c < columns.size(); ++c) {
    const BarColumn& column = columns[c];
    double most = 0;
    for (const BarSection& section : sections)
      for (const BarRow& row : section.rows) {
        if (c < row.values.size() && std::isfinite(row.values[c])) most = std::max(most, row.values[c]);
        if (c < row.markers.size() && std::isfinite(row.markers[c])) most = std::max(most, row.markers[c]);
      }
    Axis axis = nice_axis(0, most > 0 ? most : 1, 5, false);
    auto length = [&](double v) { return std::max(0.0, std::min(v, axis.hi)) / axis.hi * bar_room; };
    double origin_x = 20 + label_width + double(c) * (column_width + gap);
    svg += fmt::format(
        "<g class=\"bar-column\" data-column=\"{}\" data-title=\"{}\" data-max=\"{}\" transform=\"translate({},0)\">\n",
        c, xml_escape(column.title), axis.hi, px(origin_x));
    svg += text_element(0, heads, column.title, "class=\"column-title\" font-weight=\"bold\"");
    for (double tick : axis.ticks)
      svg += text_element(length(tick), first_row - 6, tick_label(tick, axis.decimals),
                          "text-anchor=\"middle\" fill=\"#555555\"");
    y = first_row;
    for (const BarSection& section : sections) {
      y += section_height;
      // Each section's rows on a plot area of their own (its title stays clear across the columns).
      double section_rows = row_height * double(section.rows.size());
      svg += fmt::format(
          "<rect class=\"plot-area\" x=\"0\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" "
          "stroke=\"#cccccc\"/>\n",
          px(y), px(bar_room), px(section_rows));
      for (double tick : axis.ticks)
        svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#e0e0e0\"/>\n", px(length(tick)),
                           px(y), px(length(tick)), px(y + section_rows));
      for (const BarRow& row : section.rows) {
        double value = c < row.values.size() ? row.values[c] : kNaN;
        double bar_y = y + (row_height - bar_height) / 2;
        if (std::isfinite(value)) {
          std::string shown = fmt::format("{:.{}f}{}", value, column.decimals, column.suffix);
          svg += fmt::format(
              "<rect class=\"bar\" data-label=\"{}\" data-column=\"{}\" data-value=\"{}\" x=\"0\" y=\"{}\" "
              "width=\"{}\" "
              "height=\"{}\" fill=\"{}\"><title>{}</title></rect>\n",
              xml_escape(row.label), c, value, px(bar_y), px(length(value)), px(bar_height), xml_escape(column.color),
              xml_escape(row.label + ": " + shown));
          svg += text_element(length(value) + 4, y + row_height / 2 + 4, shown, "font-size=\"11\"");
        }
        double marker = c < row.markers.size() ? row.markers[c] : kNaN;
        if (std::isfinite(marker)) {
          double x = length(marker);
          svg += fmt::format(
              "<line class=\"marker\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#000000\" stroke-width=\"2\">"
              "<title>{}</title></line>\n",
              px(x), px(bar_y - 2), px(x), px(bar_y + bar_height + 2),
              xml_escape(fmt::format("{}: {} {:.{}f}{}", row.label, column.marker_name, marker, column.decimals,
                                     column.suffix)));
        }
        y += row_height;
      }
    }
    svg += "</g>\n";
  }
  svg += "</svg>\n";
  return svg;
}

// --- Training metrics -----------------------------------------------------------------------

Metrics read_metrics(const std::string& path) {
  std::error_code error;
  if (!fs::exists(path, error))
    throw UserError(SourceLoc{path, 0, 0}, "no such file (a metrics file is written by cnnc train --metrics FILE)");
  if (fs::is_directory(path, error)) throw UserError(SourceLoc{path, 0, 0}, "is a directory, not a metrics file");
  std::ifstream in(path);
  if (!in) throw UserError(SourceLoc{path, 0, 0}, "cannot read the file");
  Metrics metrics;
  std::map<int64_t, EpochRow> rows;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    auto fail = [&](int column, const std::string& message) -> UserError {
      return UserError(SourceLoc{path, number, column}, message);
    };
    nlohmann::json object;
    try {
      object = nlohmann::json::parse(nonfinite_as_null(line));
    } catch (const nlohmann::json::parse_error& e) {
      // "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error while ..."
      std::string what = e.what();
      size_t column = what.find("column ");
      size_t reason = column == std::string::npos ? std::string::npos : what.find(": ", column);
      throw fail(int(std::min<size_t>(e.byte, line.size() + 1)),
                 fmt::format("not a line of JSON ({}); a metrics file has one JSON object per line, as cnnc train "
                             "--metrics writes it",
                             reason == std::string::npos ? what : what.substr(reason + 2)));
    }
    if (!object.is_object())
      throw fail(1,
                 "not a JSON object; each line of a metrics file is one epoch's {\"epoch\": ..., \"loss\": ..., ...}");
    // A number, or null/nan/inf (NaN); `required` fields must be there.
    auto number_field = [&](const char* key, bool required) -> std::optional<double> {
      auto it = object.find(key);
      if (it == object.end()) {
        if (required) throw fail(0, fmt::format("no \"{}\" field; every epoch needs epoch, loss and accuracy", key));
        return std::nullopt;
      }
      if (it->is_null()) return kNaN;
      if (!it->is_number()) throw fail(0, fmt::format("\"{}\" is {}, not a number", key, it->dump()));
      return it->get<double>();
    };
    double epoch = *number_field("epoch", true);
    if (!std::isfinite(epoch) || epoch < 0 || epoch != std::floor(epoch) || epoch > 1e12)
      throw fail(0, fmt::format("\"epoch\" is {}, not a whole number of epochs", object["epoch"].dump()));
    EpochRow row;
    row.epoch = int64_t(epoch);
    row.loss = *number_field("loss", true);
    row.accuracy = *number_field("accuracy", true);
    row.val_loss = number_field("val_loss", false);
    row.val_accuracy = number_field("val_accuracy", false);
    if (auto model = object.find("model"); model != object.end() && model->is_string())
      metrics.model = model->get<std::string>();
    rows[row.epoch] = row;  // a repeated epoch (a resumed run): the later line
  }
  if (in.bad()) throw UserError(SourceLoc{path, 0, 0}, "cannot read the file");
  if (rows.empty())
    throw UserError(SourceLoc{path, 0, 0},
                    number == 0 ? "the file is empty: no epochs to plot (cnnc train --metrics writes a line per epoch)"
                                : "no epochs to plot: the file has only blank lines");
  for (auto& [epoch, row] : rows) metrics.epochs.push_back(row);
  return metrics;
}

std::string training_curves_svg(const Metrics& metrics, const std::string& title) {
  const std::string train_color = "#1f77b4", validation_color = "#e8590c";
  LinePanel loss{"loss", "epoch", "loss (cross-entropy)", {}, true, true, "{:.4f}"};
  LinePanel accuracy{"accuracy", "epoch", "accuracy", {}, false, true, "{:.4f}"};
  Series train_loss{"train", train_color, false, {}, {}}, val_loss{"validation", validation_color, true, {}, {}};
  Series train_accuracy = train_loss, val_accuracy = val_loss;
  for (const EpochRow& row : metrics.epochs) {
    double epoch = double(row.epoch);
    train_loss.x.push_back(epoch);
    train_loss.y.push_back(row.loss);
    train_accuracy.x.push_back(epoch);
    train_accuracy.y.push_back(row.accuracy);
    if (row.val_loss) {
      val_loss.x.push_back(epoch);
      val_loss.y.push_back(*row.val_loss);
    }
    if (row.val_accuracy) {
      val_accuracy.x.push_back(epoch);
      val_accuracy.y.push_back(*row.val_accuracy);
    }
  }
  loss.series.push_back(train_loss);
  if (!val_loss.x.empty()) loss.series.push_back(val_loss);
  accuracy.series.push_back(train_accuracy);
  if (!val_accuracy.x.empty()) accuracy.series.push_back(val_accuracy);

  const EpochRow& last = metrics.epochs.back();
  std::string subtitle =
      fmt::format("{}; epoch {}: loss {:.4f}, accuracy {:.4f}", plural(int64_t(metrics.epochs.size()), "epoch"),
                  last.epoch, last.loss, last.accuracy);
  if (last.val_loss) subtitle += fmt::format(", val_loss {:.4f}", *last.val_loss);
  if (last.val_accuracy) subtitle += fmt::format(", val_accuracy {:.4f}", *last.val_accuracy);
  int64_t not_finite = 0;
  for (const Series* series : {&train_loss, &val_loss, &train_accuracy, &val_accuracy})
    for (double y : series->y) not_finite += std::isfinite(y) ? 0 : 1;
  if (not_finite > 0)
    subtitle += fmt::format(" ({} not a finite number, left out: a diverged run?)", plural(not_finite, "value"));
  std::string heading = !title.empty()          ? title
                        : metrics.model.empty() ? "training curves"
                                                : metrics.model + ": training curves";
  return line_chart_svg(heading, subtitle, {loss, accuracy});
}

void check_svg_path(const std::string& path) {
  std::string extension = fs::path(path).extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  if (extension != ".svg")
    throw UserError(SourceLoc{path, 0, 0},
                    fmt::format("cnnc draws charts as SVG only{}: name the file with .svg (any web browser opens it)",
                                extension == ".png" ? ", not PNG" : ""));
}

void write_svg(const std::string& path, const std::string& svg) {
  check_svg_path(path);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << svg;
  out.close();
  if (!out) throw UserError(SourceLoc{path, 0, 0}, "cannot write the file");
}

}  // namespace cnnc::chart
