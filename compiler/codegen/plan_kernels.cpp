// The plan-kernels step: the inference and training kernels of a fused graph, and every
// Node-level predicate the package build takes from an op's traits (see plan_kernels.h).
#include "codegen/plan_kernels.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include <fmt/format.h>

#include "graph/print.h"

namespace cnnc {

namespace {

// Bump when the default schedules or the meaning of a knob change: every kernel signature (the
// tuning database's key) ends with it, so measurements made against other schedules are not
// used (`cnnc tune` measures again) but stay in the database.
// r17: 5x5 weight gradients by Winograd F(5x5, 2x2), by the same rule and knob as the input
// gradient's; r16: Winograd by rule only where its tiles cover little more than the output
// (winograd_work_ratio in ops/conv2d.cpp), Winograd F(2x2, 5x5) for 5x5 forward and input
// gradients; r15: the input gradient of 'same' convolutions at stride 1 (not Winograd) as the
// padded gradient convolved, weight gradients of 16 taps or more over blocks of rows (ops/conv2d.cpp);
// r14: cnnc tune's candidates timed in alternation with the default schedule in one process, their
// ratio recorded (a time of its own, seconds from the default's, had moved with other tenants'
// load); r13: Winograd's backward reading the output's gradient in place where its tiles cover it,
// Winograd's and col2im's input gradients adding a previous one as stored; r12: backward at the
// window maxima over input channels padded to whole vectors, partial last vectors of pure stages
// shifted inwards (not guarded), the Winograd weight gradient's register tile added to its sums
// unrolled, strided depthwise input gradients by phases; r11: a tuned
// channel_vectors knob taken as asked again (r10's rule applies to the default); r10: register
// tiles of channels that compute the fewest channels (channel_block), the Winograd weight
// gradient over channels padded to whole tiles; r9: per-task scratch blocks kept by each
// thread, in packages and in tuning's timing (a kernel timed before may have paid page faults it
// no longer pays); r8: batchnorm's training statistics in one pass (BatchStatistics); r7:
// Winograd with a fused or folded pooling, and behind a max pooling's indices by rule (at_maxima
// in ops/conv2d.cpp); r6: depthwise/separable tasks of several rows, residual adds folded at
// inference; r5: Winograd weight gradients; r4: Winograd by rule, padded copies, GEMM input
// gradient at strides, chunked batchnorm sums.
constexpr int kScheduleRevision = 17;

}  // namespace

// Changes whenever this file is recompiled: part of every package's cache key (package.cpp).
const char* plan_kernels_build_stamp() { return __DATE__ " " __TIME__; }

const char* kernel_kind_name(KernelKind kind) {
  static const char* names[] = {"forward", "forward_train", "backward", "loss", "adam", "sgd"};
  return names[int(kind)];
}

// ---------------------------------------------------------------------------------------------
// Node-level predicates: what a node's op means for the kernels that run it

bool node_keeps_saved(const Node& node, bool is_loss_node) {
  for (const Node::FusedOp& op : node.fused) {
    if (op.def->traits.pooling != Pooling::None) return true;
    if (op.def->traits.softmax && is_loss_node) return true;
  }
  return false;
}

bool saves_pool_index(const Node& node) {
  if (!node.def || !node.def->traits.pool_index || node.inputs.empty()) return false;
  for (const Node::FusedOp& op : node.fused) {
    if (op.def->traits.pooling != Pooling::Max) continue;
    return op.attrs.get_pair("size") == op.attrs.get_pair("stride") && op.attrs.get_string("padding") == "valid";
  }
  return false;
}

const Shape& saved_shape(const Node& node) { return saves_pool_index(node) ? node.shape : node.unfused_shape; }

bool kernel_takes_seed(const Node& node) { return node.def && node.def->traits.random; }

bool updates_state(const Node& node) { return node.def && node.def->traits.training_form; }

bool is_training_view(const Node& node) { return node.def && node.def->traits.view; }

std::vector<int> training_storage_owners(const Graph& graph) {
  std::vector<int> owner(graph.nodes.size());
  for (const Node& node : graph.nodes) owner[size_t(node.id)] = is_training_view(node) ? owner[size_t(node.inputs[0])] : node.id;
  return owner;
}

std::optional<UserError> training_blocker(const Graph& graph) {
  const Node& out = graph.nodes[graph.output];
  bool softmax = (out.def && out.def->traits.softmax) || (!out.fused.empty() && out.fused.back().def->traits.softmax);
  if (!softmax || out.shape.size() != 1)
    return UserError(out.loc, fmt::format("{}: categorical_crossentropy needs the last layer to end in a softmax over a "
                                          "vector of classes (e.g. dense: {{units: 10, activation: softmax}}); it gives "
                                          "{}{}",
                                          out.describe(), shape_str(out.shape), softmax ? "" : " without softmax"));
  return std::nullopt;
}

std::string training_unsupported_reason(const Graph& graph) {
  std::optional<UserError> blocker = training_blocker(graph);
  return blocker ? blocker->formatted() : "";
}

int64_t training_kernel_flops(const Graph& graph, const KernelInfo& kernel) {
  const Node& node = graph.nodes[kernel.node];
  switch (kernel.kind) {
    case KernelKind::Forward:
    case KernelKind::ForwardTrain:
      return node.flops;
    case KernelKind::Backward: {
      bool input_grad = std::find(kernel.input_grad.begin(), kernel.input_grad.end(), true) != kernel.input_grad.end();
      return node.def->backward_flops ? node.def->backward_flops(node.flops, input_grad) : node.flops;
    }
    case KernelKind::Loss:
      return 4 * shape_elements(node.shape);
    case KernelKind::Adam:
    case KernelKind::Sgd:
      return 0;  // per step, not per example
  }
  return 0;
}


// ---------------------------------------------------------------------------------------------
// Schedule knobs and kernel signatures (the tuning database's key)

std::string ScheduleKnobs::str() const {
  if (!autoscheduler.empty()) return "autoscheduler=" + autoscheduler;
  std::vector<std::string> parts;
  if (channel_vectors > 0) parts.push_back(fmt::format("channel_vectors={}", channel_vectors));
  if (pixel_tile > 0) parts.push_back(fmt::format("pixel_tile={}", pixel_tile));
  if (batch_chunks > 0) parts.push_back(fmt::format("batch_chunks={}", batch_chunks));
  if (!algorithm.empty()) parts.push_back("algorithm=" + algorithm);
  return parts.empty() ? "default" : fmt::format("{}", fmt::join(parts, " "));
}

ScheduleKnobs ScheduleKnobs::parse(const std::string& text) {
  ScheduleKnobs knobs;
  std::istringstream words(text);
  std::string word;
  while (words >> word) {
    if (word == "default") continue;
    size_t equals = word.find('=');
    std::string key = word.substr(0, equals), value = equals == std::string::npos ? "" : word.substr(equals + 1);
    auto number = [&]() {
      char* end = nullptr;
      long parsed = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || parsed < 1 || parsed > 64)
        throw UserError(SourceLoc{"schedule", 0, 0}, fmt::format("bad value in '{}'", word));
      return int(parsed);
    };
    if (key == "channel_vectors") knobs.channel_vectors = number();
    else if (key == "pixel_tile") knobs.pixel_tile = number();
    else if (key == "batch_chunks") knobs.batch_chunks = number();
    else if (key == "autoscheduler" && (value == "Mullapudi2016" || value == "Adams2019" || value == "Li2018"))
      knobs.autoscheduler = value;
    else if (key == "algorithm" && (value == "winograd" || value == "winograd4" || value == "direct" ||
                                       value == "columns" || value == "padded"))
      knobs.algorithm = value;
    else
      throw UserError(SourceLoc{"schedule", 0, 0}, fmt::format("unknown schedule knob '{}'", word));
  }
  return knobs;
}

