// YAML (yaml-cpp) to ModelSpec. See parse_model.h for the contract and docs/dsl.md for the language.
#include "frontend/parse_model.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

namespace cnnc {

std::string LayerSpec::describe() const { return fmt::format("layer {} '{}' ({})", index, name, op); }

bool is_valid_identifier(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return true;
}

bool is_reserved_model_name(const std::string& name) {
  std::string lower = name;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  return lower.rfind("halide", 0) == 0;
}

namespace {

// One entry of a YAML map. key_loc is where the key is written: the position to report for an
// empty value, and the fallback to pass when reading the value.
struct MapEntry {
  std::string key;
  YAML::Node value;
  SourceLoc key_loc;
};

// Reads YAML nodes with positions; every "expected X, found Y" error is made here.
class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  // yaml-cpp places an empty value (`units:` with nothing after it) at the next token, often on a
  // later line, so for empty values the caller's `fallback` (the key's position) is used instead.
  SourceLoc loc(const YAML::Node& node, const SourceLoc& fallback) const {
    if (node.IsNull()) return fallback;
    return mark_loc(node, fallback);
  }
  // The position yaml-cpp recorded, even for an empty value.
  SourceLoc mark_loc(const YAML::Node& node, const SourceLoc& fallback) const {
    YAML::Mark mark = node.Mark();
    if (mark.is_null() || mark.line < 0) return fallback;
    return SourceLoc{file_, mark.line + 1, mark.column + 1};
  }

  [[noreturn]] void fail(const SourceLoc& loc, const std::string& message) const { throw UserError(loc, message); }

  static std::string describe(const YAML::Node& node) {
    switch (node.Type()) {
      case YAML::NodeType::Null:
      case YAML::NodeType::Undefined:
        return "nothing";
      case YAML::NodeType::Sequence:
        return "a list";
      case YAML::NodeType::Map:
        return "a map";
      case YAML::NodeType::Scalar:
        break;
    }
    std::string text = node.Scalar();
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    for (char& c : text)
      if (static_cast<unsigned char>(c) < 0x20) c = '?';
    return fmt::format("'{}'", text);
  }

  // describe(), plus a hint where a number or boolean was written in quotes: "3" is a string in YAML.
  static std::string describe_value(const YAML::Node& node) {
    if (node.IsScalar() && node.Tag() == "!") return describe(node) + " (in quotes, so a string; remove the quotes)";
    return describe(node);
  }

  bool is_plain_scalar(const YAML::Node& node) const { return node.IsScalar() && node.Tag() != "!"; }

  std::string read_key(const YAML::Node& key, const SourceLoc& fallback) const {
    if (!key.IsScalar()) fail(loc(key, fallback), fmt::format("expected a key name, found {}", describe(key)));
    return key.Scalar();
  }

  std::string read_string(const YAML::Node& node, const SourceLoc& at, const std::string& what) const {
    if (!node.IsScalar()) fail(loc(node, at), fmt::format("{}: expected a string, found {}", what, describe(node)));
    return node.Scalar();
  }

  int64_t read_int(const YAML::Node& node, const SourceLoc& at, const std::string& what, double min,
                   double max) const {
    SourceLoc where = loc(node, at);
    if (!is_plain_scalar(node)) fail(where, fmt::format("{}: expected an integer, found {}", what, describe_value(node)));
    const std::string& text = node.Scalar();
    errno = 0;
    char* end = nullptr;
    long long value = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || std::isspace(static_cast<unsigned char>(text[0])))
      fail(where, fmt::format("{}: expected an integer, found {}", what, describe(node)));
    if (errno == ERANGE || double(value) < min || double(value) > max)
      fail(where, fmt::format("{}: expected an integer {}, found {}", what, range_text(min, max, false), describe(node)));
    return value;
  }

