// The op registry, attribute storage and helpers shared by the op families.
#include <climits>
#include <deque>
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>

#include "ops/op.h"

namespace cnnc {

std::string shape_str(const Shape& shape) {
  std::string out = "(None";
  for (int64_t dim : shape) out += fmt::format(", {}", dim);
  return out + ")";
}

int64_t saturating_mul(int64_t a, int64_t b) {
  int64_t product;
  if (__builtin_mul_overflow(a, b, &product)) return INT64_MAX;
  return product;
}

int64_t shape_elements(const Shape& shape) {
  int64_t elements = 1;
  for (int64_t dim : shape) elements = saturating_mul(elements, dim);
  return elements;
}

void Attrs::set(const std::string& key, AttrValue value, SourceLoc loc) {
  values_[key] = std::move(value);
  locs_[key] = std::move(loc);
}

const AttrValue& Attrs::get(const std::string& key) const {
  auto it = values_.find(key);
  CNNC_ASSERT(it != values_.end(), "attribute '" + key + "' was not filled in by the front end");
  return it->second;
}

int64_t Attrs::get_int(const std::string& key) const {
  const AttrValue& value = get(key);
  CNNC_ASSERT(std::holds_alternative<int64_t>(value), "attribute '" + key + "' is not an int");
  return std::get<int64_t>(value);
}

std::pair<int64_t, int64_t> Attrs::get_pair(const std::string& key) const {
  const AttrValue& value = get(key);
  CNNC_ASSERT((std::holds_alternative<std::pair<int64_t, int64_t>>(value)), "attribute '" + key + "' is not a pair");
  return std::get<std::pair<int64_t, int64_t>>(value);
}

double Attrs::get_float(const std::string& key) const {
  const AttrValue& value = get(key);
  CNNC_ASSERT(std::holds_alternative<double>(value), "attribute '" + key + "' is not a float");
  return std::get<double>(value);
}

bool Attrs::get_bool(const std::string& key) const {
  const AttrValue& value = get(key);
  CNNC_ASSERT(std::holds_alternative<bool>(value), "attribute '" + key + "' is not a bool");
  return std::get<bool>(value);
}

const std::string& Attrs::get_string(const std::string& key) const {
  const AttrValue& value = get(key);
  CNNC_ASSERT(std::holds_alternative<std::string>(value), "attribute '" + key + "' is not a string");
  return std::get<std::string>(value);
}

const Padding4& Attrs::get_padding(const std::string& key) const {
  const AttrValue& value = get(key);
  CNNC_ASSERT(std::holds_alternative<Padding4>(value), "attribute '" + key + "' is not a padding");
  return std::get<Padding4>(value);
}

const SourceLoc* Attrs::loc(const std::string& key) const {
  auto it = locs_.find(key);
  return it == locs_.end() ? nullptr : &it->second;
}

const AttrSpec* OpDef::find_attr(const std::string& key) const {
  for (const AttrSpec& spec : attrs)
    if (spec.name == key) return &spec;
  return nullptr;
}

const char* initializer_name(Initializer initializer) {
  switch (initializer) {
    case Initializer::Zeros: return "zeros";
    case Initializer::Ones: return "ones";
    case Initializer::GlorotUniform: return "glorot_uniform";
  }
  return "zeros";
}

namespace {

// The ops, built-in ones first. A deque: registering never moves an OpDef.
struct Registry {
  std::deque<OpDef> ops;
  std::vector<std::string> activations;
  std::mutex mutex;
};

Registry& registry() {
  static Registry* instance = [] {
    auto* r = new Registry;
    std::vector<OpDef> list;
    register_conv_ops(list);
    register_pooling_ops(list);
    register_dense_ops(list);
    register_shape_ops(list);
    register_activation_ops(list);
    register_normalization_ops(list);
    register_merge_ops(list);
    r->activations = {"linear", "none"};
    for (const OpDef& op : list)
      if (op.traits.activation || op.traits.softmax) r->activations.push_back(op.name);
    for (OpDef& op : list) {
      for (AttrSpec& attr : op.attrs)
        if (attr.activation_choices) attr.choices = r->activations;
      r->ops.push_back(std::move(op));
    }
    return r;
  }();
  return *instance;
}

}  // namespace

std::vector<const OpDef*> all_ops() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<const OpDef*> ops;
  for (const OpDef& op : r.ops) ops.push_back(&op);
  return ops;
}

const OpDef* find_op(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (const OpDef& op : r.ops)
    if (op.name == name) return &op;
  return nullptr;
}

std::vector<std::string> op_names() {
  std::vector<std::string> names;
  for (const OpDef* op : all_ops()) names.push_back(op->name);
  return names;
}

const OpDef& register_op(OpDef op) {
  if (find_op(op.name)) throw std::logic_error("op '" + op.name + "' is already registered");
  if (!op.infer_shape || !op.params || !op.flops)
    throw std::logic_error("op '" + op.name + "' lacks infer_shape, params or flops");
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (AttrSpec& attr : op.attrs)
    if (attr.activation_choices) attr.choices = r.activations;
  r.ops.push_back(std::move(op));
  return r.ops.back();
}

const std::vector<std::string>& activation_names() { return registry().activations; }

AttrSpec activation_attr() {
  AttrSpec spec{"activation", AttrKind::Enum};
  spec.default_value = std::string("linear");
  spec.activation_choices = true;  // (filled in by registry(): the activations may come later)
  spec.help = "activation applied to the output";
  return spec;
}

AttrSpec padding_attr() {
  AttrSpec spec{"padding", AttrKind::Enum};
  spec.default_value = std::string("valid");
  spec.choices = {"valid", "same"};
  spec.help = "valid: no padding, output floor((in - window) / stride) + 1; same: zero padding, output ceil(in / stride)";
  return spec;
}

std::pair<int64_t, int64_t> same_padding(int64_t input, int64_t span, int64_t stride) {
  int64_t out = (input + stride - 1) / stride;
  int64_t total = std::max<int64_t>((out - 1) * stride + span - input, 0);
  return {total / 2, total - total / 2};
}

int64_t window_output_size(int64_t input, int64_t window, int64_t stride, const std::string& padding) {
  if (padding == "same") return (input + stride - 1) / stride;
  if (input < window) return 0;
  return (input - window) / stride + 1;
}

}  // namespace cnnc
