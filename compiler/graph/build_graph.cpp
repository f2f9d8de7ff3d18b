// build_graph: ModelSpec to Graph, with names resolved and nodes in topological order.
#include <algorithm>
#include <map>
#include <queue>

#include <fmt/format.h>

#include "graph/passes.h"

namespace cnnc {

namespace {

// Finds one cycle among `pending` layers (those Kahn's algorithm could not order) for the message.
std::vector<int> find_cycle(const std::vector<std::vector<int>>& inputs, const std::vector<bool>& pending) {
  int n = int(inputs.size());
  std::vector<int> state(n, 0), parent(n, -1);  // 0 unvisited, 1 on stack, 2 done
  for (int start = 0; start < n; ++start) {
    if (!pending[start] || state[start] != 0) continue;
    std::vector<std::pair<int, size_t>> stack = {{start, 0}};
    state[start] = 1;
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      if (next < inputs[node].size()) {
        int to = inputs[node][next++];
        if (!pending[to]) continue;
        if (state[to] == 1) {
          // Walking back up the DFS path from `node` to `to` goes from producer to consumer, so
          // the cycle comes out in the direction data flows: each layer feeds the next.
          std::vector<int> cycle = {to};
          for (int at = node; at != to; at = parent[at]) cycle.push_back(at);
          cycle.push_back(to);
          return cycle;
        }
        if (state[to] == 0) {
          state[to] = 1;
          parent[to] = node;
          stack.push_back({to, 0});
        }
      } else {
        state[node] = 2;
        stack.pop_back();
      }
    }
  }
  return {};
}

}  // namespace

Graph build_graph(const ModelSpec& model) {
  // Position 0 is the input; layer i (1-based) is position i.
  int count = int(model.layers.size()) + 1;
  std::map<std::string, int> position = {{kInputName, 0}};
  for (const LayerSpec& layer : model.layers) {
    auto [it, inserted] = position.emplace(layer.name, layer.index);
    if (inserted) continue;
    std::string first = it->second == 0 ? "the model's input" : model.layers[it->second - 1].describe();
    throw UserError(layer.loc, fmt::format("{}: the name '{}' is already used by {}; layer names must be unique",
                                           layer.describe(), layer.name, first));
  }

  std::vector<std::vector<int>> inputs(count);
  for (const LayerSpec& layer : model.layers) {
    const OpDef* def = find_op(layer.op);
    CNNC_ASSERT(def, "the front end accepted an unknown op");
    std::vector<int>& in = inputs[layer.index];
    if (layer.inputs.empty()) in.push_back(layer.index - 1);
    for (size_t i = 0; i < layer.inputs.size(); ++i) {
      auto it = position.find(layer.inputs[i]);
      if (it == position.end()) {
        std::vector<std::string> names;
        for (auto& [name, unused] : position) names.push_back(name);
        throw UserError(layer.input_locs[i], fmt::format("{}: input '{}' is not a layer of this model{}",
                                                         layer.describe(), layer.inputs[i],
                                                         did_you_mean(layer.inputs[i], names)));
      }
      if (it->second == layer.index)
        throw UserError(layer.input_locs[i], fmt::format("{}: a layer cannot be its own input", layer.describe()));
      in.push_back(it->second);
    }
    int given = int(in.size());
    if (given < def->min_inputs || (def->max_inputs >= 0 && given > def->max_inputs)) {
      std::string expected = def->max_inputs < 0 ? fmt::format("at least {} inputs", def->min_inputs)
                                                 : fmt::format("{} input{}", def->max_inputs, def->max_inputs == 1 ? "" : "s");
      throw UserError(layer.loc, fmt::format("{}: expected {}, found {}{}", layer.describe(), expected, given,
                                             def->min_inputs > 1 && layer.inputs.empty()
                                                 ? "; list them with inputs: [name, name]"
                                                 : ""));
    }
  }

  // Kahn's algorithm; the smallest ready position first keeps the written order where possible.
  std::vector<int> remaining(count, 0);
  std::vector<std::vector<int>> consumers(count);
  for (int i = 0; i < count; ++i) {
    remaining[i] = int(inputs[i].size());
    for (int from : inputs[i]) consumers[from].push_back(i);
  }
  std::priority_queue<int, std::vector<int>, std::greater<int>> ready;
  for (int i = 0; i < count; ++i)
    if (remaining[i] == 0) ready.push(i);
  std::vector<int> order;
  while (!ready.empty()) {
    int at = ready.top();
    ready.pop();
    order.push_back(at);
    for (int consumer : consumers[at])
      if (--remaining[consumer] == 0) ready.push(consumer);
  }
  if (int(order.size()) != count) {
    std::vector<bool> pending(count, true);
    for (int at : order) pending[at] = false;
    std::vector<int> cycle = find_cycle(inputs, pending);
    CNNC_ASSERT(cycle.size() >= 2, "Kahn's algorithm stalled without a cycle");
    std::vector<std::string> names;
    for (int at : cycle) names.push_back(model.layers[at - 1].name);
    const LayerSpec& first = model.layers[cycle.front() - 1];
    throw UserError(first.loc, fmt::format("{}: the layers form a cycle: {}; a layer's inputs must not depend on it",
                                           first.describe(), fmt::join(names, " -> ")));
  }

  Graph graph;
  graph.name = model.name;
  graph.file = model.file;
  graph.train = model.train;
  std::vector<int> new_id(count);
  for (int i = 0; i < count; ++i) new_id[order[i]] = i;
  for (int i = 0; i < count; ++i) {
    int at = order[i];
    Node node;
    node.id = i;
    if (at == 0) {
      node.name = kInputName;
      node.shape = model.input_shape;
      node.loc = model.input_loc;
    } else {
      const LayerSpec& layer = model.layers[at - 1];
      node.name = layer.name;
      node.def = find_op(layer.op);
      CNNC_ASSERT(node.def, "the front end accepted an unknown op: " + layer.op);
      node.attrs = layer.attrs;
      node.layer_index = layer.index;
      node.loc = layer.loc;
    }
    for (int from : inputs[at]) node.inputs.push_back(new_id[from]);
    graph.nodes.push_back(std::move(node));
  }
  graph.output = new_id[count - 1];
  return graph;
}

}  // namespace cnnc