  double read_float(const YAML::Node& node, const SourceLoc& at, const std::string& what, double min, double max,
                    bool max_exclusive) const {
    SourceLoc where = loc(node, at);
    if (!is_plain_scalar(node)) fail(where, fmt::format("{}: expected a number, found {}", what, describe_value(node)));
    const std::string& text = node.Scalar();
    char* end = nullptr;
    double value = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !std::isfinite(value) || std::isspace(static_cast<unsigned char>(text[0])))
      fail(where, fmt::format("{}: expected a number, found {}", what, describe(node)));
    if (value < min || value > max || (max_exclusive && value >= max))
      fail(where, fmt::format("{}: expected a number {}, found {}", what, range_text(min, max, max_exclusive),
                              describe(node)));
    return value;
  }

  bool read_bool(const YAML::Node& node, const SourceLoc& at, const std::string& what) const {
    if (is_plain_scalar(node)) {
      const std::string& text = node.Scalar();
      if (text == "true" || text == "True") return true;
      if (text == "false" || text == "False") return false;
    }
    fail(loc(node, at), fmt::format("{}: expected true or false, found {}", what, describe_value(node)));
  }

  // Checks that a map has no duplicate or unknown keys; returns its entries in order.
  std::vector<MapEntry> read_map(const YAML::Node& node, const SourceLoc& at, const std::string& what,
                                 const std::vector<std::string>& known) const {
    if (!node.IsMap()) fail(loc(node, at), fmt::format("{}: expected a map, found {}", what, describe(node)));
    std::vector<MapEntry> entries;
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      std::string key = read_key(it->first, at);
      SourceLoc key_loc = loc(it->first, at);
      if (!seen.insert(key).second) fail(key_loc, fmt::format("{}: '{}' is given twice", what, key));
      if (!known.empty() && std::find(known.begin(), known.end(), key) == known.end())
        fail(key_loc, fmt::format("{}: unknown key '{}'{}; expected one of: {}", what, key, did_you_mean(key, known),
                                  fmt::join(known, ", ")));
      entries.push_back({key, it->second, key_loc});
    }
    return entries;
  }

  static std::string range_text(double min, double max, bool max_exclusive) {
    auto number = [](double v) { return v == std::floor(v) && std::fabs(v) < 1e15 ? fmt::format("{}", int64_t(v)) : fmt::format("{}", v); };
    if (max >= 2147483647.0) return fmt::format(">= {}", number(min));
    return fmt::format("in [{}, {}{}", number(min), number(max), max_exclusive ? ")" : "]");
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
};

AttrValue read_attr(const Reader& reader, const AttrSpec& spec, const YAML::Node& node, const SourceLoc& at,
                    const std::string& context) {
  std::string what = fmt::format("{}: '{}'", context, spec.name);
  switch (spec.kind) {
    case AttrKind::Int:
      return reader.read_int(node, at, what, spec.min, spec.max);
    case AttrKind::Float:
      return reader.read_float(node, at, what, spec.min, spec.max, spec.max_exclusive);
    case AttrKind::Bool:
      return reader.read_bool(node, at, what);
    case AttrKind::IntPair: {
      if (node.IsSequence()) {
        if (node.size() != 2)
          reader.fail(reader.loc(node, at),
                      fmt::format("{}: expected an integer or a list of 2 integers [height, width], found a list of {}",
                                  what, node.size()));
        return std::pair<int64_t, int64_t>(reader.read_int(node[0], at, what, spec.min, spec.max),
                                           reader.read_int(node[1], at, what, spec.min, spec.max));
      }
      if (node.IsScalar()) {
        int64_t value = reader.read_int(node, at, what, spec.min, spec.max);
        return std::pair<int64_t, int64_t>(value, value);
      }
      reader.fail(reader.loc(node, at), fmt::format("{}: expected an integer or a list [height, width], found {}",
                                                    what, Reader::describe(node)));
    }
    case AttrKind::Padding: {
      // n, [rows, cols] or [[top, bottom], [left, right]], as Keras ZeroPadding2D.
      auto read = [&](const YAML::Node& n) { return reader.read_int(n, at, what, spec.min, spec.max); };
      const char* forms = "an integer, [rows, columns] or [[top, bottom], [left, right]]";
      if (node.IsScalar()) {
        int64_t v = read(node);
        return Padding4{v, v, v, v};
      }
      if (!node.IsSequence() || node.size() != 2)
        reader.fail(reader.loc(node, at),
                    fmt::format("{}: expected {}, found {}", what, forms,
                                node.IsSequence() ? fmt::format("a list of {}", node.size()) : Reader::describe(node)));
      if (node[0].IsScalar() && node[1].IsScalar()) {
        int64_t rows = read(node[0]), cols = read(node[1]);
        return Padding4{rows, rows, cols, cols};
      }
      for (const YAML::Node& side : {node[0], node[1]})
        if (!side.IsSequence() || side.size() != 2)
          reader.fail(reader.loc(side, at), fmt::format("{}: expected {}; each side a list of 2 integers", what, forms));
      return Padding4{read(node[0][0]), read(node[0][1]), read(node[1][0]), read(node[1][1])};
    }
    case AttrKind::Enum: {
      std::string value = reader.read_string(node, at, what);
      if (std::find(spec.choices.begin(), spec.choices.end(), value) == spec.choices.end())
        reader.fail(reader.loc(node, at), fmt::format("{}: unknown value '{}'{}; expected one of: {}", what, value,
                                                      did_you_mean(value, spec.choices), fmt::join(spec.choices, ", ")));
      return value;
    }
  }
  CNNC_ASSERT(false, "unhandled attribute kind");
}

