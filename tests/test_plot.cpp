// Charts (compiler/support/chart.h): the SVG of `cnnc plot` and `cnnc bench --chart`, read back
// by a small XML reader below: well-formed, the panels, lines and bars the data calls for, every
// point mapped into its plot area. Then the commands as a user runs them: exit status and
// messages on bad input, and a chart of a real model's kernels.
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "support/chart.h"
#include "support/diagnostics.h"
#include "support/text.h"

namespace fs = std::filesystem;
using namespace cnnc;

namespace {

// --- A small XML reader: enough of XML 1.0 to say whether a file is well-formed and to walk
// its elements. Throws std::runtime_error with the offset of the first problem.
struct Element {
  std::string name;
  std::map<std::string, std::string> attributes;
  std::string text;  // character data directly inside, entities decoded
  int parent = -1;
  std::vector<int> children;
  std::string attribute(const std::string& key) const {
    auto it = attributes.find(key);
    if (it == attributes.end()) throw std::runtime_error("<" + name + "> has no attribute " + key);
    return it->second;
  }
  double number(const std::string& key) const { return std::stod(attribute(key)); }
};

class Xml {
 public:
  explicit Xml(const std::string& text) : s_(text) { parse(); }
  const std::vector<Element>& elements() const { return elements_; }
  const Element& root() const { return elements_.at(0); }
  // Elements named `name` under element `under` (any depth), with `key`="value" where given.
  std::vector<const Element*> find(int under, const std::string& name, const std::string& key = "",
                                   const std::string& value = "") const {
    std::vector<const Element*> found;
    for (int child : elements_[size_t(under)].children) {
      const Element& e = elements_[size_t(child)];
      auto it = e.attributes.find(key);
      if (e.name == name && (key.empty() || (it != e.attributes.end() && it->second == value))) found.push_back(&e);
      for (const Element* deeper : find(child, name, key, value)) found.push_back(deeper);
    }
    return found;
  }
  int index(const Element* e) const { return int(e - elements_.data()); }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("not well-formed at byte " + std::to_string(i_) + ": " + what);
  }
  bool starts(const char* prefix) const { return s_.compare(i_, std::strlen(prefix), prefix) == 0; }
  static bool name_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == ':' ||
           static_cast<unsigned char>(c) >= 0x80;
  }
  std::string name() {
    size_t start = i_;
    if (i_ >= s_.size() || !(std::isalpha(static_cast<unsigned char>(s_[i_])) || s_[i_] == '_' || s_[i_] == ':'))
      fail("a name expected");
    while (i_ < s_.size() && name_char(s_[i_])) ++i_;
    return s_.substr(start, i_ - start);
  }
  void spaces() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  // Character data up to `end` (exclusive), with its entities decoded; no '<' allowed.
  std::string decode(size_t end) {
    std::string out;
    while (i_ < end) {
      char c = s_[i_];
      if (c == '<') fail("'<' in character data or an attribute value");
      if (c != '&') {
        out += c;
        ++i_;
        continue;
      }
      size_t semicolon = s_.find(';', i_);
      if (semicolon == std::string::npos || semicolon > end) fail("an '&' that starts no entity");
      std::string entity = s_.substr(i_ + 1, semicolon - i_ - 1);
      static const std::map<std::string, std::string> named = {
          {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}};
      if (named.count(entity)) {
        out += named.at(entity);
      } else if (entity.size() > 1 && entity[0] == '#') {
        long code = entity[1] == 'x' ? std::strtol(entity.c_str() + 2, nullptr, 16)
                                     : std::strtol(entity.c_str() + 1, nullptr, 10);
        if (code <= 0 || code > 0x7f) fail("a character reference this reader does not decode");
        out += char(code);
      } else {
        fail("unknown entity &" + entity + ";");
      }
      i_ = semicolon + 1;
    }
    return out;
  }
  void parse() {
    if (starts("<?xml")) {
      i_ = s_.find("?>");
      if (i_ == std::string::npos) fail("an unterminated XML declaration");
      i_ += 2;
    }
    std::vector<int> open;
    bool root_done = false;
    while (true) {
      size_t next = s_.find('<', i_);
      std::string text = decode(next == std::string::npos ? s_.size() : next);
      if (open.empty()) {
        if (text.find_first_not_of(" \t\r\n") != std::string::npos) fail("text outside the root element");
      } else {
        elements_[size_t(open.back())].text += text;
      }
      if (next == std::string::npos) break;
      i_ = next;
      if (starts("<!--")) {
        size_t end = s_.find("-->", i_);
        if (end == std::string::npos) fail("an unterminated comment");
        i_ = end + 3;
        continue;
      }
      if (starts("</")) {
        i_ += 2;
        std::string closing = name();
        spaces();
        if (i_ >= s_.size() || s_[i_] != '>') fail("'>' expected");
        ++i_;
        if (open.empty() || elements_[size_t(open.back())].name != closing)
          fail("</" + closing + "> closes nothing open");
        open.pop_back();
        if (open.empty()) root_done = true;
        continue;
      }
      ++i_;
      if (root_done) fail("a second root element");
      Element element;
      element.name = name();
      element.parent = open.empty() ? -1 : open.back();
      while (true) {
        size_t before = i_;
        spaces();
        if (i_ >= s_.size()) fail("an unterminated tag");
        if (s_[i_] == '>' || starts("/>")) break;
        if (i_ == before) fail("a space expected between attributes");
        std::string key = name();
        spaces();
        if (i_ >= s_.size() || s_[i_] != '=') fail("'=' expected after " + key);
        ++i_;
        spaces();
        if (i_ >= s_.size() || (s_[i_] != '"' && s_[i_] != '\'')) fail("a quoted value expected");
        char quote = s_[i_++];
        size_t end = s_.find(quote, i_);
        if (end == std::string::npos) fail("an unterminated attribute value");
        std::string value = decode(end);
        i_ = end + 1;
        if (!element.attributes.emplace(key, value).second) fail("attribute " + key + " twice");
      }
      int index = int(elements_.size());
      if (element.parent >= 0) elements_[size_t(element.parent)].children.push_back(index);
      elements_.push_back(element);
      if (starts("/>")) {
        i_ += 2;
        if (open.empty()) root_done = true;
      } else {
        ++i_;
        open.push_back(index);
      }
    }
    if (!open.empty()) fail("<" + elements_[size_t(open.back())].name + "> never closed");
    if (elements_.empty()) fail("no root element");
  }

  const std::string& s_;
  size_t i_ = 0;
  std::vector<Element> elements_;
};

