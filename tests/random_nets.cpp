#include "random_nets.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <sstream>

#include <fmt/format.h>

#include "reference/reference_ops.h"
#include "test_support.h"

namespace cnnc::test {

namespace {

// ---------------------------------------------------------------------------------------------
// The generator

// Per example, per layer: the reference computes in double with plain loops, and finite
// differences run it a few hundred times per network.
constexpr int64_t kMaxMacs = 600'000;
constexpr int64_t kMaxElements = 8'000;

class Generator {
 public:
  explicit Generator(uint32_t seed) : random_(seed) {}

  std::string model() {
    bool vector_input = chance(0.08);
    if (vector_input) {
      shape_ = {uniform(1, 64)};
    } else {
      int height = uniform(2, 14);
      int width = chance(0.5) ? height : uniform(2, 14);
      int depth = chance(0.6) ? uniform(1, 4) : channels();
      shape_ = {height, width, std::max(1, std::min(depth, int(kMaxElements / (height * width))))};
    }
    input_shape_ = shape_;
    current_ = "input";
    if (!vector_input) {
      int blocks = uniform(1, 4);
      for (int b = 0; b < blocks; ++b) image_block();
      if (chance(0.75)) emit("flatten", "", {current_}, {shape_[0] * shape_[1] * shape_[2]});
      else emit(chance(0.5) ? "global_avgpool2d" : "global_maxpool2d", "", {current_}, {shape_[2]});
    }
    int hidden = uniform(0, 2);
    for (int h = 0; h < hidden; ++h) vector_block();
    if (chance(0.2)) dropout();
    int classes = uniform(2, 10);
    if (chance(0.8)) {
      dense(classes, "softmax");
    } else {
      dense(classes, chance(0.5) ? "" : activation());
      emit("softmax", "", {current_}, shape_);
    }
    std::string text = fmt::format("name: random\ninput: {{shape: [{}]}}\nlayers:\n", fmt::join(input_shape_, ", "));
    for (const std::string& line : lines_) text += line + "\n";
    return text;
  }

 private:
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(random_); }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(random_) < p; }
  template <typename T>
  T one_of(std::initializer_list<T> choices) {
    return *(choices.begin() + uniform(0, int(choices.size()) - 1));
  }

  // Channel counts 1-80, often not a multiple of any vector width.
  int channels() {
    double r = std::uniform_real_distribution<double>(0, 1)(random_);
    if (r < 0.25) return uniform(1, 8);
    if (r < 0.75) return uniform(9, 40);
    return uniform(41, 80);
  }

  std::string activation() {
    double r = std::uniform_real_distribution<double>(0, 1)(random_);
    if (r < 0.25) return "";
    if (r < 0.55) return "relu";
    if (r < 0.67) return "sigmoid";
    if (r < 0.79) return "tanh";
    if (r < 0.83) return "relu6";
    if (r < 0.87) return "leaky_relu";
    if (r < 0.9) return "elu";
    if (r < 0.92) return "hard_sigmoid";
    if (r < 0.95) return one_of<std::string>({"swish", "silu", "gelu", "hard_swish"});
    return "softmax";
  }

  static int window_out(int in, int window, int stride, bool same) {
    return same ? (in + stride - 1) / stride : (in - window) / stride + 1;
  }

  static std::string pair(int a, int b) { return a == b ? std::to_string(a) : fmt::format("[{}, {}]", a, b); }

  // Adds a layer reading `inputs` with output `shape`; it becomes the current tensor.
  std::string emit(const std::string& op, const std::string& attrs, const std::vector<std::string>& inputs,
                   const std::vector<int>& shape) {
    std::string name = fmt::format("l{}", lines_.size());
    std::string fields = "name: " + name;
    if (!attrs.empty()) fields += ", " + attrs;
    fields += fmt::format(", inputs: [{}]", fmt::join(inputs, ", "));
    lines_.push_back(fmt::format("  - {}: {{{}}}", op, fields));
    shapes_[name] = shape;
    current_ = name;
    shape_ = shape;
    return name;
  }