namespace {

// A pooling's window, stride and padding as the kernel signature writes them: "(2x2/2x2 valid)".
std::string pooling_text(const Attrs& attrs) {
  return fmt::format("({}x{}/{}x{} {})", attrs.get_pair("size").first, attrs.get_pair("size").second,
                     attrs.get_pair("stride").first, attrs.get_pair("stride").second, attrs.get_string("padding"));
}

}  // namespace

std::string kernel_signature(const Graph& graph, const KernelInfo& kernel) {
  std::string text = kernel_kind_name(kernel.kind);
  std::string revision = fmt::format(" schedules=r{}", kScheduleRevision);
  if (kernel.kind == KernelKind::Adam || kernel.kind == KernelKind::Sgd)
    return text + fmt::format(" params={}", kernel.param_floats) + revision;
  const Node& node = graph.nodes[kernel.node];
  text += " " + node.op_name();
  for (auto& [key, value] : node.attrs.values()) {
    if (auto* i = std::get_if<int64_t>(&value)) text += fmt::format(" {}={}", key, *i);
    else if (auto* p = std::get_if<std::pair<int64_t, int64_t>>(&value)) text += fmt::format(" {}={}x{}", key, p->first, p->second);
    else if (auto* d = std::get_if<double>(&value)) text += fmt::format(" {}={}", key, *d);
    else if (auto* b = std::get_if<bool>(&value)) text += fmt::format(" {}={}", key, *b);
    else if (auto* q = std::get_if<Padding4>(&value)) text += fmt::format(" {}={},{},{},{}", key, (*q)[0], (*q)[1], (*q)[2], (*q)[3]);
    else text += fmt::format(" {}={}", key, std::get<std::string>(value));
  }
  for (int input : node.inputs) text += fmt::format(" in=[{}]", fmt::join(graph.nodes[input].shape, ","));
  text += fmt::format(" out=[{}] unfused=[{}]", fmt::join(node.shape, ","), fmt::join(node.unfused_shape, ","));
  for (const Node::FusedOp& op : node.fused) {
    text += " +" + op.def->name;
    if (op.attrs.has("size")) text += pooling_text(op.attrs);
  }
  if (kernel.fold >= 0) {
    const Node& affine = graph.nodes[size_t(kernel.fold)];
    text += " +fold:" + affine.op_name();
    for (auto& [key, value] : affine.attrs.values())
      if (auto* d = std::get_if<double>(&value)) text += fmt::format(" {}={}", key, *d);
    for (const Node::FusedOp& op : affine.fused) text += " +" + op.def->name;
  }
  if (kernel.residual >= 0) {  // (the other inputs' shapes are the output's)
    const Node& sum = graph.nodes[size_t(kernel.residual)];
    text += fmt::format(" +residual:{}x{}", sum.op_name(), sum.inputs.size());
    for (const Node::FusedOp& op : sum.fused) text += " +" + op.def->name;
  }
  if (kernel.pool >= 0) {
    const Node& pool = graph.nodes[size_t(kernel.pool)];
    text += fmt::format(" +pool:{}{} out=[{}]", pool.op_name(), pooling_text(pool.attrs), fmt::join(pool.shape, ","));
  }
  if (kernel.has_saved) text += " saved";
  if (kernel.from_logits) text += " from_logits";
  for (size_t i = 0; i < kernel.input_grad.size(); ++i)
    text += fmt::format(" g{}={}{}", i, kernel.input_grad[i] ? 1 : 0, kernel.accumulate[i] ? "+" : "");
  return text + revision;
}