std::string read_name(const Reader& reader, const YAML::Node& node, const SourceLoc& at, const std::string& what) {
  std::string name = reader.read_string(node, at, what);
  if (!is_valid_identifier(name))
    reader.fail(reader.loc(node, at),
                fmt::format("{}: '{}' is not a valid name; use letters, digits and '_' (not first a digit), at most 64 "
                            "characters",
                            what, Reader::describe(node).substr(1, Reader::describe(node).size() - 2)));
  return name;
}

void read_inputs(const Reader& reader, const YAML::Node& node, const SourceLoc& at, const std::string& context,
                 LayerSpec& layer) {
  std::string what = context + ": 'inputs'";
  std::vector<YAML::Node> items;
  if (node.IsScalar()) {
    items.push_back(node);
  } else if (node.IsSequence()) {
    for (const YAML::Node& item : node) items.push_back(item);
  } else {
    reader.fail(reader.loc(node, at), fmt::format("{}: expected a list of layer names, found {}", what, Reader::describe(node)));
  }
  if (items.empty()) reader.fail(reader.loc(node, at), what + ": expected at least one layer name, found an empty list");
  if (items.size() > 1024) reader.fail(reader.loc(node, at), what + ": more than 1024 inputs");
  for (const YAML::Node& item : items) {
    layer.inputs.push_back(read_name(reader, item, at, what));
    layer.input_locs.push_back(reader.loc(item, reader.loc(node, at)));
  }
}