  // A conv2d from `from`; filters 0: random. Returns its name.
  std::string conv(const std::string& from, int filters, bool keep_size) {
    std::vector<int> in = shapes_.count(from) ? shapes_[from] : input_shape_;
    int height = in[0], width = in[1], in_channels = in[2];
    int kh, kw;
    if (keep_size) {
      kh = kw = one_of({1, 3, 3, 5});
      if (chance(0.2)) kw = one_of({1, 3});
    } else if (chance(0.6)) {
      kh = kw = one_of({1, 2, 3, 3, 4, 5});
    } else {
      kh = uniform(1, 5);
      kw = uniform(1, 5);
    }
    int sh = 1, sw = 1;
    if (!keep_size) {
      sh = one_of({1, 1, 1, 2, 2, 3});
      sw = chance(0.85) ? sh : uniform(1, 3);
    }
    int dh = 1, dw = 1;  // dilation: only without a stride, as in Keras
    if (sh == 1 && sw == 1 && chance(0.15)) {
      dh = uniform(1, 3);
      dw = chance(0.7) ? dh : uniform(1, 3);
    }
    int span_h = (kh - 1) * dh + 1, span_w = (kw - 1) * dw + 1;
    bool same = keep_size || chance(0.5);
    if (!same && (span_h > height || span_w > width)) same = true;
    int out_h = window_out(height, span_h, sh, same), out_w = window_out(width, span_w, sw, same);
    if (filters > 0 && int64_t(out_h) * out_w * filters * kh * kw * in_channels > 3 * kMaxMacs) kh = kw = 1;
    if (filters == 0) {
      filters = channels();
      int64_t per_filter = int64_t(out_h) * out_w * std::max<int64_t>(int64_t(kh) * kw * in_channels, 1);
      filters = int(std::max<int64_t>(1, std::min<int64_t>({filters, kMaxMacs / per_filter, kMaxElements / (out_h * out_w)})));
    }
    std::string attrs = fmt::format("filters: {}, kernel: {}", filters, pair(kh, kw));
    if (sh != 1 || sw != 1) attrs += ", stride: " + pair(sh, sw);
    if (dh != 1 || dw != 1) attrs += ", dilation: " + pair(dh, dw);
    if (same) attrs += ", padding: same";
    else if (chance(0.3)) attrs += ", padding: valid";
    std::string act = keep_size ? (chance(0.5) ? "" : "relu") : activation();
    if (!act.empty()) attrs += ", activation: " + act;
    else if (chance(0.2)) attrs += std::string(", activation: ") + one_of({"linear", "none"});
    if (chance(0.15)) attrs += ", use_bias: false";
    return emit("conv2d", attrs, {from}, {out_h, out_w, filters});
  }

  // A depthwise_conv2d, or a separable_conv2d (its depthwise step, then `filters` channels).
  void depthwise(bool separable) {
    int height = shape_[0], width = shape_[1], in_channels = shape_[2];
    int kh = one_of({1, 2, 3, 3, 5}), kw = chance(0.8) ? kh : uniform(1, 4);
    int sh = one_of({1, 1, 2}), sw = chance(0.85) ? sh : uniform(1, 2);
    int dh = 1, dw = 1;
    if (sh == 1 && sw == 1 && chance(0.2)) {
      dh = uniform(1, 3);
      dw = chance(0.7) ? dh : uniform(1, 3);
    }
    int span_h = (kh - 1) * dh + 1, span_w = (kw - 1) * dw + 1;
    bool same = chance(0.5) || span_h > height || span_w > width;
    int out_h = window_out(height, span_h, sh, same), out_w = window_out(width, span_w, sw, same);
    int multiplier = chance(0.6) ? 1 : uniform(2, 3);
    while (multiplier > 1 && int64_t(out_h) * out_w * in_channels * multiplier > kMaxElements) --multiplier;
    std::string attrs = fmt::format("kernel: {}", pair(kh, kw));
    if (sh != 1 || sw != 1) attrs += ", stride: " + pair(sh, sw);
    if (dh != 1 || dw != 1) attrs += ", dilation: " + pair(dh, dw);
    if (same) attrs += ", padding: same";
    if (multiplier != 1) attrs += fmt::format(", depth_multiplier: {}", multiplier);
    int channels_out = in_channels * multiplier;
    if (separable) {
      int64_t per_filter = int64_t(out_h) * out_w * channels_out;
      channels_out = int(std::max<int64_t>(1, std::min<int64_t>({channels(), kMaxMacs / per_filter, kMaxElements / (out_h * out_w)})));
      attrs = fmt::format("filters: {}, ", channels_out) + attrs;
    }
    std::string act = activation();
    if (!act.empty()) attrs += ", activation: " + act;
    if (chance(0.2)) attrs += ", use_bias: false";
    emit(separable ? "separable_conv2d" : "depthwise_conv2d", attrs, {current_}, {out_h, out_w, channels_out});
  }