// ---------------------------------------------------------------------------------------------
// The kernels

std::vector<int> inference_folds(const Graph& graph) {
  std::vector<int> folds(graph.nodes.size(), -1);
  std::vector<int> consumers(graph.nodes.size(), 0);
  for (const Node& node : graph.nodes)
    for (int input : node.inputs) ++consumers[size_t(input)];
  for (const Node& node : graph.nodes) {
    if (!node.def || !(node.def->traits.inference_affine || node.def->traits.activation) || node.inputs.size() != 1)
      continue;
    const Node& before = graph.nodes[size_t(node.inputs[0])];
    if (!before.def || !before.def->traits.absorbs_affine || !before.fused.empty() || before.is_view) continue;
    if (before.id == graph.output || consumers[size_t(before.id)] != 1) continue;
    folds[size_t(before.id)] = node.id;
  }
  std::vector<int> consumer(graph.nodes.size(), -1);  // (the one, where there is one)
  for (const Node& node : graph.nodes)
    for (int input : node.inputs) consumer[size_t(input)] = node.id;
  // Residual adds, after the value of a kernel that can fold (its folded node's, if any).
  for (const Node& node : graph.nodes) {
    if (!node.def || !node.def->traits.absorbs_affine || !node.fused.empty() || node.is_view) continue;
    int last = folds[size_t(node.id)] >= 0 ? folds[size_t(node.id)] : node.id;
    if (last == graph.output || consumers[size_t(last)] != 1) continue;
    const Node& sum = graph.nodes[size_t(consumer[size_t(last)])];
    if (!sum.def || !sum.def->traits.inference_sum) continue;
    bool ready = true;  // the other inputs exist when this node's kernel runs
    for (int input : sum.inputs) ready = ready && (input == last || input < node.id);
    if (ready) folds[size_t(last)] = sum.id;
  }
  // Poolings, after the value of a kernel whose op can pool it (its folded node's, if any).
  for (const Node& node : graph.nodes) {
    if (!node.def || !node.def->traits.absorbs_pooling || !node.fused.empty() || node.is_view) continue;
    int last = folds[size_t(node.id)] >= 0 ? folds[size_t(node.id)] : node.id;
    if (graph.nodes[size_t(last)].def->traits.inference_sum) continue;  // (not after a residual add)
    if (last == graph.output || consumers[size_t(last)] != 1 || folds[size_t(last)] >= 0) continue;
    const Node& pool = graph.nodes[size_t(consumer[size_t(last)])];
    if (pool.def && pool.def->traits.pooling != Pooling::None && pool.inputs.size() == 1 && pool.fused.empty())
      folds[size_t(last)] = pool.id;
  }
  return folds;
}

