// ONNX in (see onnx_import.h). The graph is walked once, in its node order: each ONNX value that
// carries data becomes a Value (the cnnc layer that produces it, its cnnc shape and how its element
// order relates to ONNX's), each node becomes zero or one cnnc layer. Constants (initializers and
// Constant nodes) are folded where they are weights, pads, scales or shapes.
#include "onnx/onnx_import.h"

#include <algorithm>
#include <tuple>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include "frontend/parse_model.h"

namespace cnnc {

namespace {

namespace fs = std::filesystem;

// Opsets before 6 are read where their ops mean what they mean in 6 (BatchNormalization's spatial
// is checked; consumed_inputs and is_test change nothing at inference).
constexpr int64_t kMinOpset = 1, kMaxOpset = 17;

const char* kGeneratedName = "\x01generated";

// A constant tensor of the graph (initializer or Constant node), decoded.
struct Constant {
  Shape dims;
  std::vector<double> values;  // any numeric type, as double (floats convert back exactly)
  bool is_float = false;
};

// A value computed by the network.
struct Value {
  std::string layer;        // the cnnc layer whose output this is ("input" for the model's input)
  int layer_index = -1;     // into Importer::layers_; -1 for the input
  bool image = false;       // cnnc [H, W, C]; else a vector [N]
  bool one_d = false;       // an ONNX [N, C, L] map, cnnc [1, L, C]
  bool nhwc = false;        // after Transpose(0, 2, 3, 1): only a Flatten or Reshape may read it
  Shape shape;              // cnnc's, batch excluded
  Shape onnx_shape;         // ONNX's, batch excluded
  // A vector flattened from an NCHW map [H, W, C] (cnnc's order h, w, c; ONNX's c, h, w): those
  // dimensions; empty when the two orders agree. See onnx_index.
  Shape flattened;
  Padding4 pad{0, 0, 0, 0};    // zeros still to add around `layer`'s output (a Pad not yet folded)
  std::string pad_name;        // that Pad node's name, for the zero_padding2d layer if one is made
  bool non_negative = false;   // every element >= 0 (after relu, sigmoid ...)

  bool padded() const { return pad[0] || pad[1] || pad[2] || pad[3]; }
  // ONNX's rank, batch included.
  int64_t rank() const { return int64_t(onnx_shape.size()) + 1; }
};

// The ONNX index of element j of a vector flattened from a map [h, w, c] in cnnc's order.
int64_t onnx_index(const Shape& flattened, int64_t j) {
  if (flattened.empty()) return j;
  int64_t h = flattened[0], w = flattened[1], c = flattened[2];
  int64_t ch = j % c, x = (j / c) % w, y = j / (c * w);
  return (ch * h + y) * w + x;
}

struct Layer {
  std::string op, name;
  std::vector<std::string> inputs;  // empty: the layer before
  std::vector<std::pair<std::string, std::string>> attrs;  // YAML text of each value
  std::vector<std::pair<std::string, ImportedTensor>> params;

  void set(const std::string& key, const std::string& value) {
    for (auto& [k, v] : attrs)
      if (k == key) {
        v = value;
        return;
      }
    attrs.emplace_back(key, value);
  }
  const std::string* get(const std::string& key) const {
    for (const auto& [k, v] : attrs)
      if (k == key) return &v;
    return nullptr;
  }
};

std::string yaml_number(double value) {
  if (value == std::floor(value) && std::fabs(value) < 1e15) return fmt::format("{}", int64_t(value));
  return fmt::format("{}", value);  // shortest round-trip form
}

std::string pair_text(int64_t a, int64_t b) { return a == b ? fmt::format("{}", a) : fmt::format("[{}, {}]", a, b); }

std::string dims_text(const Shape& dims) { return fmt::format("[{}]", fmt::join(dims, ", ")); }

const char* type_name(int type) {
  switch (type) {
    case onnx::TensorProto::FLOAT: return "float32";
    case onnx::TensorProto::DOUBLE: return "float64";
    case onnx::TensorProto::INT64: return "int64";
    case onnx::TensorProto::INT32: return "int32";
    case onnx::TensorProto::FLOAT16: return "float16";
    case onnx::TensorProto::UINT8: return "uint8";
    case onnx::TensorProto::INT8: return "int8";
    case onnx::TensorProto::BOOL: return "bool";
    default: return "unsupported type";
  }
}

// The supported op types, for messages.
const char* kSupportedOps =
    "Conv (groups 1 or = channels), MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, Gemm, MatMul (+ Add), "
    "Relu, LeakyRelu, Sigmoid, Tanh, Elu, HardSigmoid, HardSwish, Clip, Softmax, BatchNormalization, Add, Concat, "
    "Flatten, Reshape (to a vector), Transpose (of a constant, or to NHWC before a Flatten), Dropout, Identity, Pad "
    "(constant zeros), Resize/Upsample (nearest, integer scales), Mul (x * Sigmoid(x)), Constant";

class Importer {
 public:
  Importer(const std::string& path) : path_(path), base_dir_(fs::path(path).parent_path()) {}

  OnnxImport run(const std::string& bytes);

 private:
  [[noreturn]] void fail(const std::string& message) const {
    throw UserError(SourceLoc{path_, 0, 0}, message);
  }
  [[noreturn]] void fail_node(const std::string& message) const {
    throw UserError(SourceLoc{path_, 0, 0}, fmt::format("{}: {}", node_desc_, message));
  }

  // Graph setup.
  void read_opset(const onnx::ModelProto& model);
  Constant decode(const onnx::TensorProto& tensor, const std::string& what);
  std::string read_external(const onnx::TensorProto& tensor, const std::string& what, uint64_t bytes);
  void read_input(const onnx::ValueInfoProto& input);

  // Attributes of the current node.
  const onnx::AttributeProto* attr(const std::string& name) const;
  const onnx::AttributeProto* typed_attr(const std::string& name, int type) const;
  int64_t attr_int(const std::string& name, int64_t fallback) const;
  double attr_float(const std::string& name, double fallback) const;
  std::string attr_string(const std::string& name, const std::string& fallback) const;
  std::vector<int64_t> attr_ints(const std::string& name) const;

  // Inputs and outputs of the current node.
  bool has_input(int i) const { return i < node_->input_size() && !node_->input(i).empty(); }
  bool is_constant(int i) const { return has_input(i) && constants_.count(node_->input(i)); }
  const Constant& constant(int i, const std::string& role);
  std::optional<double> scalar(int i, const std::string& role);
  Value& value(int i);
  void define(const std::string& name, Value value);
  void define_output(Value value) { define(node_->output(0), std::move(value)); }
  void require_unused_outputs(int from);
  int uses(const std::string& name) const {
    auto it = uses_.find(name);
    return it == uses_.end() ? 0 : it->second;
  }
  // The only node that reads `name`, or -1.
  int sole_consumer(const std::string& name) const;

  // Layers.
  std::string unique_name(const std::string& preferred, const std::string& op);
  // The layer's name: `preferred`, else the current node's name, if usable; kGeneratedName: Keras-style.
  Layer& add_layer(const std::string& op, const std::vector<std::string>& inputs, const std::string& preferred = "");
  // Gives a layer a node's name when usable and free (folds name the layer after their last node).
  void rename(Layer& layer, const std::string& preferred);
  // The layer name to read `value` from, adding a zero_padding2d for a pending Pad.
  std::string materialize(Value& value);
  Value image_value(const Layer& layer, Shape shape, bool one_d);
  Value same_value(const Value& input, const Layer& layer);
  // The layer that produced exactly `value` and nothing reads but the current node, if it is one of
  // `ops` with `activation: linear`: where an activation or a bias can be folded.
  Layer* foldable_producer(const Value& value, std::initializer_list<const char*> ops);

  // Windows.
  struct Window {
    int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
    Padding4 pads{0, 0, 0, 0};  // top, bottom, left, right, pending Pad included
  };
  Window read_window(const Value& input, const Shape& kernel, bool has_dilations);
  // "valid" or "same" when the window's padding is one of them for `input`, else "".
  std::string padding_kind(const Value& input, const Window& window) const;
  void check_ceil_mode(const Value& input, const Window& window);

  // Op handlers.
  void conv();
  void pool(bool is_max);
  void global_pool(bool is_max);
  void gemm();
  void matmul();
  void activation(const std::string& op, std::vector<std::pair<std::string, std::string>> attrs, bool non_negative);
  void clip();
  void softmax();
  void batchnorm();
  void add();
  void concat();
  void flatten();
  void reshape();
  void transpose();
  void dropout();
  void pad();
  void resize();
  void mul();
  bool try_swish();
  bool try_gelu();
  void dense_from(const Value& input, const Constant& weights, bool transposed, double alpha,
                  const Constant* bias, double beta, const std::string& preferred);

  std::string yaml() const;