  void pool(bool allow_overlap) {
    int height = shape_[0], width = shape_[1];
    std::string op = chance(0.65) ? "maxpool2d" : "avgpool2d";
    int ph = one_of({1, 2, 2, 2, 3}), pw = chance(0.8) ? ph : uniform(1, 3);
    int sh = ph, sw = pw;
    bool explicit_stride = allow_overlap && chance(0.35);
    if (explicit_stride) {
      sh = uniform(1, 3);
      sw = chance(0.8) ? sh : uniform(1, 3);
    }
    bool same = chance(0.3);
    if (!same && (ph > height || pw > width)) same = true;
    std::string attrs = "size: " + pair(ph, pw);
    if (explicit_stride) attrs += ", stride: " + pair(sh, sw);
    if (same) attrs += ", padding: same";
    emit(op, attrs, {current_}, {window_out(height, ph, sh, same), window_out(width, pw, sw, same), shape_[2]});
  }

  void dropout() { emit("dropout", fmt::format("rate: {}", one_of({0.1, 0.25, 0.5})), {current_}, shape_); }

  void batchnorm() {
    std::string attrs = chance(0.5) ? "" : fmt::format("epsilon: {}", one_of({0.01, 0.001}));
    if (chance(0.3)) attrs += std::string(attrs.empty() ? "" : ", ") + fmt::format("momentum: {}", one_of({0.9, 0.5}));
    emit("batchnorm", attrs, {current_}, shape_);
  }

  void activation_layer() {
    // Every activation as a layer, those with attributes as often as the rest.
    std::string act = chance(0.5) ? activation() : one_of<std::string>({"leaky_relu", "elu", "relu6", "hard_sigmoid", "swish", "gelu", "hard_swish"});
    std::string attrs;
    if ((act == "leaky_relu" || act == "elu") && chance(0.5)) attrs = fmt::format("alpha: {}", one_of({0.0, 0.05, 0.5, 1.5}));
    emit(act.empty() ? "relu" : act, attrs, {current_}, shape_);
  }

  void image_block() {
    double r = std::uniform_real_distribution<double>(0, 1)(random_);
    if (r < 0.42) {
      conv(current_, 0, false);
      if (chance(0.5)) pool(true);  // fused into the convolution
    } else if (r < 0.5) {
      depthwise(chance(0.5));
      if (chance(0.3)) batchnorm();
    } else if (r < 0.6) {
      pool(true);
    } else if (r < 0.68) {
      activation_layer();
    } else if (r < 0.76) {
      batchnorm();
      if (chance(0.5)) activation_layer();  // fused into the batchnorm
    } else if (r < 0.8) {
      if (chance(0.5)) dropout();
      else resize();
    } else if (r < 0.9) {
      residual_add();
    } else {
      concat();
    }
  }

