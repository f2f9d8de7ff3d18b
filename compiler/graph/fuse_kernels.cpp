// fuse_kernels: conv2d + bias + activation + pooling, dense + bias + activation, and
// add/batchnorm + activation each become one node, i.e. one kernel. An activation whose
// derivative needs its input (OpTraits::derivative_needs_input) stays a node of its own: written
// as `activation:`, it is split off into a node after its layer.
#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "graph/passes.h"

namespace cnnc {

namespace {

// Decided by the ops' traits (ops/op.h), never by their names.
bool has_activation(const Node& node) {
  for (const Node::FusedOp& op : node.fused)
    if (op.def->traits.activation || op.def->traits.softmax) return true;
  return false;
}

bool has_pooling(const Node& node) {
  for (const Node::FusedOp& op : node.fused)
    if (op.def->traits.pooling != Pooling::None) return true;
  return false;
}

// May `consumer` be folded into `producer`?
bool can_absorb(const Node& producer, const Node& consumer) {
  if (!producer.def || !consumer.def) return false;  // (the input)
  const OpTraits& p = producer.def->traits;
  const OpTraits& c = consumer.def->traits;
  if (c.activation)
    return !c.derivative_needs_input && p.takes_activation && !has_activation(producer) && !has_pooling(producer);
  // Pooling after a softmax stays separate: backward would need both the logits and the activation.
  bool softmax = false;
  for (const Node::FusedOp& op : producer.fused) softmax = softmax || op.def->traits.softmax;
  if (c.pooling != Pooling::None) return p.absorbs_pooling && !has_pooling(producer) && !softmax;
  return false;
}

// `activation: swish` (an activation whose derivative needs its input) on a layer becomes a
// swish node after it, named "<layer>_swish" (with a number where that is taken), which the
// layer's consumers read instead.
void split_activations(Graph& graph) {
  std::vector<Node> out;
  std::vector<int> new_id(graph.nodes.size());
  std::set<std::string> names;
  for (const Node& node : graph.nodes) names.insert(node.name);
  for (Node& node : graph.nodes) {
    const OpDef* act = nullptr;
    if (node.attrs.has("activation")) act = find_op(node.attrs.get_string("activation"));
    for (int& input : node.inputs) input = new_id[size_t(input)];
    int old_id = node.id;
    node.id = int(out.size());
    out.push_back(node);
    new_id[size_t(old_id)] = node.id;
    if (!act || !act->traits.derivative_needs_input) continue;
    Node split;
    split.name = node.name + "_" + act->name;
    for (int k = 1; names.count(split.name); ++k) split.name = fmt::format("{}_{}_{}", node.name, act->name, k);
    names.insert(split.name);
    split.id = int(out.size());
    split.def = act;
    split.inputs = {out.back().id};
    split.shape = node.shape;
    split.flops = act->flops({node.shape}, node.shape, split.attrs);
    split.layer_index = node.layer_index;
    split.loc = node.loc;
    out.back().attrs.set("activation", std::string("linear"), *node.attrs.loc("activation"));
    new_id[size_t(old_id)] = split.id;  // consumers (and the output) read the activation
    out.push_back(split);
  }
  graph.output = new_id[size_t(graph.output)];
  graph.nodes = std::move(out);
}

}  // namespace

void fuse_kernels(Graph& graph) {
  split_activations(graph);
  std::vector<Node>& nodes = graph.nodes;
  for (Node& node : nodes) {
    node.unfused_shape = node.shape;
    node.is_view = node.def && (node.def->traits.view || node.def->traits.view_at_inference);
    if (!node.attrs.has("activation")) continue;
    const std::string& activation = node.attrs.get_string("activation");
    if (activation == "linear" || activation == "none") continue;
    const OpDef* def = find_op(activation);  // (the attribute's choices are activation ops)
    CNNC_ASSERT(def && (def->traits.activation || def->traits.softmax), "not an activation op: " + activation);
    node.fused.push_back({def, node.name, {}});
  }

  std::vector<bool> removed(nodes.size(), false);
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (removed[i]) continue;
    Node& producer = nodes[i];
    while (true) {
      if (int(i) == graph.output) break;
      std::vector<size_t> consumers;
      for (size_t j = i + 1; j < nodes.size(); ++j)
        if (!removed[j] && std::count(nodes[j].inputs.begin(), nodes[j].inputs.end(), int(i)) > 0) consumers.push_back(j);
      if (consumers.size() != 1) break;
      Node& consumer = nodes[consumers[0]];
      if (consumer.inputs.size() != 1 || !can_absorb(producer, consumer)) break;
      producer.fused.push_back({consumer.def, consumer.name, consumer.attrs});
      producer.shape = consumer.shape;
      removed[consumers[0]] = true;
      // The consumer's consumers now read the producer.
      for (size_t j = consumers[0] + 1; j < nodes.size(); ++j)
        for (int& input : nodes[j].inputs)
          if (input == int(consumers[0])) input = int(i);
      if (graph.output == int(consumers[0])) graph.output = int(i);
    }
  }

  std::vector<int> new_id(nodes.size(), -1);
  std::vector<Node> kept;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (removed[i]) continue;
    new_id[i] = int(kept.size());
    kept.push_back(std::move(nodes[i]));
  }
  for (Node& node : kept) {
    node.id = new_id[node.id];
    for (int& input : node.inputs) input = new_id[input];
  }
  graph.output = new_id[graph.output];
  nodes = std::move(kept);
}

}  // namespace cnnc