// Reads one item of `layers:`: `- op: {attrs}`, `- op:`, `- op` or `- {name: x, inputs: [..], op: {attrs}}`.
LayerSpec read_layer(const Reader& reader, const YAML::Node& node, int index, const SourceLoc& list_loc) {
  LayerSpec layer;
  layer.index = index;
  // An empty item (`-` alone) has no position of its own; yaml-cpp's, the next token, is the closest.
  SourceLoc item_loc = reader.mark_loc(node, list_loc);
  std::string context = fmt::format("layer {}", index);
  std::vector<std::string> ops = op_names();

  std::optional<YAML::Node> attr_node;  // empty when the op has no attribute map
  std::optional<YAML::Node> name_node, inputs_node;
  SourceLoc op_loc = item_loc;
  if (node.IsScalar()) {
    layer.op = node.Scalar();
  } else if (node.IsMap()) {
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      std::string key = reader.read_key(it->first, item_loc);
      SourceLoc key_loc = reader.loc(it->first, item_loc);
      if (!seen.insert(key).second) reader.fail(key_loc, fmt::format("{}: '{}' is given twice", context, key));
      if (key == "name") {
        name_node = it->second;
      } else if (key == "inputs") {
        inputs_node = it->second;
      } else {
        if (!layer.op.empty())
          reader.fail(key_loc, fmt::format("{}: has two ops, '{}' and '{}'; write one op per list item", context,
                                           layer.op, key));
        layer.op = key;
        op_loc = key_loc;
        attr_node = it->second;
      }
    }
    if (layer.op.empty())
      reader.fail(item_loc, fmt::format("{}: no op given; expected one of: {}", context, fmt::join(ops, ", ")));
  } else {
    reader.fail(item_loc, fmt::format("{}: expected an op such as '- conv2d: {{filters: 32, kernel: 3}}', found {}",
                                      context, Reader::describe(node)));
  }
  layer.loc = op_loc;

  const OpDef* op = find_op(layer.op);
  if (!op)
    reader.fail(op_loc, fmt::format("{}: unknown op '{}'{}; expected one of: {}", context,
                                    Reader::describe(YAML::Node(layer.op)).substr(1, std::min<size_t>(layer.op.size(), 37)),
                                    did_you_mean(layer.op, ops), fmt::join(ops, ", ")));
  context = fmt::format("layer {} ({})", index, layer.op);

  // Attributes: the op's schema, plus `name` and `inputs`, which may also sit inside the op's map.
  std::map<std::string, std::pair<YAML::Node, SourceLoc>> given;
  if (attr_node && !attr_node->IsNull()) {
    std::vector<std::string> known = {"name", "inputs"};
    for (const AttrSpec& spec : op->attrs) known.push_back(spec.name);
    for (auto& [key, value, key_loc] : reader.read_map(*attr_node, op_loc, context, known)) {
      if ((key == "name" && name_node) || (key == "inputs" && inputs_node))
        reader.fail(reader.loc(value, key_loc), fmt::format("{}: '{}' is given twice", context, key));
      if (key == "name") name_node = value;
      else if (key == "inputs") inputs_node = value;
      else given[key] = {value, reader.loc(value, key_loc)};
    }
  }
  if (name_node) {
    layer.name = read_name(reader, *name_node, op_loc, context + ": 'name'");
    layer.has_explicit_name = true;
  }
  if (inputs_node) read_inputs(reader, *inputs_node, op_loc, context, layer);

  for (const AttrSpec& spec : op->attrs) {
    auto it = given.find(spec.name);
    if (it == given.end()) {
      if (spec.required)
        reader.fail(op_loc, fmt::format("{}: missing required attribute '{}' ({})", context, spec.name, spec.help));
      layer.attrs.set(spec.name, spec.default_value, op_loc);
      continue;
    }
    layer.attrs.set(spec.name, read_attr(reader, spec, it->second.first, it->second.second, context), it->second.second);
  }
  // Pooling: stride defaults to the window size, as in Keras.
  if (layer.attrs.has("stride") && layer.attrs.has("size") && layer.attrs.get_pair("stride").first == 0)
    layer.attrs.set("stride", layer.attrs.get_pair("size"), op_loc);
  return layer;
}

Shape read_input(const Reader& reader, const YAML::Node& node, const SourceLoc& at) {
  SourceLoc input_loc = reader.loc(node, at);
  auto entries = reader.read_map(node, at, "input", {"shape"});
  if (entries.empty()) reader.fail(input_loc, "input: missing 'shape', e.g. input: {shape: [28, 28, 1]}");
  const YAML::Node& shape_node = entries[0].value;
  SourceLoc shape_loc = reader.loc(shape_node, entries[0].key_loc);
  if (!shape_node.IsSequence())
    reader.fail(shape_loc, fmt::format("input: 'shape': expected a list [height, width, channels] or [features], found {}",
                                       Reader::describe(shape_node)));
  if (shape_node.size() != 3 && shape_node.size() != 1)
    reader.fail(shape_loc, fmt::format("input: 'shape': expected rank 3 [height, width, channels] or rank 1 [features] "
                                       "(batch excluded), found rank {}",
                                       shape_node.size()));
  Shape shape;
  for (const YAML::Node& dim : shape_node)
    shape.push_back(reader.read_int(dim, shape_loc, "input: 'shape'", 1, 2147483647.0));
  return shape;
}