  // zero_padding2d in each of its forms, or upsampling2d, within the size limits.
  void resize() {
    int height = shape_[0], width = shape_[1], channels_here = shape_[2];
    if (chance(0.5)) {
      int sh = uniform(1, 3), sw = chance(0.7) ? sh : uniform(1, 3);
      if (int64_t(height) * sh * width * sw * channels_here > kMaxElements) sh = sw = 1;
      emit("upsampling2d", chance(0.3) && sh == 2 && sw == 2 ? "" : "size: " + pair(sh, sw), {current_},
           {height * sh, width * sw, channels_here});
      return;
    }
    int t = uniform(0, 2), b = uniform(0, 2), l = uniform(0, 2), rr = uniform(0, 2);
    std::string attrs;
    double form = std::uniform_real_distribution<double>(0, 1)(random_);
    if (form < 0.2) {
      attrs = "";  // the default, 1 on every side
      t = b = l = rr = 1;
    } else if (form < 0.45) {
      attrs = fmt::format("padding: {}", t);
      b = l = rr = t;
    } else if (form < 0.7) {
      attrs = fmt::format("padding: [{}, {}]", t, l);
      b = t;
      rr = l;
    } else {
      attrs = fmt::format("padding: [[{}, {}], [{}, {}]]", t, b, l, rr);
    }
    if (int64_t(height + t + b) * (width + l + rr) * channels_here > kMaxElements) return;
    emit("zero_padding2d", attrs, {current_}, {height + t + b, width + l + rr, channels_here});
  }

  // A residual block: convolutions that keep the size, added to each other or to their input.
  void residual_add() {
    std::string base = current_;
    int channels_here = shape_[2];
    bool project = chance(0.4);
    int filters = project ? std::min(channels(), int(kMaxElements / (shape_[0] * shape_[1]))) : channels_here;
    filters = std::max(filters, 1);
    std::string a = conv(base, filters, true);
    std::vector<std::string> inputs;
    if (project || chance(0.4)) {
      std::string b = conv(base, filters, true);
      inputs = {a, b};
      if (chance(0.3)) inputs.push_back(a);  // the same tensor twice: gradients add up
    } else {
      inputs = chance(0.5) ? std::vector<std::string>{a, base} : std::vector<std::string>{base, a};
      if (chance(0.25)) inputs.push_back(base);
    }
    emit("add", "", inputs, shapes_[a]);
    if (chance(0.5)) activation_layer();  // fused into the add
  }

  // Branches joined along channels, height or width.
  void concat() {
    std::string base = current_;
    std::vector<int> in = shape_;
    double r = std::uniform_real_distribution<double>(0, 1)(random_);
    if (r < 0.6) {
      std::string a = conv(base, 0, true);
      std::string b = chance(0.5) ? base : conv(base, 0, true);
      int total = shapes_.count(b) ? shapes_[b][2] : in[2];
      std::string axis = one_of({"", "", "axis: -1", "axis: 3"});
      emit("concat", axis, {a, b}, {in[0], in[1], shapes_[a][2] + total});
    } else {
      int axis = chance(0.5) ? 1 : 2;
      std::string a = chance(0.5) ? base : conv(base, in[2], true);
      std::vector<int> shape = in;
      shape[size_t(axis - 1)] *= 2;
      int written = chance(0.7) ? axis : axis - 4;  // 1, 2 or, counted from the end, -3, -2
      emit("concat", fmt::format("axis: {}", written), {a, base}, shape);
    }
  }

  void dense(int units, const std::string& act) {
    std::string attrs = fmt::format("units: {}", units);
    if (!act.empty()) attrs += ", activation: " + act;
    if (chance(0.1)) attrs += ", use_bias: false";
    emit("dense", attrs, {current_}, {units});
  }