  std::string path_;
  fs::path base_dir_;
  const onnx::GraphProto* graph_ = nullptr;
  int64_t opset_ = 0;
  std::map<std::string, Constant> constants_;
  std::map<std::string, const onnx::TensorProto*> pending_constants_;  // initializers, decoded on use
  std::map<std::string, Value> values_;
  std::map<std::string, int> uses_;
  std::map<std::string, std::vector<int>> consumers_;
  std::set<int> skipped_;  // nodes folded into an earlier one
  std::vector<Layer> layers_;
  std::set<std::string> names_;
  std::set<std::string> reserved_;  // usable names of the nodes imported
  // Layers whose output an alias (Identity, a Flatten of a vector, a pending Pad ...) and some other
  // node both read: never changed by a fold.
  std::set<std::string> shared_layers_;
  // For ops that pass their input on as it is: marks the layer shared if the input has other readers.
  void alias_input() {
    if (uses(node_->input(0)) != 1) shared_layers_.insert(values_.at(node_->input(0)).layer);
  }
  std::map<std::string, int> name_counters_;
  const onnx::NodeProto* node_ = nullptr;
  int node_index_ = 0;
  std::string node_desc_;
  OnnxImport result_;
};

// ---------------------------------------------------------------------------------------------
// Tensors

std::string Importer::read_external(const onnx::TensorProto& tensor, const std::string& what, uint64_t bytes) {
  std::string location;
  uint64_t offset = 0;
  std::optional<uint64_t> length;
  for (const auto& entry : tensor.external_data()) {
    auto number = [&](const std::string& text) {
      if (text.empty() || text.size() > 19 || !std::all_of(text.begin(), text.end(), ::isdigit))
        fail(fmt::format("{}: external data {} '{}' is not a number", what, entry.key(), text));
      return uint64_t(std::stoull(text));
    };
    if (entry.key() == "location") location = entry.value();
    else if (entry.key() == "offset") offset = number(entry.value());
    else if (entry.key() == "length") length = number(entry.value());
  }
  if (location.empty()) fail(fmt::format("{}: external data without a location", what));
  fs::path relative(location);
  bool escapes = relative.is_absolute();
  for (const auto& part : relative)
    if (part == "..") escapes = true;
  fs::path file = base_dir_ / relative;
  std::error_code error;
  fs::path canonical = fs::weakly_canonical(file, error), base = fs::weakly_canonical(base_dir_.empty() ? "." : base_dir_, error);
  std::string canonical_text = canonical.string(), base_text = base.string() + "/";
  if (escapes || canonical_text.compare(0, base_text.size(), base_text) != 0)
    fail(fmt::format("{}: external data '{}' is outside the model's folder; only files beside the model are read",
                     what, location));
  if (length && *length != bytes)
    fail(fmt::format("{}: external data length {} does not match its shape ({} bytes)", what, *length, bytes));
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(fmt::format("{}: cannot open external data '{}'", what, file.string()));
  in.seekg(0, std::ios::end);
  uint64_t size = uint64_t(in.tellg());
  if (offset > size || size - offset < bytes)
    fail(fmt::format("{}: external data '{}' holds {} bytes from offset {}, the tensor needs {}", what, location,
                     offset > size ? 0 : size - offset, offset, bytes));
  std::string data(bytes, '\0');
  in.seekg(int64_t(offset));
  in.read(data.data(), int64_t(bytes));
  if (!in) fail(fmt::format("{}: cannot read external data '{}'", what, location));
  return data;
}

Constant Importer::decode(const onnx::TensorProto& tensor, const std::string& what) {
  Constant result;
  int64_t elements = 1;
  for (int64_t dim : tensor.dims()) {
    if (dim < 0) fail(fmt::format("{}: negative dimension {}", what, dim));
    result.dims.push_back(dim);
    elements = saturating_mul(elements, dim);
  }
  if (elements > kMaxTensorElements)
    fail(fmt::format("{}: shape {} has {} elements, more than cnnc supports (2^31)", what, dims_text(result.dims),
                     elements));
  int type = tensor.data_type();
  size_t width = 0;
  switch (type) {
    case onnx::TensorProto::FLOAT: case onnx::TensorProto::INT32: width = 4; break;
    case onnx::TensorProto::DOUBLE: case onnx::TensorProto::INT64: width = 8; break;
    default:
      fail(fmt::format("{}: element type {} ({}); cnnc reads float32, float64, int32 and int64 tensors", what,
                       type_name(type), type));
  }
  result.is_float = type == onnx::TensorProto::FLOAT || type == onnx::TensorProto::DOUBLE;
  uint64_t bytes = uint64_t(elements) * width;
  std::string external;
  const std::string* raw = nullptr;
  if (tensor.data_location() == onnx::TensorProto::EXTERNAL) {
    external = read_external(tensor, what, bytes);
    raw = &external;
  } else if (tensor.has_raw_data()) {
    raw = &tensor.raw_data();
  }
  if (raw) {
    if (raw->size() != bytes)
      fail(fmt::format("{}: {} bytes of data for shape {} of {} ({} bytes expected)", what, raw->size(),
                       dims_text(result.dims), type_name(type), bytes));
    result.values.resize(size_t(elements));
    const char* data = raw->data();
    for (int64_t i = 0; i < elements; ++i) {
      const char* at = data + size_t(i) * width;
      switch (type) {
        case onnx::TensorProto::FLOAT: { float v; std::memcpy(&v, at, 4); result.values[size_t(i)] = v; break; }
        case onnx::TensorProto::INT32: { int32_t v; std::memcpy(&v, at, 4); result.values[size_t(i)] = v; break; }
        case onnx::TensorProto::DOUBLE: { double v; std::memcpy(&v, at, 8); result.values[size_t(i)] = v; break; }
        default: { int64_t v; std::memcpy(&v, at, 8); result.values[size_t(i)] = double(v); break; }
      }
    }
    return result;
  }
  int64_t count = type == onnx::TensorProto::FLOAT    ? tensor.float_data_size()
                  : type == onnx::TensorProto::DOUBLE ? tensor.double_data_size()
                  : type == onnx::TensorProto::INT32  ? tensor.int32_data_size()
                                                      : tensor.int64_data_size();
  if (count != elements)
    fail(fmt::format("{}: {} values for shape {} ({} expected)", what, count, dims_text(result.dims), elements));
  result.values.resize(size_t(elements));
  for (int64_t i = 0; i < elements; ++i) {
    int k = int(i);
    result.values[size_t(i)] = type == onnx::TensorProto::FLOAT    ? double(tensor.float_data(k))
                               : type == onnx::TensorProto::DOUBLE ? tensor.double_data(k)
                               : type == onnx::TensorProto::INT32  ? double(tensor.int32_data(k))
                                                                   : double(tensor.int64_data(k));
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Graph setup

void Importer::read_opset(const onnx::ModelProto& model) {
  for (const auto& opset : model.opset_import())
    if (opset.domain().empty() || opset.domain() == "ai.onnx") opset_ = opset.version();
  if (opset_ == 0) fail("the model imports no version of the default ONNX operator set (ai.onnx)");
  if (opset_ < kMinOpset || opset_ > kMaxOpset)
    fail(fmt::format("opset {}: cnnc imports opsets {} to {}", opset_, kMinOpset, kMaxOpset));
}

void Importer::read_input(const onnx::ValueInfoProto& input) {
  const std::string what = fmt::format("graph input '{}'", input.name());
  if (!input.type().has_tensor_type()) fail(what + ": not a tensor");
  const auto& tensor = input.type().tensor_type();
  if (tensor.elem_type() != onnx::TensorProto::FLOAT)
    fail(fmt::format("{}: element type {}; cnnc networks take float32", what, type_name(tensor.elem_type())));
  if (!tensor.has_shape()) fail(what + ": no shape; cnnc needs every dimension but the batch");
  const auto& dims = tensor.shape().dim();
  Shape onnx_shape;
  for (int d = 1; d < dims.size(); ++d) {
    if (!dims[d].has_dim_value() || dims[d].dim_value() < 1)
      fail(fmt::format("{}: dimension {} is not a fixed size; cnnc needs every dimension but the batch (the first)",
                       what, d));
    onnx_shape.push_back(dims[d].dim_value());
  }
  Value value;
  value.layer = kInputName;
  value.onnx_shape = onnx_shape;
  if (dims.size() == 4) {
    value.image = true;
    value.shape = {onnx_shape[1], onnx_shape[2], onnx_shape[0]};
  } else if (dims.size() == 3) {
    value.image = value.one_d = true;
    value.shape = {1, onnx_shape[1], onnx_shape[0]};
  } else if (dims.size() == 2) {
    value.shape = onnx_shape;
  } else {
    fail(fmt::format("{}: rank {}; cnnc takes [N, C, H, W] images, [N, C, L] sequences or [N, F] vectors", what,
                     dims.size()));
  }
  if (shape_elements(value.shape) > kMaxTensorElements)
    fail(fmt::format("{}: shape {} is larger than cnnc supports (2^31 elements per example)", what,
                     dims_text(onnx_shape)));
  result_.onnx_input_shape = onnx_shape;
  result_.input_name = input.name();
  values_[input.name()] = value;
}

// ---------------------------------------------------------------------------------------------
// Node helpers

const onnx::AttributeProto* Importer::attr(const std::string& name) const {
  for (const auto& a : node_->attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

// An attribute of the type asked for (or of no declared type, as in files older than IR 3).
const onnx::AttributeProto* Importer::typed_attr(const std::string& name, int type) const {
  const auto* a = attr(name);
  if (a && a->type() != onnx::AttributeProto::UNDEFINED && a->type() != type)
    fail_node(fmt::format("attribute {} has type {}, not {}", name, onnx::AttributeProto::AttributeType_Name(a->type()),
                          onnx::AttributeProto::AttributeType_Name(onnx::AttributeProto::AttributeType(type))));
  return a;
}

int64_t Importer::attr_int(const std::string& name, int64_t fallback) const {
  const auto* a = typed_attr(name, onnx::AttributeProto::INT);
  return a ? a->i() : fallback;
}

double Importer::attr_float(const std::string& name, double fallback) const {
  const auto* a = typed_attr(name, onnx::AttributeProto::FLOAT);
  return a ? double(a->f()) : fallback;
}

std::string Importer::attr_string(const std::string& name, const std::string& fallback) const {
  const auto* a = typed_attr(name, onnx::AttributeProto::STRING);
  return a ? a->s() : fallback;
}

std::vector<int64_t> Importer::attr_ints(const std::string& name) const {
  const auto* a = typed_attr(name, onnx::AttributeProto::INTS);
  if (!a) return {};
  if (a->ints_size() > 64) fail_node(fmt::format("attribute {} has {} values", name, a->ints_size()));
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

const Constant& Importer::constant(int i, const std::string& role) {
  if (!has_input(i)) fail_node(fmt::format("needs its {} (input {})", role, i));
  const std::string& name = node_->input(i);
  auto it = constants_.find(name);
  if (it == constants_.end()) {
    if (values_.count(name))
      fail_node(fmt::format("its {} ('{}') is computed by the network; cnnc needs a constant (an initializer) here",
                            role, name));
    fail_node(fmt::format("reads '{}', which is not defined before it (the graph is not in topological order, or "
                          "has a cycle)",
                          name));
  }
  return it->second;
}

std::optional<double> Importer::scalar(int i, const std::string& role) {
  if (!has_input(i)) return std::nullopt;
  const Constant& c = constant(i, role);
  if (c.values.size() != 1) fail_node(fmt::format("its {} has {} values; one expected", role, c.values.size()));
  return c.values[0];
}

Value& Importer::value(int i) {
  if (!has_input(i)) fail_node(fmt::format("input {} is missing", i));
  const std::string& name = node_->input(i);
  auto it = values_.find(name);
  if (it == values_.end()) {
    if (constants_.count(name))
      fail_node(fmt::format("input {} ('{}') is a constant; cnnc needs a value computed from the network's input "
                            "here",
                            i, name));
    fail_node(fmt::format("reads '{}', which is not defined before it (the graph is not in topological order, or "
                          "has a cycle)",
                          name));
  }
  if (it->second.nhwc && node_->op_type() != "Flatten" && node_->op_type() != "Reshape")
    fail_node("reads a Transpose to NHWC; cnnc reads such a transpose only in front of a Flatten or Reshape");
  return it->second;
}

void Importer::define(const std::string& name, Value value) {
  if (name.empty()) return;
  if (values_.count(name) || constants_.count(name))
    fail_node(fmt::format("defines '{}' a second time (every ONNX value has one producer)", name));
  values_.emplace(name, std::move(value));
}

void Importer::require_unused_outputs(int from) {
  for (int o = from; o < node_->output_size(); ++o)
    if (!node_->output(o).empty() && uses(node_->output(o)) > 0)
      fail_node(fmt::format("its output {} ('{}') is used; cnnc computes only the first", o, node_->output(o)));
}

int Importer::sole_consumer(const std::string& name) const {
  auto it = consumers_.find(name);
  if (it == consumers_.end() || it->second.size() != 1 || uses(name) != 1) return -1;
  return it->second[0];
}

bool default_domain(const onnx::NodeProto& node) { return node.domain().empty() || node.domain() == "ai.onnx"; }

bool usable_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 && is_valid_identifier(name) && name != kInputName;
}

std::string Importer::unique_name(const std::string& preferred, const std::string& op) {
  if (usable_name(preferred) && !names_.count(preferred)) {
    names_.insert(preferred);
    return preferred;
  }
  for (;;) {
    int& counter = name_counters_[op];
    std::string name = counter == 0 ? op : fmt::format("{}_{}", op, counter);
    ++counter;
    // A generated name never takes a name a later node carries.
    if (!names_.count(name) && !reserved_.count(name)) {
      names_.insert(name);
      return name;
    }
  }
}

Layer& Importer::add_layer(const std::string& op, const std::vector<std::string>& inputs, const std::string& preferred) {
  Layer layer;
  layer.op = op;
  layer.name = unique_name(preferred == kGeneratedName ? "" : preferred.empty() ? node_->name() : preferred, op);
  layer.inputs = inputs;
  layers_.push_back(std::move(layer));
  return layers_.back();
}

void Importer::rename(Layer& layer, const std::string& preferred) {
  if (!usable_name(preferred) || names_.count(preferred)) return;
  names_.erase(layer.name);
  layer.name = preferred;
  names_.insert(preferred);
}

std::string Importer::materialize(Value& value) {
  if (!value.padded()) return value.layer;
  Layer& layer = add_layer("zero_padding2d", {value.layer}, usable_name(value.pad_name) ? value.pad_name : kGeneratedName);
  const Padding4& p = value.pad;
  layer.set("padding", fmt::format("[[{}, {}], [{}, {}]]", p[0], p[1], p[2], p[3]));
  value.layer = layer.name;
  value.layer_index = int(layers_.size()) - 1;
  value.shape = {value.shape[0] + p[0] + p[1], value.shape[1] + p[2] + p[3], value.shape[2]};
  value.onnx_shape = value.one_d ? Shape{value.shape[2], value.shape[1]} : Shape{value.shape[2], value.shape[0], value.shape[1]};
  value.pad = {0, 0, 0, 0};
  value.pad_name.clear();
  // Zeros keep a non-negative map non-negative.
  return value.layer;
}

Value Importer::image_value(const Layer& layer, Shape shape, bool one_d) {
  Value v;
  v.layer = layer.name;
  v.layer_index = int(layers_.size()) - 1;
  v.image = true;
  v.one_d = one_d;
  v.onnx_shape = one_d ? Shape{shape[2], shape[1]} : Shape{shape[2], shape[0], shape[1]};
  v.shape = std::move(shape);
  return v;
}

Value Importer::same_value(const Value& input, const Layer& layer) {
  Value v = input;
  v.layer = layer.name;
  v.layer_index = int(layers_.size()) - 1;
  v.pad = {0, 0, 0, 0};
  v.non_negative = false;
  return v;
}

Layer* Importer::foldable_producer(const Value& value, std::initializer_list<const char*> ops) {
  if (value.layer_index < 0 || value.padded() || value.nhwc) return nullptr;
  Layer& layer = layers_[size_t(value.layer_index)];
  if (layer.name != value.layer || value.layer_index != int(layers_.size()) - 1) return nullptr;
  if (uses(node_->input(0)) != 1 || shared_layers_.count(layer.name)) return nullptr;
  bool known = false;
  for (const char* op : ops) known = known || layer.op == op;
  if (!known) return nullptr;
  const std::string* activation = layer.get("activation");
  if (activation && *activation != "linear") return nullptr;
  return &layer;
}

// ---------------------------------------------------------------------------------------------
// Windows

Importer::Window Importer::read_window(const Value& input, const Shape& kernel, bool has_dilations) {
  Window w;
  size_t rank = input.one_d ? 1 : 2;
  if (kernel.size() != rank)
    fail_node(fmt::format("a {}-D window ({}) on a {}-D map", kernel.size(), dims_text(kernel), rank));
  auto two = [&](const std::vector<int64_t>& values, const std::string& name, int64_t fallback, int64_t& a, int64_t& b) {
    if (values.empty()) {
      a = b = fallback;
      return;
    }
    if (values.size() != rank) fail_node(fmt::format("{} has {} values for a {}-D window", name, values.size(), rank));
    for (int64_t v : values)
      if (v < 1 || v > 65536) fail_node(fmt::format("{} {} is out of range", name, dims_text(values)));
    if (rank == 1) a = 1, b = values[0];
    else a = values[0], b = values[1];
  };
  for (int64_t k : kernel)
    if (k < 1 || k > 65536) fail_node(fmt::format("kernel size {} is out of range", dims_text(kernel)));
  w.kh = rank == 1 ? 1 : kernel[0];
  w.kw = kernel.back();
  two(attr_ints("strides"), "strides", 1, w.sh, w.sw);
  if (has_dilations) two(attr_ints("dilations"), "dilations", 1, w.dh, w.dw);
  std::string auto_pad = attr_string("auto_pad", "NOTSET");
  Padding4 own{0, 0, 0, 0};
  int64_t in_h = input.shape[0] + input.pad[0] + input.pad[1], in_w = input.shape[1] + input.pad[2] + input.pad[3];
  int64_t span_h = (w.kh - 1) * w.dh + 1, span_w = (w.kw - 1) * w.dw + 1;
  if (auto_pad == "NOTSET") {
    std::vector<int64_t> pads = attr_ints("pads");
    if (!pads.empty()) {
      if (pads.size() != 2 * rank) fail_node(fmt::format("pads has {} values for a {}-D window", pads.size(), rank));
      for (int64_t p : pads)
        if (p < 0 || p > 65536) fail_node(fmt::format("pads {} are out of range", dims_text(pads)));
      if (rank == 1) own = {0, 0, pads[0], pads[1]};
      else own = {pads[0], pads[2], pads[1], pads[3]};
    }
  } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    // SAME_UPPER is Keras's 'same'; SAME_LOWER puts the odd one before.
    auto split = [&](int64_t in, int64_t span, int64_t stride, int64_t& before, int64_t& after) {
      std::tie(before, after) = same_padding(in, span, stride);
      if (auto_pad == "SAME_LOWER") std::swap(before, after);
    };
    split(in_h, span_h, w.sh, own[0], own[1]);
    split(in_w, span_w, w.sw, own[2], own[3]);
  } else if (auto_pad != "VALID") {
    fail_node(fmt::format("auto_pad '{}' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER", auto_pad));
  }
  for (int k = 0; k < 4; ++k) w.pads[size_t(k)] = own[size_t(k)] + input.pad[size_t(k)];
  if (span_h > in_h + own[0] + own[1] || span_w > in_w + own[2] + own[3])
    fail_node(fmt::format("the window ({}x{}) is larger than its padded input ({}x{})", span_h, span_w,
                          in_h + own[0] + own[1], in_w + own[2] + own[3]));
  return w;
}

std::string Importer::padding_kind(const Value& input, const Window& w) const {
  if (w.pads == Padding4{0, 0, 0, 0}) return "valid";
  auto [top, bottom] = same_padding(input.shape[0], (w.kh - 1) * w.dh + 1, w.sh);
  auto [left, right] = same_padding(input.shape[1], (w.kw - 1) * w.dw + 1, w.sw);
  if (w.pads == Padding4{top, bottom, left, right}) return "same";
  return "";
}

void Importer::check_ceil_mode(const Value& input, const Window& w) {
  if (attr_int("ceil_mode", 0) == 0) return;
  auto sizes = [&](int64_t in, int64_t k, int64_t s) {
    int64_t floor_size = (in - k) / s + 1, ceil_size = (in - k + s - 1) / s + 1;
    return floor_size == ceil_size;
  };
  int64_t in_h = input.shape[0] + w.pads[0] + w.pads[1], in_w = input.shape[1] + w.pads[2] + w.pads[3];
  if (!sizes(in_h, w.kh, w.sh) || !sizes(in_w, w.kw, w.sw))
    fail_node("ceil_mode=1 adds a partial window here; cnnc's windows round the output size down (ceil_mode=0)");
}

// ---------------------------------------------------------------------------------------------
// Ops

void Importer::conv() {
  Value input = value(0);
  if (!input.image) fail_node("Conv on a vector; cnnc convolves [N, C, H, W] maps and [N, C, L] sequences");
  const Constant& weights = constant(1, "weights W");
  size_t rank = input.one_d ? 3 : 4;
  if (weights.dims.size() != rank)
    fail_node(fmt::format("weights of shape {} for a {}-D convolution", dims_text(weights.dims), rank - 2));
  int64_t out_channels = weights.dims[0], in_per_group = weights.dims[1];
  int64_t channels = input.shape[2];
  int64_t groups = attr_int("group", 1);
  Shape kernel(weights.dims.begin() + 2, weights.dims.end());
  std::vector<int64_t> kernel_attr = attr_ints("kernel_shape");
  if (!kernel_attr.empty() && Shape(kernel_attr) != kernel)
    fail_node(fmt::format("kernel_shape {} differs from the weights' {}", dims_text(kernel_attr), dims_text(kernel)));
  if (groups < 1 || channels % groups != 0 || in_per_group * groups != channels || out_channels % groups != 0)
    fail_node(fmt::format("group {} with {} input channels and weights {} do not fit", groups, channels,
                          dims_text(weights.dims)));
  bool depthwise = groups > 1 && groups == channels;
  if (groups > 1 && !depthwise)
    fail_node(fmt::format("group={} with {} channels: cnnc has convolutions with groups 1 (conv2d) and groups = "
                          "channels (depthwise_conv2d), not grouped ones in between",
                          groups, channels));
  const Constant* bias = nullptr;
  if (has_input(2)) {
    bias = &constant(2, "bias B");
    if (int64_t(bias->values.size()) != out_channels)
      fail_node(fmt::format("bias of {} values for {} output channels", bias->values.size(), out_channels));
  }
  Window w = read_window(input, kernel, true);
  if (w.dh > 64 || w.dw > 64) fail_node("dilations above 64 are not supported");
  // A stride and a dilation both above 1 (cnnc's convolutions, like Keras's, take one or the
  // other): the dilated convolution at stride 1, then every s-th row and column, kept by a 1x1 max
  // pooling of stride s. Exact; it computes s_h * s_w times the outputs it keeps.
  int64_t keep_h = 1, keep_w = 1;
  if ((w.sh > 1 || w.sw > 1) && (w.dh > 1 || w.dw > 1)) {
    keep_h = w.sh, keep_w = w.sw;
    w.sh = w.sw = 1;
    result_.notes.push_back(fmt::format("{}: strides {}x{} with dilations {}x{}: a stride-1 convolution, then a 1x1 "
                                        "max pooling of stride {}x{} keeps every output it computes",
                                        node_desc_, keep_h, keep_w, w.dh, w.dw, keep_h, keep_w));
  }
  std::string padding = padding_kind(input, w);
  std::string source;
  Value source_value = input;
  if (padding.empty()) {
    source_value.pad = w.pads;
    source = materialize(source_value);
    padding = "valid";
    result_.notes.push_back(fmt::format("{}: its padding became a zero_padding2d layer", node_desc_));
  } else {
    source = input.layer;
  }

  int64_t kh = w.kh, kw = w.kw;
  // Fold a 1x1 convolution after a bias-free depthwise one into a separable_conv2d.
  if (!depthwise && kh == 1 && kw == 1 && padding == "valid" && w.sh == 1 && w.sw == 1 && keep_h * keep_w == 1 &&
      !input.padded()) {
    Layer* dw = foldable_producer(input, {"depthwise_conv2d"});
    if (dw && *dw->get("use_bias") == "false") {
      dw->op = "separable_conv2d";
      std::vector<std::pair<std::string, std::string>> attrs = {{"filters", fmt::format("{}", out_channels)}};
      for (auto& a : dw->attrs)
        if (a.first != "use_bias" && a.first != "activation") attrs.push_back(a);
      attrs.emplace_back("activation", "linear");
      attrs.emplace_back("use_bias", bias ? "true" : "false");
      dw->attrs = attrs;
      ImportedTensor pointwise{{1, 1, channels, out_channels}, std::vector<float>(size_t(channels * out_channels))};
      for (int64_t o = 0; o < out_channels; ++o)
        for (int64_t c = 0; c < channels; ++c)
          pointwise.data[size_t(c * out_channels + o)] = float(weights.values[size_t(o * channels + c)]);
      dw->params.emplace_back("pointwise_kernel", std::move(pointwise));
      if (bias) dw->params.emplace_back("bias", ImportedTensor{{out_channels}, std::vector<float>(bias->values.begin(), bias->values.end())});
      rename(*dw, node_->name());
      Value out = input;
      out.layer = dw->name;
      out.shape[2] = out_channels;
      out.onnx_shape[0] = out_channels;
      out.non_negative = false;
      result_.notes.push_back(fmt::format("{}: folded with the depthwise Conv before it into separable_conv2d '{}'",
                                          node_desc_, dw->name));
      define_output(out);
      return;
    }
  }

  Layer& layer = add_layer(depthwise ? "depthwise_conv2d" : "conv2d", {source});
  if (!depthwise) layer.set("filters", fmt::format("{}", out_channels));
  layer.set("kernel", pair_text(kh, kw));
  layer.set("stride", pair_text(w.sh, w.sw));
  layer.set("padding", padding);
  layer.set("dilation", pair_text(w.dh, w.dw));
  int64_t multiplier = depthwise ? out_channels / channels : 1;
  if (depthwise) layer.set("depth_multiplier", fmt::format("{}", multiplier));
  layer.set("activation", "linear");
  layer.set("use_bias", bias ? "true" : "false");
  int64_t taps = kh * kw;
  if (depthwise) {
    ImportedTensor k{{kh, kw, channels, multiplier}, std::vector<float>(size_t(taps * out_channels))};
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t m = 0; m < multiplier; ++m)
        for (int64_t t = 0; t < taps; ++t)
          k.data[size_t((t * channels + c) * multiplier + m)] = float(weights.values[size_t((c * multiplier + m) * taps + t)]);
    layer.params.emplace_back("depthwise_kernel", std::move(k));
  } else {
    ImportedTensor k{{kh, kw, channels, out_channels}, std::vector<float>(size_t(taps * channels * out_channels))};
    for (int64_t o = 0; o < out_channels; ++o)
      for (int64_t c = 0; c < channels; ++c)
        for (int64_t t = 0; t < taps; ++t)
          k.data[size_t((t * channels + c) * out_channels + o)] = float(weights.values[size_t((o * channels + c) * taps + t)]);
    layer.params.emplace_back("kernel", std::move(k));
  }
  if (bias) layer.params.emplace_back("bias", ImportedTensor{{out_channels}, std::vector<float>(bias->values.begin(), bias->values.end())});
  int64_t in_h = source_value.shape[0], in_w = source_value.shape[1];
  int64_t out_h = window_output_size(in_h, (kh - 1) * w.dh + 1, w.sh, padding);
  int64_t out_w = window_output_size(in_w, (kw - 1) * w.dw + 1, w.sw, padding);
  if (keep_h * keep_w > 1) {
    Layer& keep = add_layer("maxpool2d", {layer.name}, kGeneratedName);
    keep.set("size", "1");
    keep.set("stride", pair_text(keep_h, keep_w));
    keep.set("padding", "valid");
    out_h = (out_h - 1) / keep_h + 1;
    out_w = (out_w - 1) / keep_w + 1;
    define_output(image_value(keep, {out_h, out_w, out_channels}, input.one_d));
    return;
  }
  define_output(image_value(layer, {out_h, out_w, out_channels}, input.one_d));
}

void Importer::pool(bool is_max) {
  Value input = value(0);
  if (!input.image) fail_node("pooling on a vector; cnnc pools [N, C, H, W] maps and [N, C, L] sequences");
  // A Pad before a pooling adds real zeros (they count in the average and may win the maximum),
  // unlike the pooling's own pads: a layer of its own.
  materialize(input);
  require_unused_outputs(1);
  std::vector<int64_t> kernel = attr_ints("kernel_shape");
  if (kernel.empty()) fail_node("no kernel_shape");
  Window w = read_window(input, Shape(kernel), is_max);
  if (w.dh > 1 || w.dw > 1) fail_node("dilated pooling windows are not supported (cnnc pools contiguous windows)");
  check_ceil_mode(input, w);
  std::string padding = padding_kind(input, w);
  bool count_include_pad = attr_int("count_include_pad", 0) != 0;
  if (!is_max && padding == "same" && count_include_pad) padding = "";  // Keras 'same' excludes the padding
  Value source_value = input;
  if (padding.empty()) {
    bool pads_inside = w.pads[0] < w.kh && w.pads[1] < w.kh && w.pads[2] < w.kw && w.pads[3] < w.kw;
    if (is_max && !(input.non_negative && pads_inside))
      fail_node(fmt::format("pads [{}, {}, {}, {}] (top, bottom, left, right) are neither none nor cnnc's 'same' "
                            "padding for this shape, and zeros would change the maximum of a map that may be negative",
                            w.pads[0], w.pads[1], w.pads[2], w.pads[3]));
    if (!is_max && !count_include_pad)
      fail_node(fmt::format("pads [{}, {}, {}, {}] (top, bottom, left, right) with count_include_pad=0 are not cnnc's "
                            "'same' padding for this shape",
                            w.pads[0], w.pads[1], w.pads[2], w.pads[3]));
    source_value.pad = w.pads;
    materialize(source_value);
    padding = "valid";
    result_.notes.push_back(fmt::format("{}: its padding became a zero_padding2d layer", node_desc_));
  }
  Layer& layer = add_layer(is_max ? "maxpool2d" : "avgpool2d", {source_value.layer});
  layer.set("size", pair_text(w.kh, w.kw));
  layer.set("stride", pair_text(w.sh, w.sw));
  layer.set("padding", padding);
  int64_t out_h = window_output_size(source_value.shape[0], w.kh, w.sh, padding);
  int64_t out_w = window_output_size(source_value.shape[1], w.kw, w.sw, padding);
  Value out = image_value(layer, {out_h, out_w, input.shape[2]}, input.one_d);
  out.non_negative = input.non_negative;
  define_output(out);
}

void Importer::global_pool(bool is_max) {
  Value input = value(0);
  if (!input.image) fail_node("global pooling on a vector");
  std::string source = materialize(input);
  Layer& layer = add_layer(is_max ? "global_maxpool2d" : "global_avgpool2d", {source});
  Value out;
  out.layer = layer.name;
  out.layer_index = int(layers_.size()) - 1;
  out.shape = {input.shape[2]};
  out.onnx_shape = input.one_d ? Shape{input.shape[2], 1} : Shape{input.shape[2], 1, 1};
  out.non_negative = input.non_negative;
  define_output(out);
}

void Importer::dense_from(const Value& input, const Constant& weights, bool transposed, double alpha,
                          const Constant* bias, double beta, const std::string& preferred) {
  if (input.image) fail_node("a matrix product on a map; flatten it first (cnnc's dense takes vectors)");
  if (weights.dims.size() != 2) fail_node(fmt::format("weights of shape {}; a matrix expected", dims_text(weights.dims)));
  int64_t in = input.shape[0];
  int64_t rows = transposed ? weights.dims[1] : weights.dims[0], units = transposed ? weights.dims[0] : weights.dims[1];
  if (rows != in) fail_node(fmt::format("weights {} for an input of {} features", dims_text(weights.dims), in));
  std::vector<float> bias_values;
  if (bias) {
    size_t n = bias->values.size();
    Shape dims = bias->dims;
    while (!dims.empty() && dims.front() == 1) dims.erase(dims.begin());
    // [M], [1, M] or one value; [M, 1] or [N, M] would vary along the batch.
    if (!(dims.empty() || dims == Shape{units}))
      fail_node(fmt::format("bias C of shape {} does not broadcast to [{}] along the units alone", dims_text(bias->dims), units));
    for (int64_t u = 0; u < units; ++u) bias_values.push_back(float(beta * bias->values[n == 1 ? 0 : size_t(u)]));
  }
  Layer& layer = add_layer("dense", {input.layer}, preferred);
  layer.set("units", fmt::format("{}", units));
  layer.set("activation", "linear");
  layer.set("use_bias", bias ? "true" : "false");
  ImportedTensor k{{in, units}, std::vector<float>(size_t(in * units))};
  for (int64_t j = 0; j < in; ++j) {
    int64_t row = onnx_index(input.flattened, j);
    for (int64_t u = 0; u < units; ++u) {
      double w = transposed ? weights.values[size_t(u * in + row)] : weights.values[size_t(row * units + u)];
      k.data[size_t(j * units + u)] = float(alpha * w);
    }
  }
  layer.params.emplace_back("kernel", std::move(k));
  if (bias) layer.params.emplace_back("bias", ImportedTensor{{units}, bias_values});
  Value out;
  out.layer = layer.name;
  out.layer_index = int(layers_.size()) - 1;
  out.shape = {units};
  out.onnx_shape = {units};
  define_output(out);
}

void Importer::gemm() {
  Value input = value(0);
  if (attr_int("transA", 0) != 0) fail_node("transA=1: cnnc's dense multiplies the input as it is");
  const Constant& weights = constant(1, "weights B");
  const Constant* bias = has_input(2) ? &constant(2, "bias C") : nullptr;
  double alpha = attr_float("alpha", 1.0), beta = attr_float("beta", 1.0);
  dense_from(input, weights, attr_int("transB", 0) != 0, alpha, bias, beta, "");
}

void Importer::matmul() {
  Value input = value(0);
  const Constant& weights = constant(1, "weights B");
  // MatMul then Add of a constant: one dense with a bias.
  int add = sole_consumer(node_->output(0));
  if (add >= 0) {
    const onnx::NodeProto& next = graph_->node(add);
    if (next.op_type() == "Add" && next.input_size() == 2 && next.output_size() == 1) {
      int other = next.input(0) == node_->output(0) ? 1 : 0;
      auto it = constants_.find(next.input(other));
      Shape bias_dims = it != constants_.end() ? it->second.dims : Shape{};
      while (bias_dims.size() > 1 && bias_dims.front() == 1) bias_dims.erase(bias_dims.begin());
      if (it != constants_.end() && weights.dims.size() == 2 && bias_dims == Shape{weights.dims[1]} &&
          default_domain(next)) {
        std::string preferred = next.name();
        dense_from(input, weights, false, 1.0, &it->second, 1.0, preferred);
        Value out = values_.at(node_->output(0));
        values_.erase(node_->output(0));
        values_.emplace(next.output(0), out);
        skipped_.insert(add);
        result_.notes.push_back(fmt::format("{}: MatMul and the Add after it became one dense", node_desc_));
        return;
      }
    }
  }
  dense_from(input, weights, false, 1.0, nullptr, 1.0, "");
}

void Importer::activation(const std::string& op, std::vector<std::pair<std::string, std::string>> attrs, bool non_negative) {
  Value input = value(0);
  if (!input.image && !input.flattened.empty() && op == "softmax")
    fail_node("a Softmax over a flattened NCHW map is not supported");
  // An activation right after a convolution or dense, with the attributes `activation: op` has
  // (none, or the slope that form uses: leaky_relu's 0.2, elu's 1, as in codegen/ops/activation.cpp
  // and Keras's activation functions; the layer leaky_relu's default is 0.3, Keras's LeakyReLU):
  // that layer's `activation:`.
  bool defaults = true;
  for (const auto& [key, text] : attrs) {
    double as_activation = op == "leaky_relu" ? 0.2 : op == "elu" ? 1.0 : NAN;
    defaults = defaults && key == "alpha" && float(as_activation) == float(std::stod(text));
  }
  if (defaults) {
    if (Layer* producer = foldable_producer(input, {"conv2d", "depthwise_conv2d", "separable_conv2d", "dense"})) {
      producer->set("activation", op);
      if (!node_->name().empty()) result_.notes.push_back(fmt::format("{}: became the activation of '{}'", node_desc_, producer->name));
      Value out = input;
      out.non_negative = non_negative;
      define_output(out);
      return;
    }
  }
  std::string source = materialize(input);
  Layer& layer = add_layer(op, {source});
  for (auto& [k, v] : attrs) layer.set(k, v);
  Value out = same_value(input, layer);
  out.non_negative = non_negative;
  define_output(out);
}

void Importer::clip() {
  std::optional<double> low, high;
  if (opset_ < 11) {
    if (attr("min")) low = attr_float("min", 0);
    if (attr("max")) high = attr_float("max", 0);
  } else {
    low = scalar(1, "min");
    high = scalar(2, "max");
  }
  bool no_high = !high || *high >= double(std::numeric_limits<float>::max());
  if (low && *low == 0 && high && *high == 6) return activation("relu6", {}, true);
  if (low && *low == 0 && no_high) return activation("relu", {}, true);
  fail_node(fmt::format("Clip({}, {}): cnnc has Clip(0, 6) (relu6) and Clip(0, inf) (relu) only",
                        low ? yaml_number(*low) : "-inf", high ? yaml_number(*high) : "inf"));
}

void Importer::softmax() {
  const Value& input = value(0);
  int64_t rank = input.rank();
  int64_t axis = attr_int("axis", opset_ < 13 ? 1 : -1);
  if (axis < 0) axis += rank;
  // A vector [N, F] (or a globally pooled [N, C, 1, 1], along C; before opset 13, C and the 1s).
  if (!input.image && axis == 1) return activation("softmax", {}, true);
  if (input.image) {
    // Opset 13 and later: over one axis; the channels are cnnc's last. Before: over all axes from
    // `axis` on, which for axis 1 is the channels only when the map is 1x1.
    bool channels = axis == 1 && (opset_ >= 13 || input.shape[0] * input.shape[1] == 1);
    if (channels) return activation("softmax", {}, true);
  }
  fail_node(fmt::format("Softmax over axis {} of a rank-{} tensor: cnnc's softmax is over the channels (axis 1) of "
                        "a map or the features of a vector{}",
                        attr_int("axis", opset_ < 13 ? 1 : -1), rank,
                        opset_ < 13 && input.image ? " (before opset 13, axis 1 of a map means all of C, H, W)" : ""));
}

void Importer::batchnorm() {
  Value input = value(0);
  if (!input.flattened.empty()) fail_node("BatchNormalization of a flattened NCHW map is not supported");
  require_unused_outputs(1);
  if (opset_ >= 14 && attr_int("training_mode", 0) != 0) fail_node("training_mode=1; cnnc imports inference graphs");
  // Before opset 14 the training form is the one with the statistics outputs (opsets 7-13), or
  // is_test=0 (opsets 1-6), whether or not the outputs are read.
  int outputs = 0;
  for (const auto& out : node_->output()) outputs += !out.empty();
  if (opset_ < 14 && opset_ >= 7 && outputs > 1)
    fail_node("the training form (mean and variance outputs); cnnc imports inference graphs");
  if (opset_ < 7 && attr_int("is_test", 0) == 0) fail_node("is_test=0 (the training form); cnnc imports inference graphs");
  if (opset_ < 9 && attr_int("spatial", 1) != 1) fail_node("spatial=0 (per-element statistics) is not supported");
  int64_t channels = input.image ? input.shape[2] : input.shape[0];
  const char* roles[] = {"scale", "bias B", "mean", "variance"};
  const char* names[] = {"gamma", "beta", "moving_mean", "moving_variance"};
  std::vector<const Constant*> params;
  for (int i = 0; i < 4; ++i) {
    params.push_back(&constant(i + 1, roles[i]));
    if (int64_t(params.back()->values.size()) != channels)
      fail_node(fmt::format("{} has {} values for {} channels", roles[i], params.back()->values.size(), channels));
  }
  for (double v : params[3]->values)
    if (!(v >= 0)) fail_node("the variance has a negative or NaN value");
  double epsilon = attr_float("epsilon", 1e-5), momentum = attr_float("momentum", 0.9);
  if (!(epsilon >= 0 && epsilon <= 1)) fail_node(fmt::format("epsilon {} is outside [0, 1]", epsilon));
  if (!(momentum >= 0 && momentum <= 1)) fail_node(fmt::format("momentum {} is outside [0, 1]", momentum));
  std::string source = materialize(input);
  Layer& layer = add_layer("batchnorm", {source});
  // float32 values, written so that they read back as the same float.
  layer.set("momentum", fmt::format("{}", float(momentum)));
  layer.set("epsilon", fmt::format("{}", float(epsilon)));
  for (int i = 0; i < 4; ++i)
    layer.params.emplace_back(names[i], ImportedTensor{{channels}, std::vector<float>(params[size_t(i)]->values.begin(), params[size_t(i)]->values.end())});
  define_output(same_value(input, layer));
}

void Importer::add() {
  if (node_->input_size() != 2) fail_node("Add needs two inputs");
  bool c0 = is_constant(0), c1 = is_constant(1);
  if (c0 && c1) fail_node("Add of two constants");
  if (c0 || c1) {
    // A bias after a convolution or matrix product without one.
    int v = c0 ? 1 : 0;
    Value input = value(v);
    const Constant& bias = constant(1 - v, "bias");
    int64_t channels = input.image ? input.shape[2] : input.shape[0];
    Shape dims = bias.dims;
    while (!dims.empty() && dims.front() == 1 && int64_t(dims.size()) > 1) dims.erase(dims.begin());
    // Per channel: [C, 1, 1] on a map ([C, 1] on a sequence; a [C] would broadcast along the
    // width), [C] on a vector, leading 1s allowed.
    bool per_channel = int64_t(bias.values.size()) == channels && dims.size() == size_t(input.rank() - 1) &&
                       dims[0] == channels;
    const std::string input_name = node_->input(v);
    Layer* producer = nullptr;
    if (per_channel && uses(input_name) == 1 && input.layer_index >= 0 && !input.padded() &&
        !shared_layers_.count(input.layer)) {
      Layer& layer = layers_[size_t(input.layer_index)];
      bool last = input.layer_index == int(layers_.size()) - 1 && layer.name == input.layer;
      const std::string* use_bias = layer.get("use_bias");
      const std::string* act = layer.get("activation");
      if (last && use_bias && *use_bias == "false" && act && *act == "linear" && layer.op != "separable_conv2d") producer = &layer;
    }
    if (!producer)
      fail_node("Add of a constant: cnnc adds a constant only as the per-channel bias of the Conv, Gemm or MatMul "
                "right before it");
    producer->set("use_bias", "true");
    std::vector<float> values(bias.values.begin(), bias.values.end());
    if (!input.flattened.empty()) fail_node("a bias on a flattened NCHW map is not supported");
    producer->params.emplace_back("bias", ImportedTensor{{channels}, values});
    result_.notes.push_back(fmt::format("{}: became the bias of '{}'", node_desc_, producer->name));
    define_output(input);
    return;
  }
  Value a = value(0), b = value(1);
  std::string x = materialize(a), y = materialize(b);
  if (a.image != b.image || a.shape != b.shape || a.one_d != b.one_d || a.flattened != b.flattened || a.onnx_shape != b.onnx_shape)
    fail_node(fmt::format("Add of {} and {}: cnnc adds tensors of the same shape (no broadcasting)",
                          dims_text(a.onnx_shape), dims_text(b.onnx_shape)));
  // Add(Add(a, b), c), the inner sum read by nothing else: one add of three inputs, as cnnc's
  // own three-input add exports.
  for (int i = 0; i < 2; ++i) {
    const Value& inner = i == 0 ? a : b;
    if (inner.layer_index != int(layers_.size()) - 1 || uses(node_->input(i)) != 1 || a.layer == b.layer ||
        shared_layers_.count(inner.layer))
      continue;
    Layer& sum = layers_[size_t(inner.layer_index)];
    if (sum.op != "add" || sum.name != inner.layer) continue;
    sum.inputs.push_back(i == 0 ? y : x);
    rename(sum, node_->name());
    Value out = same_value(a, sum);
    out.non_negative = a.non_negative && b.non_negative;
    define_output(out);
    return;
  }
  Layer& layer = add_layer("add", {x, y});
  Value out = same_value(a, layer);
  out.non_negative = a.non_negative && b.non_negative;
  define_output(out);
}

void Importer::concat() {
  if (node_->input_size() < 2) fail_node("Concat needs two or more inputs");
  std::vector<Value> inputs;
  std::vector<std::string> names;
  for (int i = 0; i < node_->input_size(); ++i) {
    inputs.push_back(value(i));
    names.push_back(materialize(inputs.back()));
  }
  const Value& first = inputs[0];
  int64_t rank = first.rank();
  int64_t axis = attr_int("axis", 1);
  if (axis < 0) axis += rank;
  if (axis < 1 || axis >= rank) fail_node(fmt::format("axis {} of a rank-{} tensor: cnnc does not join along the batch", attr_int("axis", 1), rank));
  if (!first.image && axis != 1) fail_node(fmt::format("Concat of [N, C, 1, 1] tensors along axis {}: cnnc joins them along C", axis));
  int64_t cnnc_axis = !first.image ? -1 : axis == 1 ? -1 : first.one_d ? 2 : axis - 1;  // NCHW -> NHWC, Keras counting
  size_t index = cnnc_axis == -1 ? first.shape.size() - 1 : size_t(cnnc_axis - 1);
  Shape shape = first.shape;
  shape[index] = 0;
  bool non_negative = true;
  for (Value& in : inputs) {
    if (in.image != first.image || in.one_d != first.one_d || !in.flattened.empty() || in.rank() != rank)
      fail_node("Concat of tensors of different kinds (or of flattened NCHW maps) is not supported");
    for (size_t d = 0; d < shape.size(); ++d)
      if (d != index && in.shape[d] != first.shape[d])
        fail_node(fmt::format("Concat of {} and {} along axis {}: the other dimensions differ",
                              dims_text(first.onnx_shape), dims_text(in.onnx_shape), axis));
    shape[index] += in.shape[index];
    non_negative = non_negative && in.non_negative;
  }
  Layer& layer = add_layer("concat", names);
  layer.set("axis", fmt::format("{}", cnnc_axis));
  Value out = first.image ? image_value(layer, shape, first.one_d) : Value{};
  if (!first.image) {
    out.layer = layer.name;
    out.layer_index = int(layers_.size()) - 1;
    out.shape = out.onnx_shape = shape;
  }
  out.non_negative = non_negative;
  define_output(out);
}

void Importer::flatten() {
  Value input = value(0);
  int64_t axis = attr_int("axis", 1);
  int64_t rank = input.rank();
  if (axis < 0) axis += rank;
  if (axis != 1) fail_node(fmt::format("Flatten with axis {}: cnnc flattens each example (axis 1)", attr_int("axis", 1)));
  if (!input.image && !input.nhwc) {
    alias_input();
    input.onnx_shape = input.shape;  // a [N, C, 1, 1] becomes [N, C]
    define_output(input);  // already a vector
    return;
  }
  std::string source = materialize(input);
  Layer& layer = add_layer("flatten", {source});
  Value out;
  out.layer = layer.name;
  out.layer_index = int(layers_.size()) - 1;
  out.shape = {shape_elements(input.shape)};
  out.onnx_shape = out.shape;
  out.non_negative = input.non_negative;
  int64_t h = input.shape[0], w = input.shape[1], c = input.shape[2];
  if (!input.nhwc && h * w > 1 && c > 1) out.flattened = {h, w, c};  // cnnc's (y, x, ch) is ONNX's (ch, y, x)
  define_output(out);
}

void Importer::reshape() {
  Value& input = value(0);
  std::vector<int64_t> shape;
  if (opset_ < 5) shape = attr_ints("shape");
  else {
    const Constant& c = constant(1, "shape");
    if (c.values.size() > 8) fail_node("shape has too many dimensions");
    for (double v : c.values) shape.push_back(int64_t(v));
  }
  int64_t features = shape_elements(input.shape);
  bool to_vector = shape.size() == 2 && (shape[1] == features || (shape[1] == -1 && shape[0] != -1)) &&
                   (shape[0] >= -1);
  if (!to_vector)
    fail_node(fmt::format("Reshape to {}: cnnc reshapes only to a vector [batch, {}]", dims_text(Shape(shape)), features));
  flatten();
}

void Importer::transpose() {
  std::vector<int64_t> perm = attr_ints("perm");
  if (is_constant(0)) {
    const Constant& c = constant(0, "data");
    size_t rank = c.dims.size();
    if (perm.empty())
      for (size_t d = 0; d < rank; ++d) perm.push_back(int64_t(rank - 1 - d));
    if (perm.size() != rank) fail_node("perm does not match the rank");
    std::vector<bool> seen(rank);
    for (int64_t p : perm) {
      if (p < 0 || p >= int64_t(rank) || seen[size_t(p)]) fail_node(fmt::format("perm {} is not a permutation", dims_text(Shape(perm))));
      seen[size_t(p)] = true;
    }
    Constant out;
    out.is_float = c.is_float;
    for (int64_t p : perm) out.dims.push_back(c.dims[size_t(p)]);
    out.values.resize(c.values.size());
    std::vector<int64_t> in_strides(rank, 1);
    for (size_t d = rank; d-- > 1;) in_strides[d - 1] = in_strides[d] * c.dims[d];
    std::vector<int64_t> index(rank, 0);
    for (size_t i = 0; i < out.values.size(); ++i) {
      int64_t source = 0;
      for (size_t d = 0; d < rank; ++d) source += index[d] * in_strides[size_t(perm[d])];
      out.values[i] = c.values[size_t(source)];
      for (size_t d = rank; d-- > 0;) {
        if (++index[d] < out.dims[d]) break;
        index[d] = 0;
      }
    }
    if (node_->output(0).empty() || values_.count(node_->output(0)) || constants_.count(node_->output(0)))
      fail_node("defines a value twice");
    constants_[node_->output(0)] = std::move(out);
    return;
  }
  Value input = value(0);
  // An NHWC graph input turned NCHW (tf2onnx's Keras exports): the model's input is NHWC as cnnc's.
  if (input.layer == kInputName && input.image && !input.one_d && !input.padded() &&
      perm == std::vector<int64_t>{0, 3, 1, 2} && uses(node_->input(0)) == 1) {
    const Shape& d = input.onnx_shape;  // [H, W, C] as the file declares it
    input.shape = {d[0], d[1], d[2]};
    input.onnx_shape = {d[2], d[0], d[1]};
    values_[node_->input(0)].shape = input.shape;
    result_.input_nhwc = true;
    result_.notes.push_back(fmt::format("{}: the graph's input is NHWC, as cnnc's", node_desc_));
    define_output(input);
    return;
  }
  if (input.image && !input.one_d && perm == std::vector<int64_t>{0, 2, 3, 1}) {
    alias_input();
    input.nhwc = true;
    define_output(input);
    return;
  }
  fail_node(fmt::format("Transpose {} of a computed tensor: cnnc reads only a Transpose to NHWC [0, 2, 3, 1] in "
                        "front of a Flatten",
                        dims_text(Shape(perm))));
}

void Importer::dropout() {
  Value input = value(0);
  require_unused_outputs(1);
  double ratio = 0.5;
  if (opset_ < 12) ratio = attr_float("ratio", 0.5);
  else if (auto r = scalar(1, "ratio")) ratio = *r;
  if (opset_ >= 12) {
    if (auto training = scalar(2, "training_mode"); training && *training != 0)
      fail_node("training_mode=true; cnnc imports inference graphs");
  }
  if (!(ratio >= 0 && ratio < 1)) fail_node(fmt::format("ratio {} is outside [0, 1)", ratio));
  if (ratio == 0) {
    alias_input();
    define_output(input);
    return;
  }
  std::string source = materialize(input);
  Layer& layer = add_layer("dropout", {source});
  layer.set("rate", fmt::format("{}", float(ratio)));
  Value out = same_value(input, layer);
  out.non_negative = input.non_negative;
  define_output(out);
}

void Importer::pad() {
  Value input = value(0);
  std::string mode = attr_string("mode", "constant");
  if (mode != "constant") fail_node(fmt::format("mode '{}': cnnc pads with zeros only (mode constant)", mode));
  std::vector<int64_t> pads;
  double fill = 0;
  if (opset_ < 11) {
    pads = attr_ints(opset_ < 2 ? "paddings" : "pads");
    fill = attr_float("value", 0);
  } else {
    const Constant& c = constant(1, "pads");
    if (c.values.size() > 16) fail_node("pads has too many values");
    for (double v : c.values) pads.push_back(int64_t(v));
    if (auto value = scalar(2, "constant_value")) fill = *value;
    if (has_input(3)) fail_node("the axes input is not supported");
  }
  if (fill != 0) fail_node(fmt::format("constant value {}: cnnc pads with zeros only", fill));
  if (!input.image) fail_node("Pad of a vector is not supported");
  size_t rank = input.one_d ? 3 : 4;
  if (pads.size() != 2 * rank) fail_node(fmt::format("{} pads for a rank-{} tensor", pads.size(), rank));
  for (size_t d = 0; d < 2; ++d)
    if (pads[d] != 0 || pads[d + rank] != 0) fail_node("padding the batch or the channels is not supported");
  for (int64_t p : pads)
    if (p < 0 || p > 65536) fail_node(fmt::format("pads {} out of range (cnnc does not crop)", dims_text(Shape(pads))));
  Padding4 add = input.one_d ? Padding4{0, 0, pads[2], pads[5]} : Padding4{pads[2], pads[6], pads[3], pads[7]};
  // Kept pending: the window after it may take it as its own padding.
  for (int k = 0; k < 4; ++k) input.pad[size_t(k)] += add[size_t(k)];
  input.pad_name = node_->name();
  alias_input();
  define_output(input);
}

void Importer::resize() {
  Value input = value(0);
  if (!input.image || input.one_d) fail_node("cnnc resizes [N, C, H, W] maps only");
  std::string mode = attr_string("mode", "nearest");
  if (mode != "nearest") fail_node(fmt::format("mode '{}': cnnc resizes by nearest neighbour only", mode));
  std::vector<double> scales;
  bool is_upsample = node_->op_type() == "Upsample";
  if (is_upsample && opset_ < 9) {
    const auto* a = attr("scales");
    if (!a) fail_node("no scales");
    for (float v : a->floats()) scales.push_back(v);
  } else {
    int scales_input = is_upsample || opset_ < 11 ? 1 : 2;
    if (has_input(scales_input) && !constant(scales_input, "scales").values.empty()) {
      scales = constant(scales_input, "scales").values;
    } else if (!is_upsample && has_input(3)) {
      const Constant& sizes = constant(3, "sizes");
      if (sizes.values.size() != 4) fail_node("sizes must have 4 values");
      Shape in{1, input.shape[2], input.shape[0], input.shape[1]};
      for (size_t d = 0; d < 4; ++d) scales.push_back(d == 0 ? 1.0 : sizes.values[d] / double(in[d]));
    } else {
      fail_node("neither scales nor sizes");
    }
  }
  if (scales.size() != 4) fail_node(fmt::format("{} scales for a rank-4 tensor", scales.size()));
  if (scales[0] != 1 || scales[1] != 1) fail_node("resizing the batch or the channels is not supported");
  auto integer = [](double s) { return s >= 1 && s <= 64 && s == std::floor(s); };
  if (!integer(scales[2]) || !integer(scales[3]))
    fail_node(fmt::format("scales {}x{}: cnnc enlarges by integer factors from 1 to 64 only", scales[2], scales[3]));
  if (!is_upsample && opset_ >= 11) {
    std::string transform = attr_string("coordinate_transformation_mode", "half_pixel");
    std::string nearest = attr_string("nearest_mode", "round_prefer_floor");
    // With integer factors, output i reads input floor(i / s) in these modes.
    bool exact = (transform == "asymmetric" && nearest == "floor") ||
                 ((transform == "half_pixel" || transform == "pytorch_half_pixel") &&
                  (nearest == "round_prefer_floor" || nearest == "round_prefer_ceil"));
    if (!exact)
      fail_node(fmt::format("coordinate_transformation_mode '{}' with nearest_mode '{}' is not supported (cnnc repeats "
                            "each pixel: asymmetric + floor, or half_pixel + round)",
                            transform, nearest));
  }
  int64_t sh = int64_t(scales[2]), sw = int64_t(scales[3]);
  std::string source = materialize(input);
  Layer& layer = add_layer("upsampling2d", {source});
  layer.set("size", pair_text(sh, sw));
  Value out = image_value(layer, {input.shape[0] * sh, input.shape[1] * sw, input.shape[2]}, false);
  out.non_negative = input.non_negative;
  define_output(out);
}

// Sigmoid(x) read only by Mul(x, Sigmoid(x)): swish.
bool Importer::try_swish() {
  if (node_->input_size() < 1) return false;
  int next = sole_consumer(node_->output(0));
  if (next < 0) return false;
  const onnx::NodeProto& mul = graph_->node(next);
  if (mul.op_type() != "Mul" || mul.input_size() != 2 || mul.output_size() != 1 || !default_domain(mul)) return false;
  const std::string& x = node_->input(0);
  bool matches = (mul.input(0) == x && mul.input(1) == node_->output(0)) ||
                 (mul.input(1) == x && mul.input(0) == node_->output(0));
  if (!matches) return false;
  Value input = value(0);
  // The swish reads x, which other nodes may read too: never folded into the layer before.
  std::string source = materialize(input);
  Layer& layer = add_layer("swish", {source}, mul.name());
  skipped_.insert(next);
  result_.notes.push_back(fmt::format("{}: Sigmoid and the Mul after it became swish '{}'", node_desc_, layer.name));
  define(mul.output(0), same_value(input, layer));
  return true;
}

// x * 0.5 * (1 + Erf(x / sqrt(2))) as Div, Erf, Add, Mul, Mul (either Mul order): gelu.
bool Importer::try_gelu() {
  auto constant_near = [&](const onnx::NodeProto& node, const std::string& operand, double expected) {
    auto it = constants_.find(operand);
    (void)node;
    return it != constants_.end() && it->second.values.size() == 1 &&
           std::fabs(it->second.values[0] - expected) <= 1e-6 * std::fabs(expected);
  };
  if (node_->input_size() != 2 || !constant_near(*node_, node_->input(1), std::sqrt(2.0))) return false;
  const std::string& x = node_->input(0);
  int erf = sole_consumer(node_->output(0));
  auto is = [&](int n, const char* op, int inputs) {
    return n >= 0 && graph_->node(n).op_type() == op && graph_->node(n).input_size() == inputs &&
           graph_->node(n).output_size() >= 1 && default_domain(graph_->node(n));
  };
  if (!is(erf, "Erf", 1)) return false;
  int add = sole_consumer(graph_->node(erf).output(0));
  if (!is(add, "Add", 2)) return false;
  const auto& add_node = graph_->node(add);
  const std::string& erf_out = graph_->node(erf).output(0);
  std::string one = add_node.input(0) == erf_out ? add_node.input(1) : add_node.input(0);
  if (!constant_near(add_node, one, 1.0)) return false;
  int mul1 = sole_consumer(add_node.output(0));
  if (!is(mul1, "Mul", 2)) return false;
  const auto& m1 = graph_->node(mul1);
  std::string other1 = m1.input(0) == add_node.output(0) ? m1.input(1) : m1.input(0);
  int mul2 = sole_consumer(m1.output(0));
  if (!is(mul2, "Mul", 2)) return false;
  const auto& m2 = graph_->node(mul2);
  std::string other2 = m2.input(0) == m1.output(0) ? m2.input(1) : m2.input(0);
  bool shape_ok = (other1 == x && constant_near(m2, other2, 0.5)) || (constant_near(m1, other1, 0.5) && other2 == x);
  if (!shape_ok) return false;
  Value input = value(0);
  std::string source = materialize(input);
  Layer& layer = add_layer("gelu", {source}, m2.name());
  for (int n : {erf, add, mul1, mul2}) skipped_.insert(n);
  result_.notes.push_back(fmt::format("{}: x * 0.5 * (1 + Erf(x / sqrt(2))) became gelu '{}'", node_desc_, layer.name));
  define(m2.output(0), same_value(input, layer));
  return true;
}

void Importer::mul() {
  fail_node("Mul is supported only as x * Sigmoid(x) (swish) or within x * 0.5 * (1 + Erf(x / sqrt(2))) (gelu)");
}

// ---------------------------------------------------------------------------------------------

OnnxImport Importer::run(const std::string& bytes) {
  onnx::ModelProto model;
  if (bytes.empty()) fail("the file is empty; not an ONNX model");
  if (!model.ParseFromString(bytes)) fail("not an ONNX model (it does not parse as an ONNX ModelProto protobuf)");
  if (!model.has_graph()) fail("the ONNX model has no graph");
  read_opset(model);
  result_.opset = opset_;
  const onnx::GraphProto& graph = model.graph();
  graph_ = &graph;
  if (graph.sparse_initializer_size() > 0) fail("sparse initializers are not supported");

  for (const auto& tensor : graph.initializer()) {
    if (tensor.name().empty()) fail("an initializer has no name");
    if (pending_constants_.count(tensor.name())) fail(fmt::format("initializer '{}' is defined twice", tensor.name()));
    pending_constants_[tensor.name()] = &tensor;
  }
  std::vector<const onnx::ValueInfoProto*> inputs;
  for (const auto& input : graph.input())
    if (!pending_constants_.count(input.name())) inputs.push_back(&input);
  if (inputs.size() != 1)
    fail(fmt::format("the graph has {} inputs besides its initializers; a cnnc network has exactly one",
                     inputs.size()));
  if (graph.output_size() != 1)
    fail(fmt::format("the graph has {} outputs; a cnnc network has exactly one", graph.output_size()));
  read_input(*inputs[0]);
  const std::string& output = graph.output(0).name();
  result_.output_name = output;

  // Which nodes the output needs (others are left out), and who reads what.
  std::map<std::string, int> producer;
  for (int n = 0; n < graph.node_size(); ++n)
    for (const auto& out : graph.node(n).output()) {
      if (out.empty()) continue;
      if (producer.count(out) || pending_constants_.count(out) || out == result_.input_name)
        fail(fmt::format("'{}' is defined twice (by node {}, and before it); every ONNX value has one producer", out, n));
      producer[out] = n;
    }
  std::vector<bool> needed(size_t(graph.node_size()), false);
  std::vector<std::string> stack{output};
  std::set<std::string> visited;
  while (!stack.empty()) {
    std::string name = stack.back();
    stack.pop_back();
    if (!visited.insert(name).second) continue;
    auto it = producer.find(name);
    if (it == producer.end() || needed[size_t(it->second)]) continue;
    needed[size_t(it->second)] = true;
    for (const auto& in : graph.node(it->second).input()) stack.push_back(in);
  }
  for (int n = 0; n < graph.node_size(); ++n) {
    if (!needed[size_t(n)]) continue;
    for (const auto& in : graph.node(n).input())
      if (!in.empty()) {
        ++uses_[in];
        consumers_[in].push_back(n);
      }
  }
  ++uses_[output];

  for (int n = 0; n < graph.node_size(); ++n)
    if (needed[size_t(n)] && usable_name(graph.node(n).name())) reserved_.insert(graph.node(n).name());
  for (const auto& [name, tensor] : pending_constants_)
    if (uses(name) > 0) constants_[name] = decode(*tensor, fmt::format("initializer '{}'", name));

  int left_out = 0;
  for (int n = 0; n < graph.node_size(); ++n) {
    const onnx::NodeProto& node = graph.node(n);
    if (!needed[size_t(n)]) {
      ++left_out;
      continue;
    }
    if (skipped_.count(n)) continue;
    node_ = &node;
    node_index_ = n;
    node_desc_ = fmt::format("node {} '{}' ({})", n, node.name(), node.op_type());
    if (!node.domain().empty() && node.domain() != "ai.onnx")
      fail_node(fmt::format("domain '{}': cnnc imports the default ONNX domain only", node.domain()));
    if (node.output_size() < 1 || node.output(0).empty()) fail_node("has no output");
    const std::string& op = node.op_type();
    if (op == "Constant") {
      const onnx::AttributeProto* a = attr("value");
      Constant c;
      if (a && a->has_t()) c = decode(a->t(), node_desc_);
      else if (const auto* f = attr("value_float")) c = Constant{{}, {double(f->f())}, true};
      else if (const auto* i = attr("value_int")) c = Constant{{}, {double(i->i())}, false};
      else if (const auto* fs = attr("value_floats")) c = Constant{{fs->floats_size()}, {fs->floats().begin(), fs->floats().end()}, true};
      else if (const auto* is = attr("value_ints")) {
        c.dims = {is->ints_size()};
        for (int64_t v : is->ints()) c.values.push_back(double(v));
      } else fail_node("a Constant without a numeric value");
      if (values_.count(node.output(0)) || constants_.count(node.output(0))) fail_node("defines a value twice");
      constants_[node.output(0)] = std::move(c);
    } else if (op == "Conv") conv();
    else if (op == "MaxPool") pool(true);
    else if (op == "AveragePool") pool(false);
    else if (op == "GlobalAveragePool") global_pool(false);
    else if (op == "GlobalMaxPool") global_pool(true);
    else if (op == "Gemm") gemm();
    else if (op == "MatMul") matmul();
    else if (op == "Relu") activation("relu", {}, true);
    else if (op == "Sigmoid") { if (!try_swish()) activation("sigmoid", {}, true); }
    else if (op == "Tanh") activation("tanh", {}, false);
    else if (op == "LeakyRelu") activation("leaky_relu", {{"alpha", fmt::format("{}", attr("alpha") ? attr("alpha")->f() : 0.01f)}}, false);
    else if (op == "Elu") activation("elu", {{"alpha", fmt::format("{}", attr("alpha") ? attr("alpha")->f() : 1.0f)}}, false);
    else if (op == "HardSigmoid") {
      double alpha = attr_float("alpha", 0.2), beta = attr_float("beta", 0.5);
      if (std::fabs(alpha - 1.0 / 6) > 1e-6 || beta != 0.5)
        fail_node(fmt::format("alpha {} and beta {}: cnnc's hard_sigmoid is relu6(x + 3) / 6 (alpha 1/6, beta 0.5; "
                              "ONNX's default alpha is 0.2)",
                              alpha, beta));
      activation("hard_sigmoid", {}, true);
    } else if (op == "HardSwish") activation("hard_swish", {}, false);
    else if (op == "Clip") clip();
    else if (op == "Softmax") softmax();
    else if (op == "BatchNormalization") batchnorm();
    else if (op == "Add") add();
    else if (op == "Concat") concat();
    else if (op == "Flatten") flatten();
    else if (op == "Reshape") reshape();
    else if (op == "Transpose") transpose();
    else if (op == "Dropout") dropout();
    else if (op == "Identity") {
      alias_input();
      define_output(value(0));
    }
    else if (op == "Pad") pad();
    else if (op == "Resize" || op == "Upsample") resize();
    else if (op == "Div" && try_gelu()) {}
    else if (op == "Mul") mul();
    else
      fail_node(fmt::format("op type {} is not supported; cnnc imports {}", op, kSupportedOps));
  }
  node_desc_ = "the graph's output";

  auto it = values_.find(output);
  if (it == values_.end()) {
    if (constants_.count(output)) fail(fmt::format("the graph's output '{}' is a constant", output));
    fail(fmt::format("the graph's output '{}' is not computed by any node", output));
  }
  Value out = it->second;
  materialize(out);
  if (out.nhwc) {
    // A Transpose to NHWC as the output: cnnc's layout already.
    result_.output_nhwc = true;
    out.onnx_shape = out.shape;
  }
  if (layers_.empty() || out.layer == kInputName) fail("the graph computes nothing from its input");
  if (layers_.back().name != out.layer) fail("internal: the output is not the last layer");
  result_.onnx_output_shape = out.onnx_shape;
  // The shape the file declares for its output, where it declares one, must be the one computed.
  const auto& declared = graph.output(0).type();
  if (declared.has_tensor_type() && declared.tensor_type().has_shape() && declared.tensor_type().shape().dim_size() > 0) {
    const auto& dims = declared.tensor_type().shape().dim();
    bool same = size_t(dims.size()) == out.onnx_shape.size() + 1;
    for (int d = 1; same && d < dims.size(); ++d)
      same = !dims[d].has_dim_value() || dims[d].dim_value() == out.onnx_shape[size_t(d - 1)];
    if (!same) {
      std::vector<std::string> text;
      for (const auto& dim : dims) text.push_back(dim.has_dim_value() ? std::to_string(dim.dim_value()) : "?");
      fail(fmt::format("the graph declares its output '{}' as [{}], but the network imported computes [N, {}]; "
                       "refused rather than guessed",
                       output, fmt::join(text, ", "), fmt::join(out.onnx_shape, ", ")));
    }
  }
  result_.output_flattened = out.flattened;
  if (left_out) result_.notes.push_back(fmt::format("{} nodes do not lead to the output and were left out", left_out));

  // Weights.
  for (const Layer& layer : layers_)
    for (const auto& [name, tensor] : layer.params) result_.weights[layer.name + "." + name] = tensor;
  result_.yaml = yaml();
  try {
    result_.spec = parse_model_text(result_.yaml, path_);
  } catch (const UserError& error) {
    fail(fmt::format("the network is valid ONNX but not within cnnc's limits: {}", error.message()));
  }
  return std::move(result_);
}

std::string Importer::yaml() const {
  std::string stem = fs::path(path_).stem().string();
  std::string name;
  for (char c : stem) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  if (name.empty() || !is_valid_identifier(name) || is_reserved_model_name(name) || name.size() > 64) name = "model";
  const Value& input = values_.at(result_.input_name);
  std::string text = fmt::format("# Imported from {} by cnnc import (ONNX opset {}).\n", fs::path(path_).filename().string(), opset_);
  text += fmt::format("# Input '{}' {} in ONNX ({}); cnnc's layout is NHWC.\n", result_.input_name,
                      dims_text(result_.onnx_input_shape), result_.input_nhwc ? "NHWC" : "NCHW");
  text += fmt::format("name: {}\ninput: {{shape: {}}}\nlayers:\n", name, dims_text(input.shape));
  std::string previous = kInputName;
  for (const Layer& layer : layers_) {
    std::vector<std::string> parts{fmt::format("name: {}", layer.name)};
    if (!(layer.inputs.size() == 1 && layer.inputs[0] == previous))
      parts.push_back(fmt::format("inputs: [{}]", fmt::join(layer.inputs, ", ")));
    for (const auto& [k, v] : layer.attrs) parts.push_back(fmt::format("{}: {}", k, v));
    text += fmt::format("  - {}: {{{}}}\n", layer.op, fmt::join(parts, ", "));
    previous = layer.name;
  }
  return text;
}

}  // namespace

bool is_onnx_path(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".onnx";
}

namespace {

// Examples of c channels by hw positions: channels first (NCHW) to last (NHWC), or back.
void move_channels(const float* in, float* out, int64_t batch, int64_t c, int64_t hw, bool to_last) {
  int64_t n = c * hw;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t p = 0; p < hw; ++p) {
        int64_t first = b * n + ch * hw + p, last = b * n + p * c + ch;
        out[to_last ? last : first] = in[to_last ? first : last];
      }
}

}  // namespace

std::vector<float> OnnxImport::onnx_input_to_cnnc(const float* onnx, int64_t batch) const {
  int64_t n = shape_elements(onnx_input_shape);
  std::vector<float> out(size_t(n * batch));
  if (onnx_input_shape.size() == 1 || input_nhwc) {
    std::copy(onnx, onnx + n * batch, out.begin());
    return out;
  }
  move_channels(onnx, out.data(), batch, onnx_input_shape[0], n / onnx_input_shape[0], /*to_last=*/true);
  return out;
}

std::vector<float> OnnxImport::cnnc_output_to_onnx(const float* cnnc, int64_t batch) const {
  int64_t n = shape_elements(onnx_output_shape);
  std::vector<float> out(size_t(n * batch));
  if (!output_flattened.empty()) {
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < n; ++j) out[size_t(b * n + onnx_index(output_flattened, j))] = cnnc[b * n + j];
    return out;
  }
  if (onnx_output_shape.size() == 1 || n == onnx_output_shape[0] || output_nhwc) {
    std::copy(cnnc, cnnc + n * batch, out.begin());
    return out;
  }
  move_channels(cnnc, out.data(), batch, onnx_output_shape[0], n / onnx_output_shape[0], /*to_last=*/false);
  return out;
}

OnnxImport import_onnx_bytes(const std::string& bytes, const std::string& path) {
  return Importer(path).run(bytes);
}

OnnxImport import_onnx_file(const std::string& path) {
  std::error_code error;
  if (fs::is_directory(path, error)) throw UserError(SourceLoc{path, 0, 0}, "is a directory, not an ONNX file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(SourceLoc{path, 0, 0}, "cannot open the file");
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  if (size < 0) throw UserError(SourceLoc{path, 0, 0}, "cannot read the file");
  if (size > kMaxOnnxFileBytes)
    throw UserError(SourceLoc{path, 0, 0}, fmt::format("the file is {} bytes; cnnc reads ONNX files up to 2 GiB "
                                                       "(larger weights belong in external data)",
                                                       size));
  std::string bytes(size_t(size), '\0');
  in.seekg(0);
  in.read(bytes.data(), size);
  if (!in) throw UserError(SourceLoc{path, 0, 0}, "cannot read the file");
  return import_onnx_bytes(bytes, path);
}

}  // namespace cnnc