OptimizerSpec read_optimizer(const Reader& reader, const YAML::Node& node, const SourceLoc& at) {
  OptimizerSpec optimizer;
  SourceLoc where = reader.loc(node, at);
  const std::vector<std::string> kinds = {"adam", "sgd"};
  YAML::Node params;
  if (node.IsScalar()) {
    optimizer.kind = node.Scalar();
  } else if (node.IsMap() && node.size() == 1) {
    auto entries = reader.read_map(node, at, "train: 'optimizer'", {});
    optimizer.kind = entries[0].key;
    params = entries[0].value;
    where = entries[0].key_loc;
  } else {
    reader.fail(where, fmt::format("train: 'optimizer': expected 'adam', 'sgd' or a map such as "
                                   "{{adam: {{learning_rate: 0.001}}}}, found {}",
                                   Reader::describe(node)));
  }
  if (std::find(kinds.begin(), kinds.end(), optimizer.kind) == kinds.end())
    reader.fail(where, fmt::format("train: unknown optimizer '{}'{}; expected one of: adam, sgd",
                                   Reader::describe(YAML::Node(optimizer.kind)).substr(1, std::min<size_t>(optimizer.kind.size(), 37)),
                                   did_you_mean(optimizer.kind, kinds)));
  if (optimizer.kind == "sgd") optimizer.learning_rate = 0.01;  // Keras: SGD 0.01, Adam 0.001
  if (!params || params.IsNull()) return optimizer;
  std::string context = "train: optimizer " + optimizer.kind;
  std::vector<std::string> known = optimizer.kind == "adam"
                                       ? std::vector<std::string>{"learning_rate", "beta_1", "beta_2", "epsilon"}
                                       : std::vector<std::string>{"learning_rate", "momentum"};
  for (auto& [key, value, key_loc] : reader.read_map(params, where, context, known)) {
    std::string what = fmt::format("{}: '{}'", context, key);
    if (key == "learning_rate") optimizer.learning_rate = reader.read_float(value, key_loc, what, 1e-12, 1e6, false);
    else if (key == "beta_1") optimizer.beta_1 = reader.read_float(value, key_loc, what, 0, 1, true);
    else if (key == "beta_2") optimizer.beta_2 = reader.read_float(value, key_loc, what, 0, 1, true);
    else if (key == "epsilon") optimizer.epsilon = reader.read_float(value, key_loc, what, 1e-30, 1, false);
    else if (key == "momentum") optimizer.momentum = reader.read_float(value, key_loc, what, 0, 1, true);
  }
  return optimizer;
}

ScheduleSpec read_schedule(const Reader& reader, const YAML::Node& node, const SourceLoc& at) {
  ScheduleSpec schedule;
  const std::string context = "train: 'schedule'";
  SourceLoc where = reader.loc(node, at);
  if (!node.IsMap() || node.size() != 1)
    reader.fail(where, fmt::format("{}: expected one of {{exponential_decay: {{...}}}}, {{cosine_decay: {{...}}}}, "
                                   "found {}",
                                   context, Reader::describe(node)));
  auto entries = reader.read_map(node, at, context, {"exponential_decay", "cosine_decay"});
  schedule.kind = entries[0].key;
  std::vector<std::string> known = schedule.kind == "exponential_decay"
                                       ? std::vector<std::string>{"decay_steps", "decay_rate", "staircase"}
                                       : std::vector<std::string>{"decay_steps", "alpha", "warmup_steps"};
  const YAML::Node& params = entries[0].value;
  bool has_steps = false;
  if (params && !params.IsNull())
    for (auto& [key, value, key_loc] : reader.read_map(params, entries[0].key_loc, context + " " + schedule.kind, known)) {
      std::string what = fmt::format("{} {}: '{}'", context, schedule.kind, key);
      if (key == "decay_steps") {
        schedule.decay_steps = reader.read_int(value, key_loc, what, 1, 1e12);
        has_steps = true;
      } else if (key == "decay_rate") {
        schedule.decay_rate = reader.read_float(value, key_loc, what, 0, 1, false);
      } else if (key == "staircase") {
        schedule.staircase = reader.read_bool(value, key_loc, what);
      } else if (key == "alpha") {
        schedule.alpha = reader.read_float(value, key_loc, what, 0, 1, false);
      } else if (key == "warmup_steps") {
        schedule.warmup_steps = reader.read_int(value, key_loc, what, 0, 1e12);
      }
    }
  if (schedule.kind == "exponential_decay" && !has_steps)
    reader.fail(entries[0].key_loc, context + " exponential_decay: missing 'decay_steps' (steps per decay by decay_rate)");
  return schedule;
}

