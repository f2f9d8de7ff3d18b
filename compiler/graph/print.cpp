#include "graph/print.h"

#include <algorithm>

#include <fmt/format.h>

namespace cnnc {

std::string with_commas(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

std::string human_bytes(int64_t bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double value = double(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", value, units[unit]);
}

namespace {

std::string attr_str(const AttrValue& value) {
  if (auto* i = std::get_if<int64_t>(&value)) return std::to_string(*i);
  if (auto* p = std::get_if<std::pair<int64_t, int64_t>>(&value)) return fmt::format("[{}, {}]", p->first, p->second);
  if (auto* d = std::get_if<double>(&value)) return fmt::format("{}", *d);
  if (auto* b = std::get_if<bool>(&value)) return *b ? "true" : "false";
  if (auto* q = std::get_if<Padding4>(&value)) return fmt::format("[[{}, {}], [{}, {}]]", (*q)[0], (*q)[1], (*q)[2], (*q)[3]);
  return std::get<std::string>(value);
}

bool is_linear_graph(const Graph& graph) {
  for (const Node& node : graph.nodes)
    if (node.id > 0 && (node.inputs.size() != 1 || node.inputs[0] != node.id - 1)) return false;
  return true;
}

}  // namespace

// The layer's label in the summary: "name (op)", or "name (op+activation)".
std::string summary_label(const Node& node) {
  if (node.attrs.has("activation") && node.attrs.get_string("activation") != "linear" &&
      node.attrs.get_string("activation") != "none")
    return fmt::format("{} ({}+{})", node.name, node.op_name(), node.attrs.get_string("activation"));
  return fmt::format("{} ({})", node.name, node.op_name());
}

std::string format_summary(const Graph& graph) {
  bool show_inputs = !is_linear_graph(graph);
  std::string out = fmt::format("Model: \"{}\" ({})\n", graph.name, graph.file);
  // Keras's column widths, widened where a label or a shape is longer.
  size_t layer_width = 32, shape_width = 22;
  for (const Node& node : graph.nodes) {
    layer_width = std::max(layer_width, summary_label(node).size());
    shape_width = std::max(shape_width, shape_str(node.shape).size());
  }
  size_t width = (show_inputs ? 112 : 88) + (layer_width - 32) + (shape_width - 22);
  std::string thin(width, '_'), thick(width, '=');
  out += thin + "\n";
  auto row = [&](const std::string& layer, const std::string& shape, const std::string& params,
                 const std::string& flops, const std::string& inputs) {
    std::string line = fmt::format(" {:<{}} {:<{}} {:>12} {:>16}", layer, layer_width, shape, shape_width, params, flops);
    if (show_inputs) line += "   " + inputs;
    return line + "\n";
  };
  out += row("Layer (type)", "Output Shape", "Param #", "FLOPs", "Connected to");
  out += thick + "\n";
  for (const Node& node : graph.nodes) {
    std::vector<std::string> inputs;
    for (int from : node.inputs) inputs.push_back(graph.nodes[from].name);
    out += row(summary_label(node), shape_str(node.shape), with_commas(node.param_count()), with_commas(node.flops),
               fmt::format("{}", fmt::join(inputs, ", ")));
  }
  out += thick + "\n";
  int64_t total = graph.total_params(), trainable = graph.trainable_params();
  out += fmt::format("Total params: {} ({})\n", with_commas(total), human_bytes(total * 4));
  out += fmt::format("Trainable params: {} ({})\n", with_commas(trainable), human_bytes(trainable * 4));
  out += fmt::format("Non-trainable params: {} ({})\n", with_commas(total - trainable), human_bytes((total - trainable) * 4));
  out += fmt::format("Forward FLOPs per image: {} ({:.3f} MFLOP)\n", with_commas(graph.total_flops()),
                     double(graph.total_flops()) / 1e6);
  out += fmt::format("Activation memory per image: {} (float32, every layer's output)\n",
                     human_bytes(graph.activation_bytes()));
  out += thin + "\n";
  return out;
}

std::string format_graph(const Graph& graph) {
  std::string out = fmt::format("graph {} ({})\n", graph.name, graph.file);
  for (const Node& node : graph.nodes) {
    std::vector<std::string> inputs, attrs;
    for (int from : node.inputs) inputs.push_back(fmt::format("%{}", from));
    for (auto& [key, value] : node.attrs.values()) attrs.push_back(fmt::format("{}: {}", key, attr_str(value)));
    out += fmt::format("  %{} {} = {}({})", node.id, node.name, node.op_name(), fmt::join(inputs, ", "));
    if (!attrs.empty()) out += fmt::format(" {{{}}}", fmt::join(attrs, ", "));
    if (!node.fused.empty()) {
      std::vector<std::string> fused;
      for (const Node::FusedOp& op : node.fused) fused.push_back(fmt::format("{} '{}'", op.def->name, op.name));
      out += fmt::format(" + fused[{}]", fmt::join(fused, ", "));
    }
    if (node.is_view) out += " view";
    out += fmt::format(" -> {}\n", shape_str(node.shape));
  }
  out += fmt::format("  output %{}\n", graph.output);
  return out;
}

}  // namespace cnnc
