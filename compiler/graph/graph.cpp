#include "graph/graph.h"

#include <fmt/format.h>

namespace cnnc {

namespace {

// a + b for non-negative counts, stopping at INT64_MAX instead of overflowing.
int64_t saturating_add(int64_t a, int64_t b) {
  int64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? INT64_MAX : sum;
}

}  // namespace

std::string Node::describe() const {
  if (layer_index == 0) return "the input";
  return fmt::format("layer {} '{}' ({})", layer_index, name, op_name());
}

const std::string& Node::op_name() const {
  static const std::string input = "input";
  return def ? def->name : input;
}

int64_t Node::param_count() const {
  int64_t count = 0;
  for (const ParamSpec& param : params) count = saturating_add(count, shape_elements(param.shape));
  return count;
}

int64_t Graph::total_params() const {
  int64_t count = 0;
  for (const Node& node : nodes) count = saturating_add(count, node.param_count());
  return count;
}

int64_t Graph::trainable_params() const {
  int64_t count = 0;
  for (const Node& node : nodes)
    for (const ParamSpec& param : node.params)
      if (param.trainable) count = saturating_add(count, shape_elements(param.shape));
  return count;
}

int64_t Graph::total_flops() const {
  int64_t flops = 0;
  for (const Node& node : nodes) flops = saturating_add(flops, node.flops);
  return flops;
}

int64_t Graph::activation_bytes() const {
  int64_t bytes = 0;
  for (const Node& node : nodes) bytes = saturating_add(bytes, saturating_mul(shape_elements(node.shape), 4));
  return bytes;
}

}  // namespace cnnc