EarlyStoppingSpec read_early_stopping(const Reader& reader, const YAML::Node& node, const SourceLoc& at) {
  EarlyStoppingSpec early;
  early.enabled = true;
  const std::string context = "train: 'early_stopping'";
  if (node.IsNull()) return early;
  for (auto& [key, value, key_loc] :
       reader.read_map(node, at, context, {"monitor", "patience", "min_delta", "restore_best_weights"})) {
    std::string what = fmt::format("{}: '{}'", context, key);
    if (key == "monitor") {
      early.monitor = reader.read_string(value, key_loc, what);
      const std::vector<std::string> metrics = {"val_loss", "val_accuracy", "loss", "accuracy"};
      if (std::find(metrics.begin(), metrics.end(), early.monitor) == metrics.end())
        reader.fail(reader.loc(value, key_loc), fmt::format("{}: unknown metric '{}'{}; expected val_loss, val_accuracy, "
                                                            "loss or accuracy",
                                                            what, early.monitor.substr(0, 40),
                                                            did_you_mean(early.monitor, metrics)));
    } else if (key == "patience") {
      early.patience = reader.read_int(value, key_loc, what, 0, 100000);
    } else if (key == "min_delta") {
      early.min_delta = reader.read_float(value, key_loc, what, 0, 1e6, false);
    } else if (key == "restore_best_weights") {
      early.restore_best_weights = reader.read_bool(value, key_loc, what);
    }
  }
  return early;
}

AugmentationSpec read_augmentation(const Reader& reader, const YAML::Node& node, const SourceLoc& at) {
  AugmentationSpec augmentation;
  const std::string context = "train: 'augmentation'";
  if (node.IsNull()) return augmentation;
  for (auto& [key, value, key_loc] : reader.read_map(node, at, context, {"crop_padding", "horizontal_flip"})) {
    std::string what = fmt::format("{}: '{}'", context, key);
    if (key == "crop_padding") augmentation.crop_padding = reader.read_int(value, key_loc, what, 0, 64);
    else if (key == "horizontal_flip") augmentation.horizontal_flip = reader.read_bool(value, key_loc, what);
  }
  return augmentation;
}