  void vector_block() {
    int features = shape_[0];
    int units = std::max(1, std::min(channels(), int(kMaxMacs / std::max(features, 1))));
    double r = std::uniform_real_distribution<double>(0, 1)(random_);
    if (r < 0.6) {
      dense(units, activation());
    } else if (r < 0.72) {
      batchnorm();
      if (chance(0.5)) activation_layer();
    } else if (r < 0.82) {
      dropout();
    } else if (r < 0.91 && features <= 300) {
      std::string base = current_;
      dense(features, "");
      std::string a = current_;
      emit("add", "", {a, base}, shape_);
    } else {
      std::string base = current_;
      dense(units, activation());
      std::string a = current_;
      emit("concat", "", {base, a}, {features + units});
    }
  }

  std::mt19937 random_;
  std::vector<std::string> lines_;
  std::map<std::string, std::vector<int>> shapes_;
  std::vector<int> shape_, input_shape_;
  std::string current_;
};

// ---------------------------------------------------------------------------------------------
// The checks

std::string check_forward(const BuiltModel& built, int batch, uint32_t seed) {
  rt::Network network(built.package);
  randomize_params(network, seed);
  std::vector<float> input = random_input(batch * built.package->input_elements(), seed + 1);
  network.forward(input, batch);
  const Graph& graph = built.graph;
  for (const Node& node : graph.nodes) {
    if (node.is_view || !test::written_at_inference(graph, node)) continue;
    std::vector<double> expected = test::reference_output(built, network, node, batch);
    const float* actual = network.node_output(node.id);
    for (size_t i = 0; i < expected.size(); ++i) {
      double error = std::fabs(expected[i] - double(actual[i]));
      if (!(error <= 1e-4 + 1e-4 * std::fabs(expected[i])))
        return fmt::format("batch {}: {} differs from the reference at {} of {}: {} instead of {}", batch,
                           node.describe(), i, expected.size(), actual[i], expected[i]);
    }
  }
  return "";
}

struct GradientProblem {
  const Graph& graph;
  std::map<std::string, std::vector<double>> params;
  std::vector<float> input;
  std::vector<int32_t> labels;
  int batch;
  reference::Training training;

  double loss() const {
    return reference::cross_entropy(reference::training_forward(graph, params, input.data(), batch, training), labels);
  }
  // Central difference of the loss along `direction` in parameter tensor `name`.
  double derivative(const std::string& name, const std::vector<double>& direction, double step) {
    std::vector<double>& values = params[name];
    std::vector<double> original = values;
    for (size_t i = 0; i < values.size(); ++i) values[i] = original[i] + step * direction[i];
    double plus = loss();
    for (size_t i = 0; i < values.size(); ++i) values[i] = original[i] - step * direction[i];
    double minus = loss();
    values = original;
    return (plus - minus) / (2 * step);
  }
};