std::vector<std::pair<double, double>> points_of(const Element& polyline) {
  std::vector<std::pair<double, double>> points;
  std::istringstream in(polyline.attribute("points"));
  std::string pair;
  while (in >> pair) {
    size_t comma = pair.find(',');
    REQUIRE(comma != std::string::npos);
    points.emplace_back(std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1)));
  }
  return points;
}

struct Area {
  double x, y, w, h;
  explicit Area(const Element& rect)
      : x(rect.number("x")), y(rect.number("y")), w(rect.number("width")), h(rect.number("height")) {}
  bool contains(double px, double py) const {
    return px >= x - 0.01 && px <= x + w + 0.01 && py >= y - 0.01 && py <= y + h + 0.01;
  }
};

struct Scratch {
  fs::path path;
  explicit Scratch(const std::string& name)
      : path(fs::temp_directory_path() / ("cnnc-" + name + "-" + std::to_string(getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Scratch() { fs::remove_all(path); }
};

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

void write_text(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// What a train run with validation writes (with a field this reader does not know).
std::string metrics_lines(int epochs, bool validation, const std::string& model = "") {
  std::string text;
  for (int e = 1; e <= epochs; ++e) {
    text += "{\"epoch\": " + std::to_string(e) + ", \"loss\": " + std::to_string(2.0 / e) +
            ", \"accuracy\": " + std::to_string(0.5 + 0.08 * e);
    if (validation)
      text += ", \"val_loss\": " + std::to_string(2.2 / e) + ", \"val_accuracy\": " + std::to_string(0.45 + 0.08 * e);
    text += ", \"seconds\": 3.2, \"images_per_second\": 18000.5, \"learning_rate\": 0.001";
    if (!model.empty()) text += ", \"model\": \"" + model + "\"";
    text += "}\n";
  }
  return text;
}

// Checks a training-curves SVG against its metrics: two panels (loss, accuracy), each with a
// train line and, where there is validation, a validation line, one point per epoch, every point
// inside the plot area where the panel's axis ranges put it.
void check_curves(const std::string& svg, const chart::Metrics& metrics, size_t lines_per_panel) {
  INFO(svg.substr(0, 2000));
  Xml xml(svg);
  REQUIRE(xml.root().name == "svg");
  std::vector<const Element*> panels = xml.find(0, "g", "class", "panel");
  REQUIRE(panels.size() == 2);
  CHECK(panels[0]->attribute("data-title") == "loss");
  CHECK(panels[1]->attribute("data-title") == "accuracy");
  for (const Element* panel : panels) {
    bool is_loss = panel->attribute("data-title") == "loss";
    std::vector<const Element*> areas = xml.find(xml.index(panel), "rect", "class", "plot-area");
    REQUIRE(areas.size() == 1);
    Area area(*areas[0]);
    double x_min = panel->number("data-x-min"), x_max = panel->number("data-x-max");
    double y_min = panel->number("data-y-min"), y_max = panel->number("data-y-max");
    REQUIRE(x_max > x_min);
    REQUIRE(y_max > y_min);
    std::vector<const Element*> lines = xml.find(xml.index(panel), "polyline", "class", "series");
    REQUIRE(lines.size() == lines_per_panel);
    for (const Element* line : lines) {
      bool validation = line->attribute("data-name") == "validation";
      CHECK((validation || line->attribute("data-name") == "train"));
      std::vector<std::pair<double, double>> points = points_of(*line);
      REQUIRE(points.size() == metrics.epochs.size());
      for (size_t i = 0; i < points.size(); ++i) {
        const chart::EpochRow& row = metrics.epochs[i];
        double value =
            is_loss ? (validation ? *row.val_loss : row.loss) : (validation ? *row.val_accuracy : row.accuracy);
        CHECK(value >= y_min);
        CHECK(value <= y_max);
        auto [px, py] = points[i];
        CHECK(area.contains(px, py));
        CHECK(px == Approx(area.x + (double(row.epoch) - x_min) / (x_max - x_min) * area.w).margin(0.01));
        CHECK(py == Approx(area.y + area.h - (value - y_min) / (y_max - y_min) * area.h).margin(0.01));
      }
    }
  }
}

int run(const std::string& command) {
  int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_CASE("plot: the XML reader rejects what is not well-formed", "[plot]") {
  CHECK_NOTHROW(Xml("<?xml version=\"1.0\"?>\n<a x=\"1\"><b/>t &amp; &lt;u&gt;<c y='2'>z</c></a>\n"));
  for (const char* bad : {"<a><b></a></b>", "<a>", "<a x=\"1></a>", "<a>&nbsp;</a>", "<a>x & y</a>", "<a/><b/>",
                          "<a x=\"1\" x=\"2\"/>", "<a x=\"<\"/>", "text<a/>", ""}) {
    INFO(bad);
    CHECK_THROWS(Xml(bad));
  }
}

TEST_CASE("plot: training curves are well-formed SVG with a train and a validation line per panel", "[plot]") {
  Scratch scratch("plot-curves");
  fs::path file = scratch.path / "metrics.jsonl";
  write_text(file, metrics_lines(5, true, "mnist_<cnn>"));
  chart::Metrics metrics = chart::read_metrics(file.string());
  REQUIRE(metrics.epochs.size() == 5);
  CHECK(metrics.model == "mnist_<cnn>");
  CHECK(metrics.epochs[2].loss == Approx(2.0 / 3));
  REQUIRE(metrics.epochs[4].val_accuracy);
  CHECK(*metrics.epochs[4].val_accuracy == Approx(0.85));
  std::string svg = chart::training_curves_svg(metrics, "");
  check_curves(svg, metrics, 2);
  // The title names the model, escaped.
  Xml xml(svg);
  std::vector<const Element*> titles = xml.find(0, "text", "class", "chart-title");
  REQUIRE(titles.size() == 1);
  CHECK(titles[0]->text == "mnist_<cnn>: training curves");
  CHECK_THAT(xml.find(0, "text", "class", "chart-subtitle").at(0)->text, Catch::Contains("5 epochs"));
  // The legend names both lines.
  std::vector<const Element*> legend = xml.find(0, "g", "class", "legend");
  REQUIRE(legend.size() == 1);
  std::vector<const Element*> names = xml.find(xml.index(legend[0]), "text");
  REQUIRE(names.size() == 2);
  CHECK(names[0]->text == "train");
  CHECK(names[1]->text == "validation");
}

TEST_CASE("plot: one epoch, no validation, repeated epochs and a diverged loss", "[plot]") {
  Scratch scratch("plot-odd");
  fs::path file = scratch.path / "metrics.jsonl";

  write_text(file, metrics_lines(1, false));
  chart::Metrics one = chart::read_metrics(file.string());
  REQUIRE(one.epochs.size() == 1);
  CHECK_FALSE(one.epochs[0].val_loss);
  std::string svg = chart::training_curves_svg(one, "a title with <, & and \"quotes\"");
  check_curves(svg, one, 1);
  CHECK(Xml(svg).find(0, "text", "class", "chart-title").at(0)->text == "a title with <, & and \"quotes\"");
  CHECK_THAT(Xml(svg).find(0, "text", "class", "chart-subtitle").at(0)->text, Catch::Contains("1 epoch;"));

  // A resumed run appends; an epoch written twice counts once, the later line; order by epoch.
  write_text(file,
             "{\"epoch\": 2, \"loss\": 1.5, \"accuracy\": 0.6}\n\n"
             "{\"epoch\": 1, \"loss\": 2.0, \"accuracy\": 0.5}\r\n"
             "{\"epoch\": 2, \"loss\": 1.0, \"accuracy\": 0.7}\n");
  chart::Metrics repeated = chart::read_metrics(file.string());
  REQUIRE(repeated.epochs.size() == 2);
  CHECK(repeated.epochs[0].epoch == 1);
  CHECK(repeated.epochs[1].loss == 1.0);
  check_curves(chart::training_curves_svg(repeated, ""), repeated, 1);

  // nan / inf (a diverged run writes them; not JSON) read as not a number and are left out.
  write_text(file,
             "{\"epoch\": 1, \"loss\": 2.0, \"accuracy\": 0.5, \"val_loss\": nan, \"val_accuracy\": 0.4}\n"
             "{\"epoch\": 2, \"loss\": -nan, \"accuracy\": 0.1, \"val_loss\": inf, \"val_accuracy\": 0.1}\n"
             "{\"epoch\": 3, \"loss\": 3.0, \"accuracy\": 0.1, \"val_loss\": 4.0, \"val_accuracy\": 0.1}\n");
  chart::Metrics diverged = chart::read_metrics(file.string());
  REQUIRE(diverged.epochs.size() == 3);
  CHECK(std::isnan(diverged.epochs[1].loss));
  svg = chart::training_curves_svg(diverged, "");
  Xml xml(svg);
  std::map<std::string, size_t> drawn;  // panel/line -> points
  for (const Element* line : xml.find(0, "polyline", "class", "series"))
    drawn[xml.elements()[size_t(line->parent)].attribute("data-title") + "/" + line->attribute("data-name")] =
        points_of(*line).size();
  CHECK(drawn == std::map<std::string, size_t>{
                     {"loss/train", 2}, {"loss/validation", 1}, {"accuracy/train", 3}, {"accuracy/validation", 3}});
  CHECK_THAT(xml.find(0, "text", "class", "chart-subtitle").at(0)->text,
             Catch::Contains("3 values not a finite number"));
}

TEST_CASE("plot: a bad metrics file is an error at its line", "[plot]") {
  Scratch scratch("plot-errors");
  fs::path file = scratch.path / "m.jsonl";
  auto error_of = [&](const std::string& text) -> std::string {
    write_text(file, text);
    try {
      chart::read_metrics(file.string());
    } catch (const UserError& error) {
      return error.formatted();
    }
    return "(no error)";
  };
  std::string good = "{\"epoch\": 1, \"loss\": 1, \"accuracy\": 0.5}\n";
  CHECK_THAT(error_of(good + "{\"epoch\": 2, \"loss\": oops}\n"),
             Catch::StartsWith(file.string() + ":2:") && Catch::Contains("not a line of JSON"));
  CHECK_THAT(error_of(good + "{\"epoch\": 2, \"accuracy\": 0.5}\n"),
             Catch::StartsWith(file.string() + ":2:") && Catch::Contains("no \"loss\" field"));
  CHECK_THAT(error_of(good + "\n[1, 2]\n"),
             Catch::StartsWith(file.string() + ":3:") && Catch::Contains("not a JSON object"));
  CHECK_THAT(error_of("{\"epoch\": 1.5, \"loss\": 1, \"accuracy\": 0.5}\n"), Catch::Contains("not a whole number"));
  CHECK_THAT(error_of("{\"epoch\": 1, \"loss\": \"low\", \"accuracy\": 0.5}\n"), Catch::Contains("not a number"));
  CHECK_THAT(error_of(""), Catch::StartsWith(file.string() + ": error:") && Catch::Contains("no epochs"));
  CHECK_THAT(error_of("\n  \n"), Catch::Contains("no epochs"));
  CHECK_THROWS_WITH(chart::read_metrics((scratch.path / "missing.jsonl").string()), Catch::Contains("no such file"));
  CHECK_THROWS_AS(chart::check_svg_path("curves.png"), UserError);
  CHECK_NOTHROW(chart::check_svg_path("curves.SVG"));
}

TEST_CASE("plot: axes, escaping and counted nouns", "[plot]") {
  for (auto [lo, hi, integers] : {std::tuple{0.0, 1.0, false},
                                  {0.8123, 0.9078, false},
                                  {1.0, 1.0, true},
                                  {1.0, 37.0, true},
                                  {-3.5, 12.25, false},
                                  {0.0, 0.0, false},
                                  {1e-5, 3e-5, false}}) {
    INFO(lo << " " << hi);
    chart::Axis axis = chart::nice_axis(lo, hi, 6, integers);
    CHECK(axis.lo <= lo);
    CHECK(axis.hi >= hi);
    CHECK(axis.hi > axis.lo);
    REQUIRE(axis.ticks.size() >= 2);
    CHECK(axis.ticks.size() <= 12);
    CHECK(axis.ticks.front() == Approx(axis.lo));
    CHECK(axis.ticks.back() == Approx(axis.hi));
    for (double tick : axis.ticks)
      if (integers) CHECK(tick == std::round(tick));
    // The labels tell the ticks apart.
    for (size_t i = 1; i < axis.ticks.size(); ++i)
      CHECK(chart::tick_label(axis.ticks[i], axis.decimals) != chart::tick_label(axis.ticks[i - 1], axis.decimals));
  }
  CHECK(chart::xml_escape("a<b>&\"c'\x01") == "a&lt;b&gt;&amp;&quot;c&apos;?");
  CHECK(chart::xml_escape("caf\xc3\xa9 \xff") == "caf\xc3\xa9 ?");  // valid UTF-8 kept, a stray byte replaced
  CHECK(plural(1, "epoch") == "1 epoch");
  CHECK(plural(0, "epoch") == "0 epochs");
  CHECK(plural(2, "batch", "batches") == "2 batches");
  CHECK(fit_line("0123456789", 8) == "0123...");
  CHECK(clock_duration(42) == "42s");
  CHECK(clock_duration(558.4) == "9:18");
}

TEST_CASE("plot: a bar chart has a bar per row and column, to scale", "[plot]") {
  const double none = std::nan("");
  std::vector<chart::BarColumn> columns = {{"time (ms)", "#1f77b4", 3, "", ""},
                                           {"% of peak", "#2f9e44", 1, "%", "executed"}};
  std::vector<chart::BarSection> sections = {
      {"inference", {{"k1_conv2d", {1.5, 76.0}, {none, 110.0}}, {"k2_dense", {0.25, 12.5}, {}}}},
      {"training", {{"t1_conv2d", {3.0, 40.0}, {none, none}}, {"(the rest)", {0.5, none}, {}}}}};
  std::string svg = chart::bar_chart_svg("m: kernels", "2 threads", columns, sections);
  INFO(svg);
  Xml xml(svg);
  std::vector<const Element*> groups = xml.find(0, "g", "class", "bar-column");
  REQUIRE(groups.size() == 2);
  std::map<std::string, double> expected[2] = {
      {{"k1_conv2d", 1.5}, {"k2_dense", 0.25}, {"t1_conv2d", 3.0}, {"(the rest)", 0.5}},
      {{"k1_conv2d", 76.0}, {"k2_dense", 12.5}, {"t1_conv2d", 40.0}}};
  for (int c = 0; c < 2; ++c) {
    const Element& group = *groups[size_t(c)];
    double full = group.number("data-max");
    std::vector<const Element*> areas = xml.find(xml.index(&group), "rect", "class", "plot-area");
    REQUIRE(areas.size() == 2);  // one per section
    std::vector<const Element*> bars = xml.find(xml.index(&group), "rect", "class", "bar");
    REQUIRE(bars.size() == expected[c].size());
    for (const Element* bar : bars) {
      std::string label = bar->attribute("data-label");
      REQUIRE(expected[c].count(label));
      CHECK(bar->number("data-value") == Approx(expected[c][label]));
      CHECK(std::stoi(bar->attribute("data-column")) == c);
      bool inside = false;
      for (const Element* area : areas) {
        Area a(*area);
        inside =
            inside || (a.contains(bar->number("x"), bar->number("y")) &&
                       a.contains(bar->number("x") + bar->number("width"), bar->number("y") + bar->number("height")));
        // Lengths to scale: a full bar is the plot area's width.
        CHECK(bar->number("width") == Approx(expected[c][label] / full * a.w).margin(0.01));
      }
      CHECK(inside);
    }
    CHECK(full >= expected[c]["t1_conv2d"]);
  }
  // The executed marker of the first row, and its legend; labels in order.
  CHECK(xml.find(xml.index(groups[1]), "line", "class", "marker").size() == 1);
  CHECK(xml.find(0, "g", "class", "legend").size() == 1);
  std::vector<const Element*> labels = xml.find(xml.index(xml.find(0, "g", "class", "labels").at(0)), "text");
  REQUIRE(labels.size() == 6);  // 2 section titles, 4 rows
  CHECK(labels[0]->text == "inference");
  CHECK(labels[5]->text == "(the rest)");
}

// --- The commands ------------------------------------------------------------------------------

TEST_CASE("plot: cnnc plot writes the chart, and fails with status 1 on bad input", "[plot][cli]") {
  Scratch scratch("plot-cli");
  std::string cnnc = CNNC_EXECUTABLE;
  fs::path metrics = scratch.path / "run.jsonl", err = scratch.path / "err.txt", out = scratch.path / "out.txt";
  write_text(metrics, metrics_lines(3, true));
  std::string redirect = " > " + out.string() + " 2> " + err.string();

  REQUIRE(run(cnnc + " plot " + metrics.string() + " -o " + (scratch.path / "curves.svg").string() + redirect) == 0);
  check_curves(read_text(scratch.path / "curves.svg"), chart::read_metrics(metrics.string()), 2);
  CHECK_THAT(read_text(out), Catch::Contains("3 epochs, train and validation"));
  // The default output is beside the metrics file; the title is the file's name (no model in it).
  REQUIRE(run(cnnc + " plot -q " + metrics.string() + " --title 'Run <1>'" + redirect) == 0);
  CHECK(read_text(out).empty());
  CHECK(Xml(read_text(scratch.path / "run.svg")).find(0, "text", "class", "chart-title").at(0)->text == "Run <1>");

  fs::path bad = scratch.path / "bad.jsonl";
  write_text(bad, metrics_lines(1, true) + "{\"epoch\": 2, \"loss\": \n");
  CHECK(run(cnnc + " plot " + bad.string() + " -o " + (scratch.path / "bad.svg").string() + redirect) == 1);
  CHECK_THAT(read_text(err), Catch::StartsWith(bad.string() + ":2:") && Catch::Contains("error: not a line of JSON"));
  CHECK_FALSE(fs::exists(scratch.path / "bad.svg"));

  write_text(bad, "");
  CHECK(run(cnnc + " plot " + bad.string() + " -o " + (scratch.path / "bad.svg").string() + redirect) == 1);
  CHECK_THAT(read_text(err), Catch::Contains("no epochs"));
  CHECK(run(cnnc + " plot " + (scratch.path / "missing.jsonl").string() + redirect) == 1);
  CHECK_THAT(read_text(err), Catch::Contains("missing.jsonl: error: no such file"));
  CHECK(run(cnnc + " plot " + metrics.string() + " -o " + (scratch.path / "curves.png").string() + redirect) == 1);
  CHECK_THAT(read_text(err), Catch::Contains("SVG only, not PNG"));
  CHECK(run(cnnc + " plot" + redirect) == 2);  // a bad command line
}

TEST_CASE("plot: cnnc bench --chart draws every kernel it measured", "[plot][cli]") {
  Scratch scratch("plot-bench");
  fs::path svg = scratch.path / "kernels.svg", json = scratch.path / "bench.json", log = scratch.path / "bench.log";
  std::string command = std::string(CNNC_EXECUTABLE) + " bench " + CNNC_SOURCE_DIR +
                        "/tests/models/train_small.yaml --repetitions 1 --steps 2 --batches 1 --latency-runs 2 "
                        "--json " +
                        json.string() + " --chart " + svg.string() + " > " + log.string() + " 2>&1";
  int status = run(command);
  INFO(read_text(log));
  REQUIRE(status == 0);
  nlohmann::json result = nlohmann::json::parse(read_text(json));
  Xml xml(read_text(svg));
  std::vector<const Element*> groups = xml.find(0, "g", "class", "bar-column");
  REQUIRE(groups.size() == 2);
  // Every kernel's time, in the order bench printed them; a % of the peak for each with FLOPs.
  std::vector<std::string> names;
  size_t with_flops = 0;
  for (const char* list : {"inference_kernels", "training_kernels"})
    for (const auto& kernel : result[list]) {
      names.push_back(kernel["name"].get<std::string>());
      if (kernel["gflops"].get<double>() > 0) ++with_flops;
    }
  std::vector<const Element*> times = xml.find(xml.index(groups[0]), "rect", "class", "bar");
  REQUIRE(times.size() == names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    CHECK(times[i]->attribute("data-label") == names[i]);
    CHECK(times[i]->number("data-value") >= 0);
  }
  CHECK(xml.find(xml.index(groups[1]), "rect", "class", "bar").size() == with_flops);
  CHECK(xml.find(0, "text", "class", "chart-title").at(0)->text == "train_small: kernels on host");
  CHECK_THAT(read_text(log),
             Catch::Contains("Wrote the kernel chart to " + svg.string()) &&
                 Catch::Contains("(best of 1 repetition: 2 training steps, 1 batch of 256, 2 single images each)"));
  // Asked for a PNG, it says so before measuring anything.
  CHECK(run(std::string(CNNC_EXECUTABLE) + " bench " + CNNC_SOURCE_DIR +
            "/tests/models/train_small.yaml --chart k.png > " + log.string() + " 2>&1") == 1);
  CHECK_THAT(read_text(log), Catch::Contains("k.png: error: cnnc draws charts as SVG only"));
}