TrainSpec read_train(const Reader& reader, const YAML::Node& node, const SourceLoc& at) {
  TrainSpec train;
  train.loc = reader.loc(node, at);
  if (node.IsNull()) return train;
  for (auto& [key, value, key_loc] :
       reader.read_map(node, at, "train", {"loss", "optimizer", "batch_size", "epochs", "seed", "schedule",
                                           "weight_decay", "global_clipnorm", "early_stopping", "augmentation",
                                           "classes"})) {
    std::string what = "train: '" + key + "'";
    if (key == "loss") {
      // categorical_crossentropy, or {categorical_crossentropy: {label_smoothing: s}} (Keras's argument).
      YAML::Node name = value;
      if (value.IsMap() && value.size() == 1) {
        auto entries = reader.read_map(value, key_loc, what, {"categorical_crossentropy"});
        name = YAML::Node(entries[0].key);
        if (entries[0].value && !entries[0].value.IsNull())
          for (auto& [option, setting, option_loc] :
               reader.read_map(entries[0].value, entries[0].key_loc, what + " categorical_crossentropy", {"label_smoothing"}))
            train.label_smoothing = reader.read_float(setting, option_loc, what + " " + option, 0, 1, true);
        train.loss = entries[0].key;
        continue;
      }
      train.loss = reader.read_string(value, key_loc, what);
      const std::vector<std::string> losses = {"categorical_crossentropy"};
      if (train.loss != losses[0])
        reader.fail(reader.loc(value, key_loc),
                    fmt::format("{}: unknown loss '{}'{}; expected: categorical_crossentropy", what,
                                Reader::describe(value).substr(1, std::min<size_t>(train.loss.size(), 37)),
                                did_you_mean(train.loss, losses)));
    } else if (key == "optimizer") {
      train.optimizer = read_optimizer(reader, value, key_loc);
    } else if (key == "batch_size") {
      train.batch_size = reader.read_int(value, key_loc, what, 1, 65536);
    } else if (key == "epochs") {
      train.epochs = reader.read_int(value, key_loc, what, 1, 100000);
    } else if (key == "seed") {
      train.seed = reader.read_int(value, key_loc, what, 0, 4294967295.0);
    } else if (key == "schedule") {
      train.schedule = read_schedule(reader, value, key_loc);
    } else if (key == "weight_decay") {
      train.weight_decay = reader.read_float(value, key_loc, what, 0, 1, false);
    } else if (key == "global_clipnorm") {
      train.global_clipnorm = reader.read_float(value, key_loc, what, 1e-12, 1e12, false);
    } else if (key == "early_stopping") {
      train.early_stopping = read_early_stopping(reader, value, key_loc);
    } else if (key == "augmentation") {
      train.augmentation = read_augmentation(reader, value, key_loc);
    } else if (key == "classes") {
      SourceLoc list_loc = reader.loc(value, key_loc);
      if (!value.IsSequence() || value.size() == 0 || value.size() > 100000)
        reader.fail(list_loc, fmt::format("{}: expected a list of class names, found {}", what, Reader::describe(value)));
      for (const YAML::Node& name : value) {
        std::string text = reader.read_string(name, list_loc, what);
        if (text.empty() || text.size() > 200 || text.find_first_of("\n\r\t") != std::string::npos)
          reader.fail(reader.loc(name, list_loc), fmt::format("{}: a class name must be 1 to 200 characters on one line", what));
        train.classes.push_back(text);
      }
    }
  }
  return train;
}

// Keras-style generated names: the first conv2d is "conv2d", the next "conv2d_1", skipping taken names.
void name_layers(ModelSpec& model) {
  std::set<std::string> taken = {kInputName};
  for (const LayerSpec& layer : model.layers)
    if (layer.has_explicit_name) taken.insert(layer.name);
  std::map<std::string, int> counters;
  for (LayerSpec& layer : model.layers) {
    if (layer.has_explicit_name) continue;
    int& counter = counters[layer.op];
    std::string name;
    do {
      name = counter == 0 ? layer.op : fmt::format("{}_{}", layer.op, counter);
      ++counter;
    } while (taken.count(name));
    taken.insert(name);
    layer.name = name;
  }
}