std::string check_gradients(const BuiltModel& built, int batch, uint32_t seed) {
  const rt::Package& package = *built.package;
  if (!package.trainable()) return "not trainable: " + package.untrainable_reason();
  rt::Network network(built.package);
  randomize_params(network, seed);
  network.set_seed(seed);
  GradientProblem problem{built.graph, {}, random_input(batch * package.input_elements(), seed + 1), {}, batch,
                          {seed, network.step()}};
  std::mt19937 random(seed + 2);
  for (int i = 0; i < batch; ++i) problem.labels.push_back(int32_t(random() % uint32_t(package.output_elements())));
  for (const rt::TensorInfo& info : package.params())
    problem.params[info.name].assign(network.params() + info.offset, network.params() + info.offset + info.elements());

  rt::Network::StepResult result = network.compute_gradients(problem.input.data(), problem.labels.data(), batch);
  const float* grads = network.param_grads();
  double loss = problem.loss();
  double package_loss = double(result.loss_sum) / batch;
  if (!(std::fabs(package_loss - loss) <= 1e-4 * (1 + std::fabs(loss))))
    return fmt::format("training loss {} instead of the reference's {}", package_loss, loss);

  // Small steps: few ReLU or pooling kinks fall inside them, and double precision keeps the
  // rounding of the loss far below the tolerance.
  const double step = 1e-7;
  // A kink nearer than the step (seen once in ~1k networks: a ReLU input within 1e-8 of zero)
  // makes the central difference straddle it: a disagreement is measured again with a step
  // 100 times smaller before it counts (double rounding stays below kFloor there too).
  const double kSmallStep = 1e-9;
  // float32 rounding: a gradient summed from terms of order one cancels to about 1e-6, not 0.
  const double kFloor = 1e-5;
  std::normal_distribution<double> normal(0, 1);
  for (const rt::TensorInfo& info : package.params()) {
    if (!info.trainable) continue;
    const float* g = grads + info.offset;
    size_t count = size_t(info.elements());
    double norm = 0, largest = 0;
    for (size_t i = 0; i < count; ++i) {
      norm += double(g[i]) * double(g[i]);
      largest = std::max(largest, std::fabs(double(g[i])));
    }
    norm = std::sqrt(norm);
    // Along a random direction: every entry counts, so a wrong tail of channels shows.
    std::vector<double> direction(count);
    double along = 0;
    for (size_t i = 0; i < count; ++i) {
      direction[i] = normal(random);
      along += direction[i] * double(g[i]);
    }
    auto agrees = [&](double numeric) { return std::fabs(numeric - along) <= 5e-3 * norm + 1e-3 * std::fabs(numeric) + kFloor; };
    double numeric = problem.derivative(info.name, direction, step);
    if (!agrees(numeric)) numeric = problem.derivative(info.name, direction, kSmallStep);
    if (!agrees(numeric))
      return fmt::format("gradient of {} along a random direction: backward {}, finite difference {} (|gradient| {})",
                         info.name, along, numeric, norm);
    // Single entries: the first, the last and two at random.
    std::vector<size_t> entries = {0, count - 1, size_t(random() % count), size_t(random() % count)};
    for (size_t entry : entries) {
      std::vector<double> unit(count, 0.0);
      unit[entry] = 1;
      double exact = double(g[entry]);
      auto close = [&](double difference) {
        return std::fabs(difference - exact) <= 1e-2 * std::max(std::fabs(difference), std::fabs(exact)) + 1e-3 * largest +
                                                    kFloor;
      };
      double difference = problem.derivative(info.name, unit, step);
      if (!close(difference)) difference = problem.derivative(info.name, unit, kSmallStep);
      if (!close(difference))
        return fmt::format("gradient of {}[{}] of {}: backward {}, finite difference {}", info.name, entry, count, exact,
                           difference);
    }
  }
  return "";
}

}  // namespace

std::string random_model_yaml(uint32_t seed) { return Generator(seed).model(); }

NetCheckResult check_net(const std::string& yaml, const std::string& file, uint32_t seed,
                         const NetCheckOptions& options) {
  NetCheckResult result;
  BuiltModel built;
  result.stage = "parse";
  try {
    built.graph = compile_graph(parse_model_text(yaml, file));
  } catch (const std::exception& error) {
    result.message = error.what();
    return result;
  }
  result.stage = "build";
  try {
    BuildOptions build;
    build.target = options.target;
    build.use_tuning = false;
    build.guard_zones = true;  // a kernel writing outside its buffers fails, naming itself
    built.result = build_package(built.graph, build);
    built.package = rt::Package::open(built.result.dir, model_fingerprint(built.graph));
    rt::Network network(built.package);
    result.kernels = network.kernel_count() + (built.package->trainable() ? network.train_kernel_count() : 0);
  } catch (const std::exception& error) {
    result.message = error.what();
    return result;
  }
  try {
    result.stage = "forward";
    for (int batch : options.forward_batches) {
      result.message = check_forward(built, batch, seed + uint32_t(batch));
      if (!result.ok()) return result;
    }
    result.stage = "gradient";
    int batch = options.gradient_batch > 0 ? options.gradient_batch : std::vector<int>{1, 2, 3, 5}[seed % 4];
    result.message = check_gradients(built, batch, seed + 100);
  } catch (const std::exception& error) {
    result.message = error.what();
  }
  return result;
}

}  // namespace cnnc::test