namespace {

// The node's kernel also computes `sum` (a residual add): its other inputs after the node's.
void add_residual(const Graph& graph, int value, int sum, KernelInfo& kernel) {
  kernel.residual = sum;
  kernel.function += "_" + graph.nodes[size_t(sum)].name;
  for (int input : graph.nodes[size_t(sum)].inputs)
    if (input != value) kernel.inputs.push_back(input);
}

}  // namespace

std::vector<KernelInfo> plan_kernels(const Graph& graph) {
  std::vector<int> folds = inference_folds(graph);
  std::vector<bool> folded(graph.nodes.size(), false);
  for (int into : folds)
    if (into >= 0) folded[size_t(into)] = true;
  std::vector<KernelInfo> kernels;
  for (const Node& node : graph.nodes) {
    if (node.id == 0 || node.is_view || folded[size_t(node.id)]) continue;
    KernelInfo kernel;
    kernel.function = fmt::format("{}_k{}_{}", graph.name, node.id, node.name);
    kernel.node = node.id;
    kernel.inputs = node.inputs;
    for (const ParamSpec& param : node.params) kernel.params.push_back(param.name);
    int next = folds[size_t(node.id)];
    auto pools = [&](int id) { return graph.nodes[size_t(id)].def->traits.pooling != Pooling::None; };
    if (next >= 0 && !graph.nodes[size_t(next)].def->traits.inference_sum && !pools(next)) {
      const Node& affine = graph.nodes[size_t(next)];
      kernel.fold = affine.id;
      kernel.function += "_" + affine.name;
      for (const ParamSpec& param : affine.params) kernel.fold_params.push_back(param.name);
      next = folds[size_t(affine.id)];
    }
    if (next >= 0 && pools(next)) {
      kernel.pool = next;
      kernel.function += "_" + graph.nodes[size_t(next)].name;
    } else if (next >= 0) {
      add_residual(graph, kernel.fold >= 0 ? kernel.fold : node.id, next, kernel);
    }
    kernels.push_back(kernel);
  }
  return kernels;
}