// Notes where a YAML document's first node is; an empty document has none.
class FirstNodeFinder : public YAML::EventHandler {
 public:
  std::optional<YAML::Mark> first;

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { note(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t, const std::string&) override {
    note(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    note(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    note(mark);
  }
  void OnMapEnd() override {}

 private:
  void note(const YAML::Mark& mark) {
    if (!first) first = mark;
  }
};

// YAML::Load reads the first document and ignores the rest unread, so a second document after
// '---' (or a syntax error in it) would pass unnoticed. Empty documents (a trailing '---') are fine.
// Not YAML::LoadAll: on some inputs (a lone ',') it returns empty documents forever.
void check_single_document(const Reader& reader, const std::string& text) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  FirstNodeFinder first_document;
  if (!parser.HandleNextDocument(first_document)) return;
  for (int document = 2; document <= 100; ++document) {
    FirstNodeFinder finder;
    if (!parser.HandleNextDocument(finder)) return;
    if (finder.first)
      reader.fail(SourceLoc{reader.file(), finder.first->line + 1, finder.first->column + 1},
                  "a second YAML document starts here (after '---'); a model file holds one model");
  }
}

std::string default_model_name(const std::string& file) {
  std::string stem = file;
  size_t slash = stem.find_last_of('/');
  if (slash != std::string::npos) stem = stem.substr(slash + 1);
  size_t dot = stem.find('.');
  if (dot != std::string::npos) stem = stem.substr(0, dot);
  return is_valid_identifier(stem) && !is_reserved_model_name(stem) ? stem : "model";
}

}  // namespace

ModelSpec parse_model_text(const std::string& text, const std::string& file) {
  Reader reader(file);
  SourceLoc start{file, 1, 1};
  if (text.find('\0') != std::string::npos)
    reader.fail(start, "this is not a text file (it contains NUL bytes); expected a YAML model");

  YAML::Node root;
  try {
    root = YAML::Load(text);
    check_single_document(reader, text);
  } catch (const YAML::DeepRecursion& error) {
    // yaml-cpp's own message for this is "bad file".
    SourceLoc where = error.mark.is_null() ? start : SourceLoc{file, error.mark.line + 1, error.mark.column + 1};
    reader.fail(where, "invalid YAML: lists or maps are nested too deeply");
  } catch (const YAML::Exception& error) {
    SourceLoc where = error.mark.is_null() ? start : SourceLoc{file, error.mark.line + 1, error.mark.column + 1};
    reader.fail(where, "invalid YAML: " + error.msg);
  }
  if (!root || root.IsNull())
    reader.fail(start, "the file is empty; expected a model with 'input:' and 'layers:' (see docs/dsl.md)");
  if (!root.IsMap())
    reader.fail(reader.loc(root, start),
                fmt::format("expected a model (a map with 'input:' and 'layers:'), found {}", Reader::describe(root)));

  ModelSpec model;
  model.file = file;
  model.name = default_model_name(file);
  std::optional<YAML::Node> input_node, layers_node;
  SourceLoc input_key_loc, layers_key_loc;
  for (auto& [key, value, key_loc] : reader.read_map(root, start, "model", {"name", "input", "layers", "train"})) {
    if (key == "name") {
      model.name = read_name(reader, value, key_loc, "model 'name'");
      if (is_reserved_model_name(model.name))
        reader.fail(reader.loc(value, key_loc),
                    fmt::format("model 'name': '{}' is reserved: the package's C functions start with the model's name, "
                                "and names starting with 'halide' would clash with the Halide runtime's; choose another",
                                model.name));
    } else if (key == "input") {
      input_node = value;
      input_key_loc = key_loc;
    } else if (key == "layers") {
      layers_node = value;
      layers_key_loc = key_loc;
    } else if (key == "train") {
      model.train = read_train(reader, value, key_loc);
    }
  }
  if (!input_node) reader.fail(start, "missing 'input:', e.g. input: {shape: [28, 28, 1]}");
  model.input_loc = reader.loc(*input_node, input_key_loc);
  model.input_shape = read_input(reader, *input_node, input_key_loc);

  if (!layers_node) reader.fail(start, "missing 'layers:', the list of layers");
  SourceLoc layers_loc = reader.loc(*layers_node, layers_key_loc);
  if (!layers_node->IsSequence())
    reader.fail(layers_loc, fmt::format("'layers': expected a list of layers, found {}", Reader::describe(*layers_node)));
  if (layers_node->size() == 0) reader.fail(layers_loc, "'layers': the list is empty; a model needs at least one layer");
  if (layers_node->size() > 10000) reader.fail(layers_loc, "'layers': more than 10000 layers");
  int index = 1;
  for (const YAML::Node& item : *layers_node) model.layers.push_back(read_layer(reader, item, index++, layers_loc));
  name_layers(model);
  return model;
}

ModelSpec parse_model_file(const std::string& path) {
  SourceLoc where{path, 0, 0};
  std::error_code error;
  if (std::filesystem::is_directory(path, error))
    throw UserError(where, "this is a directory; expected a model file (YAML)");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(where, fmt::format("cannot open the model file: {}", std::strerror(errno)));
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  if (size < 0) throw UserError(where, "cannot read the model file (is it a directory?)");
  if (size_t(size) > kMaxModelFileBytes)
    throw UserError(where, fmt::format("the file is {} bytes; a model file may be at most {} bytes", size,
                                       kMaxModelFileBytes));
  in.seekg(0);
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), size);
  if (!in) throw UserError(where, "cannot read the model file (is it a directory?)");
  return parse_model_text(text, path);
}

}  // namespace cnnc