std::vector<KernelInfo> plan_training_kernels(const Graph& graph, int64_t param_floats) {
  CNNC_ASSERT(training_unsupported_reason(graph).empty(), "planning training for an untrainable graph");
  std::vector<KernelInfo> kernels;
  int loss_node = graph.output;
  std::vector<KernelInfo> inference = plan_kernels(graph);
  // Training forward: the inference kernel where nothing needs keeping, else a training variant.
  for (const Node& node : graph.nodes) {
    if (node.id == 0 || is_training_view(node)) continue;
    KernelInfo kernel;
    kernel.node = node.id;
    kernel.inputs = node.inputs;
    for (const ParamSpec& param : node.params) kernel.params.push_back(param.name);
    kernel.has_saved = node_keeps_saved(node, node.id == loss_node);
    if (kernel.has_saved || node.def->traits.training_form) {
      kernel.kind = KernelKind::ForwardTrain;
      kernel.function = fmt::format("{}_t{}_{}", graph.name, node.id, node.name);
    } else {
      // The inference kernel, unless it also computes a folded node: then one of its own.
      kernel.kind = KernelKind::Forward;
      kernel.function = fmt::format("{}_t{}_{}", graph.name, node.id, node.name);
      for (const KernelInfo& k : inference)
        if (k.node == node.id && k.fold < 0 && k.residual < 0 && k.pool < 0) {
          kernel.function = k.function;
          kernel.reuses_inference_kernel = true;
        }
    }
    kernels.push_back(kernel);
  }
  KernelInfo loss;
  loss.kind = KernelKind::Loss;
  loss.function = graph.name + "_loss";
  loss.node = loss_node;
  loss.from_logits = true;
  kernels.push_back(loss);

  // Gradients are stored per memory owner (a flatten shares its input's gradient).
  std::vector<int> owner = training_storage_owners(graph);
  std::vector<bool> written(graph.nodes.size(), false);
  written[owner[loss_node]] = true;  // the loss writes the gradient the output node starts from
  for (int id = int(graph.nodes.size()) - 1; id >= 1; --id) {
    const Node& node = graph.nodes[id];
    if (is_training_view(node)) continue;
    if (!written[owner[id]]) continue;  // a dead branch: nothing flows back into it
    KernelInfo kernel;
    kernel.kind = KernelKind::Backward;
    kernel.function = fmt::format("{}_b{}_{}", graph.name, node.id, node.name);
    kernel.node = node.id;
    kernel.inputs = node.inputs;
    for (const ParamSpec& param : node.params) kernel.params.push_back(param.name);
    kernel.has_saved = node_keeps_saved(node, id == loss_node);
    kernel.from_logits = id == loss_node;
    bool any = !node.params.empty();
    for (size_t k = 0; k < node.inputs.size(); ++k) {
      int input = node.inputs[k];
      // An input used twice (add(a, b, a)) gets one output: the sum over its uses.
      bool repeated = std::find(node.inputs.begin(), node.inputs.begin() + long(k), input) != node.inputs.begin() + long(k);
      bool needed = owner[input] != 0 && !repeated;
      kernel.input_grad.push_back(needed);
      kernel.accumulate.push_back(needed && written[owner[input]]);
      if (needed) written[owner[input]] = true;
      any = any || needed;
    }
    if (any) kernels.push_back(kernel);  // else nothing flows back from here (it reads only the input)
  }
  KernelInfo adam;
  adam.kind = KernelKind::Adam;
  adam.function = graph.name + "_adam";
  adam.param_floats = param_floats;
  KernelInfo sgd = adam;
  sgd.kind = KernelKind::Sgd;
  sgd.function = graph.name + "_sgd";
  if (param_floats > 0) {
    kernels.push_back(adam);
    kernels.push_back(sgd);
  }
  return kernels;
}

// ---------------------------------------------------------------------------------------------
// The plan in text form (--dump-after plan-kernels)

std::string format_kernel(const Graph& graph, const KernelInfo& kernel) {
  std::string line = fmt::format("  {} {}", kernel.function, kernel_kind_name(kernel.kind));
  if (kernel.kind == KernelKind::Adam || kernel.kind == KernelKind::Sgd)
    return line + fmt::format(" param_floats={}\n", kernel.param_floats);
  const Node& node = graph.nodes[kernel.node];
  line += fmt::format(" node={}:{}", node.id, node.name);
  std::vector<std::string> inputs;
  for (int input : kernel.inputs) inputs.push_back(fmt::format("{}:{}", input, graph.nodes[input].name));
  if (!inputs.empty()) line += fmt::format(" inputs=[{}]", fmt::join(inputs, ", "));
  if (!kernel.params.empty()) line += fmt::format(" params=[{}]", fmt::join(kernel.params, ", "));
  if (kernel.fold >= 0) {
    const Node& affine = graph.nodes[size_t(kernel.fold)];
    line += fmt::format(" folds={}:{}", affine.id, affine.name);
    if (!kernel.fold_params.empty()) line += fmt::format(" params=[{}]", fmt::join(kernel.fold_params, ", "));
    if (kernel.residual < 0 && kernel.pool < 0) line += fmt::format(" output={}:{}", affine.id, affine.name);
  }
  if (kernel.residual >= 0) {
    const Node& sum = graph.nodes[size_t(kernel.residual)];
    line += fmt::format(" folds={}:{} output={}:{}", sum.id, sum.name, sum.id, sum.name);
  }
  if (kernel.pool >= 0) {
    const Node& pool = graph.nodes[size_t(kernel.pool)];
    line += fmt::format(" folds={}:{} output={}:{}", pool.id, pool.name, pool.id, pool.name);
  }
  if (!kernel.input_grad.empty()) {
    std::vector<std::string> flags;  // per input: "grad", "grad+" (added to another's), "-" (none)
    for (size_t i = 0; i < kernel.input_grad.size(); ++i)
      flags.push_back(!kernel.input_grad[i] ? "-" : kernel.accumulate[i] ? "grad+" : "grad");
    line += fmt::format(" input_grads=[{}]", fmt::join(flags, ", "));
  }
  if (kernel.has_saved) line += saves_pool_index(node) ? " saved=pool_index" : " saved";
  if (kernel.from_logits) line += " from_logits";
  if (kernel.reuses_inference_kernel) line += " (the inference kernel)";
  return line + "\n";
}

}  // namespace cnnc
