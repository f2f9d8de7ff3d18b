// cnnc build: plan, generated C, header, manifest, compile, link and cache. No Halide here
// except through codegen.h (compile_kernels).
#include "codegen/package.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <ostream>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "codegen/codegen.h"
#include "graph/print.h"
#include "tune/tuning_db.h"

#ifndef CNNC_VERSION
#define CNNC_VERSION "unknown"
#endif
#ifndef CNNC_HALIDE_INCLUDE_DIR
#define CNNC_HALIDE_INCLUDE_DIR "/usr/include/halide14"
#endif

namespace fs = std::filesystem;

namespace cnnc {

namespace {

// Bump when generated code changes in a way the cache key would not otherwise see.
constexpr int kCodegenRevision = 1;

// Bump when the default schedules or the meaning of a knob change: every kernel signature (the
// tuning database's key) ends with it, so measurements made against other schedules are not
// used (`cnnc tune` measures again) but stay in the database.
constexpr int kScheduleRevision = 2;

uint64_t fnv1a(const std::string& text, uint64_t seed) {
  uint64_t hash = seed;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string hash_hex(const std::string& text) {
  return fmt::format("{:016x}{:016x}", fnv1a(text, 14695981039346656037ull), fnv1a(text, 0x9e3779b97f4a7c15ull));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out) throw UserError(SourceLoc{path, 0, 0}, "cannot write this file");
}

// Runs a program (no shell), failing with its output if it exits non-zero.
void run_program(const std::vector<std::string>& argv, const std::string& log_path) {
  pid_t pid = fork();
  if (pid < 0) throw UserError(SourceLoc{argv[0], 0, 0}, "cannot start a process (fork failed)");
  if (pid == 0) {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    std::vector<char*> args;
    for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  std::string output = read_file(log_path);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && output.empty())
    throw UserError(SourceLoc{argv[0], 0, 0},
                    fmt::format("cannot run '{}'; is it installed? (bash scripts/setup.sh installs the toolchains)", argv[0]));
  throw UserError(SourceLoc{argv[0], 0, 0}, fmt::format("'{}' failed:\n{}", fmt::join(argv, " "), output));
}

// ---------------------------------------------------------------------------------------------
// The plan in C

struct Plan {
  const Graph& graph;
  const std::vector<KernelInfo>& kernels;
  std::string prefix;  // the model name: every exported symbol starts with it
  bool gpu;
  // For each node: the node owning its memory (itself, the input 0, or a view's source).
  std::vector<int> storage_of;
  // Parameters: (node, index in node.params) in checkpoint order, and flat offsets.
  std::vector<std::pair<int, int>> params;
  std::vector<int64_t> param_offsets;
  int64_t param_floats = 0;

  // Training ("" reason: trainable). In training only flatten is a view (dropout computes).
  std::string untrainable;
  std::vector<KernelInfo> training;
  std::vector<int> train_storage_of;  // memory owner of each node's output while training
  std::vector<bool> has_saved;        // nodes keeping a tensor for backward
  int logits_source = -1;             // node whose output (or saved tensor) holds the logits
  bool logits_saved = false;
};

Plan make_plan(const Graph& graph, const std::vector<KernelInfo>& kernels, bool gpu) {
  Plan plan{graph, kernels, graph.name, gpu, {}, {}, {}, 0, "", {}, {}, {}, -1, false};
  for (const Node& node : graph.nodes) {
    int owner = node.id;
    if (node.is_view) owner = plan.storage_of[node.inputs[0]];
    plan.storage_of.push_back(owner);
    plan.train_storage_of.push_back(node.op == "flatten" ? plan.train_storage_of[node.inputs[0]] : node.id);
    plan.has_saved.push_back(node_keeps_saved(node, node.id == graph.output));
    for (size_t p = 0; p < node.params.size(); ++p) {
      plan.params.emplace_back(node.id, int(p));
      plan.param_offsets.push_back(plan.param_floats);
      plan.param_floats += shape_elements(node.params[p].shape);
    }
  }
  plan.untrainable = training_unsupported_reason(graph);
  if (plan.untrainable.empty()) {
    plan.training = plan_training_kernels(graph, plan.param_floats);
    const Node& out = graph.nodes[graph.output];
    plan.logits_saved = plan.has_saved[out.id];
    plan.logits_source = plan.logits_saved ? out.id : out.inputs[0];
  }
  return plan;
}

std::string param_full_name(const Node& node, const ParamSpec& param) { return node.name + "." + param.name; }

std::string generate_header(const Plan& plan, const TargetInfo& target) {
  const Graph& graph = plan.graph;
  const std::string& p = plan.prefix;
  const Node& input = graph.nodes[0];
  const Node& output = graph.nodes[graph.output];
  std::string upper = p;
  for (char& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
  std::string shape_comment = fmt::format("[{}]", fmt::join(input.shape, ", "));
  return fmt::format(R"(/* {p}.h: C API of the model '{p}', generated by cnnc {version} for target {target}.
 * Do not edit; rebuild with `cnnc build`. See docs/c-api.md.
 *
 * Tensors are float32, batch first, then the per-example shape in Keras (NHWC) order.
 * Input per example: {in_shape} ({in_size} floats); output per example: {out_size} floats.
 * Parameters use Keras layouts (conv2d kernel [kh, kw, in, out], dense kernel [in, out]).
 * Functions returning int return 0 on success and nonzero on error; {p}_error() says why.
 * A model may be used by one thread at a time; kernels use the package's own thread pool.
 */
#ifndef CNNC_MODEL_{upper}_H
#define CNNC_MODEL_{upper}_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {upper}_INPUT_SIZE {in_size}
#define {upper}_OUTPUT_SIZE {out_size}
#define {upper}_PARAM_TENSORS {tensors}
#define {upper}_PARAM_FLOATS {floats}

typedef struct {p}_model {p}_model;

/* Creates a model with every parameter zero; NULL if out of memory. */
{p}_model *{p}_create(void);
void {p}_destroy({p}_model *model);

/* Parameter tensors, in checkpoint order: name ("conv2d.kernel"), rank, shape, element count. */
int {p}_param_count(void);
const char *{p}_param_name(int index);
int {p}_param_rank(int index);
int64_t {p}_param_dim(int index, int axis);
int64_t {p}_param_elements(int index);
/* Writable storage of parameter `index` (all parameters are one contiguous block, in order). */
float *{p}_param_data({p}_model *model, int index);
/* Call after writing parameters (needed for GPU targets, harmless elsewhere). */
void {p}_params_changed({p}_model *model);

/* Runs the network on `batch` examples: input holds batch * {upper}_INPUT_SIZE floats,
 * output receives batch * {upper}_OUTPUT_SIZE floats. */
int {p}_forward({p}_model *model, const float *input, int batch, float *output);

/* Graph nodes (after fusion), for inspection and tests: name, floats per example, and the
 * node's output from the last forward call (host memory). */
int {p}_node_count(void);
const char *{p}_node_name(int node);
int64_t {p}_node_elements(int node);
const float *{p}_node_output(const {p}_model *model, int node);

/* Training (see docs/c-api.md). {p}_trainable() is 0 where the model cannot be trained
 * (then the functions below fail with the reason in {p}_error). Labels are class indices. */
int {p}_trainable(void);
/* kind: "adam" (learning_rate, beta_1, beta_2, epsilon) or "sgd" (learning_rate, momentum). */
int {p}_set_optimizer({p}_model *model, const char *kind, float learning_rate, float beta_1, float beta_2,
                      float epsilon, float momentum);
/* One step: forward, softmax cross-entropy loss, backward, optimizer update. loss_sum receives
 * the summed loss of the batch, correct the number of correct predictions (either may be NULL). */
int {p}_train_step({p}_model *model, const float *input, const int32_t *labels, int batch, float *loss_sum,
                   int *correct);
/* Forward and backward without the update: gradients of the mean loss land in {p}_param_grads. */
int {p}_compute_gradients({p}_model *model, const float *input, const int32_t *labels, int batch,
                          float *loss_sum, int *correct);
const float *{p}_param_grads(const {p}_model *model);
/* Optimizer state, {upper}_PARAM_FLOATS floats per slot: slot 0 is Adam's m or SGD's velocity,
 * slot 1 Adam's v. With the step count, enough to resume training exactly. */
float *{p}_optimizer_state({p}_model *model, int slot);
int64_t {p}_step(const {p}_model *model);
void {p}_set_step({p}_model *model, int64_t step);
/* Seed of dropout masks (a mask is a function of seed, step and position). */
void {p}_set_seed({p}_model *model, uint32_t seed);

/* Kernels in execution order, and the seconds each took in the last forward call. */
int {p}_kernel_count(void);
const char *{p}_kernel_name(int kernel);
double {p}_kernel_seconds(const {p}_model *model, int kernel);
/* The same for the training kernels, timed in the last training step. */
int {p}_train_kernel_count(void);
const char *{p}_train_kernel_name(int kernel);
double {p}_train_kernel_seconds(const {p}_model *model, int kernel);

/* The last error message of this model, or "". */
const char *{p}_error(const {p}_model *model);
/* Threads used by the kernels, the caller included (0: HL_NUM_THREADS if set, else one per core
 * this process may run on). The package's own pool: its workers spin 0.5 ms after a parallel
 * loop before they sleep. Kernels flush denormals to zero; the caller's FP mode is restored. */
void {p}_set_threads(int threads);

#ifdef __cplusplus
}}
#endif

#endif
)",
                     fmt::arg("p", p), fmt::arg("version", CNNC_VERSION), fmt::arg("target", target.name),
                     fmt::arg("upper", upper), fmt::arg("in_shape", shape_comment),
                     fmt::arg("in_size", shape_elements(input.shape)), fmt::arg("out_size", shape_elements(output.shape)),
                     fmt::arg("tensors", plan.params.size()), fmt::arg("floats", plan.param_floats));
}

std::string c_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// The global index of parameter `name` of node `node`.
int param_index(const Plan& plan, int node, const std::string& name) {
  for (size_t i = 0; i < plan.params.size(); ++i)
    if (plan.params[i].first == node && plan.graph.nodes[node].params[plan.params[i].second].name == name) return int(i);
  CNNC_ASSERT(false, "no parameter " + name);
}

struct KernelCall {
  std::vector<std::string> types, args;
  std::vector<std::string> inputs, outputs;  // buffers read / written (for GPU synchronization)
  void buffer(const std::string& expr, bool written) {
    types.push_back("struct halide_buffer_t *");
    args.push_back(expr);
    (written ? outputs : inputs).push_back(expr);
  }
  void scalar(const std::string& type, const std::string& expr) {
    types.push_back(type);
    args.push_back(expr);
  }
};

// The arguments of a kernel call in the generated C, following the conventions of KernelKind.
KernelCall kernel_call(const Plan& plan, const KernelInfo& kernel) {
  KernelCall call;
  const Graph& graph = plan.graph;
  const Node& node = graph.nodes[kernel.node];
  bool dropout = node.op == "dropout";
  switch (kernel.kind) {
    case KernelKind::Forward:
    case KernelKind::ForwardTrain:
      for (int input : kernel.inputs) call.buffer(fmt::format("&b[{}]", input), false);
      for (const std::string& name : kernel.params) call.buffer(fmt::format("&w[{}]", param_index(plan, node.id, name)), false);
      if (dropout && kernel.kind == KernelKind::ForwardTrain) {
        call.scalar("int32_t", "(int32_t)model->seed");
        call.scalar("int32_t", "(int32_t)model->step");
      }
      call.buffer(fmt::format("&b[{}]", node.id), true);
      if (kernel.has_saved) call.buffer(fmt::format("&s[{}]", node.id), true);
      if (node.op == "batchnorm" && kernel.kind == KernelKind::ForwardTrain) {
        // The moving statistics, updated in place.
        call.buffer(fmt::format("&w[{}]", param_index(plan, node.id, "moving_mean")), true);
        call.buffer(fmt::format("&w[{}]", param_index(plan, node.id, "moving_variance")), true);
      }
      break;
    case KernelKind::Backward:
      call.buffer(kernel.from_logits ? std::string("&model->logit_grad_buffer") : fmt::format("&g[{}]", node.id), false);
      if (kernel.has_saved) call.buffer(fmt::format("&s[{}]", node.id), false);
      call.buffer(fmt::format("&b[{}]", node.id), false);
      for (int input : kernel.inputs) call.buffer(fmt::format("&b[{}]", input), false);
      for (const std::string& name : kernel.params) call.buffer(fmt::format("&w[{}]", param_index(plan, node.id, name)), false);
      for (size_t k = 0; k < kernel.inputs.size(); ++k)
        if (kernel.accumulate[k]) call.buffer(fmt::format("&g[{}]", kernel.inputs[k]), false);
      if (dropout) {
        call.scalar("int32_t", "(int32_t)model->seed");
        call.scalar("int32_t", "(int32_t)model->step");
      }
      for (size_t k = 0; k < kernel.inputs.size(); ++k)
        if (kernel.input_grad[k]) call.buffer(fmt::format("&g[{}]", kernel.inputs[k]), true);
      for (const ParamSpec& param : node.params)  // gradients of the trainable parameters only
        if (param.trainable) call.buffer(fmt::format("&pg[{}]", param_index(plan, node.id, param.name)), true);
      break;
    case KernelKind::Loss:
      call.buffer(plan.logits_saved ? fmt::format("&s[{}]", plan.logits_source) : fmt::format("&b[{}]", plan.logits_source),
                  false);
      call.buffer("&model->labels_buffer", false);
      call.buffer("&model->logit_grad_buffer", true);
      call.buffer("&model->loss_buffer", true);
      break;
    case KernelKind::Adam:
      for (int i = 0; i < 4; ++i) call.buffer(fmt::format("&model->flat[{}]", i), false);
      for (const char* scalar : {"lr_t", "model->beta_1", "model->beta_2", "model->epsilon"}) call.scalar("float", scalar);
      for (int i : {0, 2, 3}) call.buffer(fmt::format("&model->flat[{}]", i), true);
      break;
    case KernelKind::Sgd:
      for (int i : {0, 1, 2}) call.buffer(fmt::format("&model->flat[{}]", i), false);
      call.scalar("float", "model->learning_rate");
      call.scalar("float", "model->momentum");
      for (int i : {0, 2}) call.buffer(fmt::format("&model->flat[{}]", i), true);
      break;
  }
  return call;
}

// One kernel call in the generated C: GPU synchronization around it, errors, timing.
std::string emit_call(const Plan& plan, const KernelInfo& kernel, const std::string& times, size_t index) {
  KernelCall call = kernel_call(plan, kernel);
  std::string out;
  if (plan.gpu)
    for (const std::string& buffer : call.inputs)
      if (buffer.rfind("&w[", 0) != 0) out += fmt::format("  ({})->flags |= halide_buffer_flag_host_dirty;\n", buffer);
  out += fmt::format("  if (run_flushing_denormals({}({}))) return fail(model, \"kernel {} failed\");\n", kernel.function,
                     fmt::join(call.args, ", "), kernel.function);
  if (plan.gpu)
    for (const std::string& buffer : call.outputs)
      out += fmt::format("  if (halide_copy_to_host(NULL, {})) return fail(model, \"copy to host failed\");\n", buffer);
  out += fmt::format("  end = now();\n  {}[{}] = end - start;\n  start = end;\n", times, index);
  return out;
}

// The training half of plan.c: buffers for saved tensors and gradients, one step of training.
std::string generate_training_c(const Plan& plan) {
  const std::string& p = plan.prefix;
  std::string out = fmt::format(R"C(
int {p}_trainable(void) {{ return TRAINABLE; }}
int {p}_train_kernel_count(void) {{ return TRAIN_KERNELS; }}
const char *{p}_train_kernel_name(int kernel) {{
  return kernel >= 0 && kernel < TRAIN_KERNELS ? train_kernel_names[kernel] : NULL;
}}
double {p}_train_kernel_seconds(const {p}_model *model, int kernel) {{
  return kernel >= 0 && kernel < TRAIN_KERNELS ? model->train_kernel_seconds[kernel] : 0.0;
}}
const float *{p}_param_grads(const {p}_model *model) {{ return model->grads; }}
int64_t {p}_step(const {p}_model *model) {{ return model->step; }}
void {p}_set_step({p}_model *model, int64_t step) {{ model->step = step; }}
void {p}_set_seed({p}_model *model, uint32_t seed) {{ model->seed = seed; }}

/* Gradient and optimizer blocks, allocated on first use. */
static int ensure_training_blocks({p}_model *model) {{
  if (model->grads) return 0;
  size_t floats = PARAM_FLOATS > 0 ? PARAM_FLOATS : 1;
  model->grads = new_floats(floats);
  model->state[0] = new_floats(floats);
  model->state[1] = new_floats(floats);
  if (!model->grads || !model->state[0] || !model->state[1]) return fail(model, "out of memory for gradients");
  for (int i = 0; i < PARAMS; ++i) {{
    int64_t reversed[4];
    for (int d = 0; d < param_rank[i]; ++d) reversed[d] = param_shape[i][param_rank[i] - 1 - d];
    set_layout(&model->grad_param_buffer[i], model->grad_param_dim[i], param_rank[i], reversed, 0, 0);
    model->grad_param_buffer[i].host = (uint8_t *)(model->grads + param_offset[i]);
  }}
  float *blocks[4] = {{model->params, model->grads, model->state[0], model->state[1]}};
  int64_t size[1] = {{PARAM_FLOATS}};
  for (int i = 0; i < 4; ++i) {{
    set_layout(&model->flat[i], model->flat_dim[i], 1, size, 0, 0);
    model->flat[i].host = (uint8_t *)blocks[i];
  }}
  return 0;
}}

float *{p}_optimizer_state({p}_model *model, int slot) {{
  if (slot < 0 || slot > 1 || ensure_training_blocks(model)) return NULL;
  return model->state[slot];
}}

int {p}_set_optimizer({p}_model *model, const char *kind, float learning_rate, float beta_1, float beta_2,
                      float epsilon, float momentum) {{
  if (!kind || (strcmp(kind, "adam") != 0 && strcmp(kind, "sgd") != 0))
    return fail(model, "unknown optimizer; expected adam or sgd");
  model->optimizer = strcmp(kind, "sgd") == 0;
  model->learning_rate = learning_rate;
  model->beta_1 = beta_1;
  model->beta_2 = beta_2;
  model->epsilon = epsilon;
  model->momentum = momentum;
  return 0;
}}

/* Describes the training buffers for this batch, allocating when the batch grows. */
static int prepare_training({p}_model *model, const int32_t *labels, int batch) {{
  if (ensure_training_blocks(model)) return 1;
  if (batch > model->train_capacity) {{
    for (int i = 0; i < NODES; ++i) {{
      free_device(&model->saved_buffer[i]);
      free_device(&model->grad_buffer[i]);
      free(model->saved_storage[i]);
      free(model->grad_storage[i]);
      model->saved_storage[i] = model->grad_storage[i] = NULL;
    }}
    free(model->logit_grad);
    free(model->loss);
    for (int i = 1; i < NODES; ++i) {{
      if (node_saved[i]) {{
        model->saved_storage[i] = new_floats((size_t)saved_elements[i] * (size_t)batch);
        if (!model->saved_storage[i]) return fail(model, "out of memory for training");
      }}
      if (node_storage_train[i] == i) {{
        model->grad_storage[i] = new_floats((size_t)node_elements[i] * (size_t)batch);
        if (!model->grad_storage[i]) return fail(model, "out of memory for training");
      }}
    }}
    model->logit_grad = new_floats((size_t)CLASSES * (size_t)batch);
    model->loss = new_floats((size_t)batch);
    if (!model->logit_grad || !model->loss) return fail(model, "out of memory for training");
    model->train_capacity = batch;
  }}
  for (int i = 1; i < NODES; ++i) {{
    int64_t kept[3] = {{saved_extent[i][0], saved_extent[i][1], saved_extent[i][2]}};
    int64_t shape[3] = {{node_extent[i][0], node_extent[i][1], node_extent[i][2]}};
    free_device(&model->saved_buffer[i]);
    free_device(&model->grad_buffer[i]);
    set_layout(&model->saved_buffer[i], model->saved_dim[i], saved_rank[i], kept, 1, batch);
    if (saved_is_index[i]) model->saved_buffer[i].type.code = halide_type_int;
    model->saved_buffer[i].host = (uint8_t *)model->saved_storage[i];
    set_layout(&model->grad_buffer[i], model->grad_dim[i], node_rank[i], shape, 1, batch);
    model->grad_buffer[i].host = (uint8_t *)model->grad_storage[node_storage_train[i]];
  }}
  int64_t classes[1] = {{CLASSES}};
  free_device(&model->logit_grad_buffer);
  free_device(&model->labels_buffer);
  free_device(&model->loss_buffer);
  set_layout(&model->logit_grad_buffer, model->logit_grad_dim, 1, classes, 1, batch);
  model->logit_grad_buffer.host = (uint8_t *)model->logit_grad;
  set_layout(&model->loss_buffer, model->loss_dim, 0, NULL, 1, batch);
  model->loss_buffer.host = (uint8_t *)model->loss;
  set_layout(&model->labels_buffer, model->labels_dim, 0, NULL, 1, batch);
  model->labels_buffer.type.code = halide_type_int;
  model->labels_buffer.host = (uint8_t *)labels;
  return 0;
}}

int {p}_compute_gradients({p}_model *model, const float *input, const int32_t *labels, int batch,
                          float *loss_sum, int *correct) {{
  model->error[0] = 0;
  if (!TRAINABLE) return fail(model, untrainable_reason);
  if (!input || !labels) return fail(model, "input and labels must not be NULL");
  if (batch < 1) return fail(model, "batch must be at least 1");
  if ((int64_t)batch * node_elements[0] > 2147483647 || (int64_t)batch * saved_elements[OUTPUT_NODE] > 2147483647)
    return fail(model, "batch too large: a tensor would exceed 2^31 elements");
  for (int i = 0; i < batch; ++i)
    if (labels[i] < 0 || labels[i] >= CLASSES) {{
      snprintf(model->error, sizeof model->error, "label %d of example %d is outside [0, %d)", (int)labels[i], i, CLASSES);
      return 1;
    }}
  if (prepare(model, input, batch, 1) || prepare_training(model, labels, batch)) return 1;
  halide_message[0] = 0;
  struct halide_buffer_t *b = model->node_buffer, *w = model->param_buffer, *s = model->saved_buffer;
  struct halide_buffer_t *g = model->grad_buffer, *pg = model->grad_param_buffer;
  (void)s; (void)g; (void)pg; (void)w;
  double start = now(), end;
)C",
                                fmt::arg("p", p));
  if (!plan.untrainable.empty()) {
    out += "  (void)start; (void)end; (void)loss_sum; (void)correct;\n  return 1;\n}\n";
  } else {
    size_t index = 0;
    for (const KernelInfo& kernel : plan.training) {
      if (kernel.kind == KernelKind::Adam || kernel.kind == KernelKind::Sgd) continue;
      out += emit_call(plan, kernel, "model->train_kernel_seconds", index++);
    }
    out += R"(  if (loss_sum) {
    double total = 0;
    for (int i = 0; i < batch; ++i) total += model->loss[i];
    *loss_sum = (float)total;
  }
  if (correct) {
    const float *probabilities = (const float *)b[OUTPUT_NODE].host;
    int right = 0;
    for (int i = 0; i < batch; ++i) {
      int best = 0;
      for (int k = 1; k < CLASSES; ++k)
        if (probabilities[i * CLASSES + k] > probabilities[i * CLASSES + best]) best = k;
      right += best == labels[i];
    }
    *correct = right;
  }
  return 0;
}
)";
  }
  out += fmt::format(R"(
int {p}_train_step({p}_model *model, const float *input, const int32_t *labels, int batch, float *loss_sum,
                   int *correct) {{
  if ({p}_compute_gradients(model, input, labels, batch, loss_sum, correct)) return 1;
  model->step += 1;
)",
                     fmt::arg("p", p));
  for (const KernelInfo& kernel : plan.training) {
    if (kernel.kind != KernelKind::Adam && kernel.kind != KernelKind::Sgd) continue;
    KernelCall call = kernel_call(plan, kernel);
    std::string condition = kernel.kind == KernelKind::Adam ? "model->optimizer == 0" : "model->optimizer == 1";
    out += fmt::format("  if ({}) {{\n", condition);
    if (kernel.kind == KernelKind::Adam)
      out += "    double t = (double)model->step;\n"
             "    float lr_t = (float)(model->learning_rate * sqrt(1.0 - pow(model->beta_2, t)) / (1.0 - pow(model->beta_1, t)));\n";
    if (plan.gpu)
      for (const std::string& buffer : call.inputs) out += fmt::format("    ({})->flags |= halide_buffer_flag_host_dirty;\n", buffer);
    out += fmt::format("    if (run_flushing_denormals({}({}))) return fail(model, \"optimizer {} failed\");\n", kernel.function,
                       fmt::join(call.args, ", "), kernel.function);
    if (plan.gpu)
      for (const std::string& buffer : call.outputs)
        out += fmt::format("    if (halide_copy_to_host(NULL, {})) return fail(model, \"copy to host failed\");\n", buffer);
    out += "  }\n";
  }
  out += fmt::format("  {}_params_changed(model);\n  return 0;\n}}\n", p);
  return out;
}

// The plan's thread pool for Halide's parallel loops (plain C, no fmt escapes).
const char* const kThreadPoolC = R"C(/* Halide's parallel loops run on this pool instead of Halide's own. A training step calls
 * ~10 kernels back to back, each a few parallel loops of 0.01-0.5 ms; Halide's workers go to
 * sleep between them and every wake-up costs tens of microseconds (more in a virtual machine).
 * These workers spin for PAR_SPIN_NS after their last task before they sleep, so a step keeps
 * them awake. A parallel loop started from inside a task (nested parallelism) or from a second
 * application thread while one runs is executed serially by its caller. */
#include <unistd.h>

/* Kernels run with denormal floats flushed to zero (as TensorFlow runs its CPU kernels): on x86
 * each operation on a denormal takes a microcode assist of ~100 cycles, and Adam's moments of
 * vanishing gradients are denormal often enough to slow a step by a fifth. The caller's own
 * floating-point mode is restored after each kernel. */
static unsigned fp_flush_denormals(void) {
#if defined(__x86_64__)
  unsigned previous = __builtin_ia32_stmxcsr();
  __builtin_ia32_ldmxcsr(previous | 0x8040); /* FTZ and DAZ */
  return previous;
#elif defined(__aarch64__)
  unsigned long previous;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(previous));
  __asm__ __volatile__("msr fpcr, %0" : : "r"(previous | (1UL << 24)) : "memory"); /* FZ */
  return (unsigned)previous;
#else
  return 0;
#endif
}

static void fp_restore(unsigned previous) {
#if defined(__x86_64__)
  __builtin_ia32_ldmxcsr(previous);
#elif defined(__aarch64__)
  unsigned long value = previous;
  __asm__ __volatile__("msr fpcr, %0" : : "r"(value) : "memory");
#else
  (void)previous;
#endif
}

#define run_flushing_denormals(call) \
  __extension__({ unsigned fp_saved_ = fp_flush_denormals(); int result_ = (call); fp_restore(fp_saved_); result_; })

#define PAR_MAX_WORKERS 255
#define PAR_SPIN_NS 500000L /* 0.5 ms */
static struct {
  pthread_mutex_t lock;      /* guards sleeping workers and the thread count */
  pthread_cond_t wake;
  pthread_mutex_t busy;      /* one parallel loop at a time */
  int threads;               /* wanted, the caller included; 0 = not set yet */
  int started;               /* workers running */
  int quit;
  pthread_t worker[PAR_MAX_WORKERS];
  unsigned generation;       /* bumped by each loop (atomic) */
  unsigned start_generation; /* the generation when the newest worker was created */
  int participants;          /* workers that take tasks in this loop (the others only check in) */
  int checked_in;            /* workers done with this loop (atomic); all of them check in to
                                every loop, so none can read the fields of the next one early */
  halide_task_t task;
  void *user_context;
  uint8_t *closure;
  int min, extent;
  int next, result;          /* atomic */
} par = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};
static __thread int par_inside; /* this thread is running a task */

static void par_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static long par_now_ns(void) {
  struct timespec time;
  clock_gettime(CLOCK_MONOTONIC, &time);
  return (long)time.tv_sec * 1000000000L + time.tv_nsec;
}

/* Tasks are claimed in guided chunks (a share of what is left, never less than one), so that
 * loops of many tiny tasks do not pay a contended atomic per task, and the last tasks still
 * balance. Tasks are independent: which thread runs which changes no result. */
static void par_run_tasks(void) {
  int shares = 2 * (par.participants + 1);
  for (;;) {
    int start = __atomic_load_n(&par.next, __ATOMIC_RELAXED), count;
    do {
      if (start >= par.extent) return;
      count = (par.extent - start) / shares;
      if (count < 1) count = 1;
    } while (!__atomic_compare_exchange_n(&par.next, &start, start + count, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    for (int i = start; i < start + count; ++i) {
      if (__atomic_load_n(&par.result, __ATOMIC_RELAXED)) return; /* an earlier task failed */
      int result = par.task(par.user_context, par.min + i, par.closure);
      int none = 0; /* keep the first failure */
      if (result) __atomic_compare_exchange_n(&par.result, &none, result, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    }
  }
}

static void *par_worker(void *argument) {
  int index = (int)(intptr_t)argument;
  unsigned seen = par.start_generation;
  par_inside = 1;
  fp_flush_denormals();
  for (;;) {
    /* Spin, then sleep, until the next loop. */
    long spin_until = par_now_ns() + PAR_SPIN_NS;
    int spins = 0;
    while (__atomic_load_n(&par.generation, __ATOMIC_ACQUIRE) == seen && !__atomic_load_n(&par.quit, __ATOMIC_RELAXED)) {
      par_pause();
      if (++spins % 256 == 0 && par_now_ns() > spin_until) {
        pthread_mutex_lock(&par.lock);
        while (__atomic_load_n(&par.generation, __ATOMIC_ACQUIRE) == seen && !par.quit) pthread_cond_wait(&par.wake, &par.lock);
        pthread_mutex_unlock(&par.lock);
      }
    }
    /* A loop published as the program exits is still done (its caller waits for it). */
    if (__atomic_load_n(&par.quit, __ATOMIC_RELAXED) && __atomic_load_n(&par.generation, __ATOMIC_ACQUIRE) == seen)
      return NULL;
    seen = __atomic_load_n(&par.generation, __ATOMIC_ACQUIRE);
    if (index < par.participants) par_run_tasks();
    __atomic_fetch_add(&par.checked_in, 1, __ATOMIC_RELEASE);
  }
}

static int par_wanted_threads(void) {
  if (par.threads > 0) return par.threads;
  const char *text = getenv("HL_NUM_THREADS");
  int threads = text ? atoi(text) : 0;
  cpu_set_t allowed; /* the cores this process may run on (taskset, containers) */
  if (threads <= 0 && sched_getaffinity(0, sizeof allowed, &allowed) == 0) threads = CPU_COUNT(&allowed);
  if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  return threads < 1 ? 1 : threads > PAR_MAX_WORKERS + 1 ? PAR_MAX_WORKERS + 1 : threads;
}

static int par_serial(void *user_context, halide_task_t task, int min, int extent, uint8_t *closure) {
  for (int i = min; i < min + extent; ++i) {
    int result = task(user_context, i, closure);
    if (result) return result;
  }
  return 0;
}

static void par_after_fork_in_child(void) {
  /* The child has this thread alone: start over without workers. */
  pthread_mutex_init(&par.lock, NULL);
  pthread_mutex_init(&par.busy, NULL);
  pthread_cond_init(&par.wake, NULL);
  par.started = 0;
}

static int par_for(void *user_context, halide_task_t task, int min, int extent, uint8_t *closure) {
  if (extent <= 1 || par_inside || __atomic_load_n(&par.quit, __ATOMIC_RELAXED)) return par_serial(user_context, task, min, extent, closure);
  if (pthread_mutex_trylock(&par.busy) != 0) return par_serial(user_context, task, min, extent, closure);
  int workers = par_wanted_threads() - 1;
  if (workers > extent - 1) workers = extent - 1;
  if (workers > par.started) {
    static int fork_handler;
    if (!fork_handler) fork_handler = pthread_atfork(NULL, NULL, par_after_fork_in_child) == 0;
    pthread_mutex_lock(&par.lock);
    par.start_generation = __atomic_load_n(&par.generation, __ATOMIC_RELAXED);
    while (par.started < workers &&
           pthread_create(&par.worker[par.started], NULL, par_worker, (void *)(intptr_t)par.started) == 0)
      par.started += 1;
    pthread_mutex_unlock(&par.lock);
    if (workers > par.started) workers = par.started;
  }
  if (workers <= 0) {
    pthread_mutex_unlock(&par.busy);
    return par_serial(user_context, task, min, extent, closure);
  }
  par.task = task;
  par.user_context = user_context;
  par.closure = closure;
  par.min = min;
  par.extent = extent;
  par.participants = workers;
  __atomic_store_n(&par.next, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&par.result, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&par.checked_in, 0, __ATOMIC_RELAXED);
  pthread_mutex_lock(&par.lock);
  __atomic_fetch_add(&par.generation, 1, __ATOMIC_RELEASE); /* publishes the loop */
  pthread_cond_broadcast(&par.wake);
  pthread_mutex_unlock(&par.lock);
  par_inside = 1;
  par_run_tasks();
  par_inside = 0;
  /* Every worker checks in before the loop's fields may change. */
  for (int spins = 1; __atomic_load_n(&par.checked_in, __ATOMIC_ACQUIRE) < par.started; ++spins) {
    par_pause();
    if (spins % 1024 == 0) sched_yield(); /* a worker may be waiting for a core */
  }
  int result = __atomic_load_n(&par.result, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&par.busy);
  return result;
}

static void par_set_threads(int threads) {
  pthread_mutex_lock(&par.busy);
  par.threads = threads < 0 ? 0 : threads > PAR_MAX_WORKERS + 1 ? PAR_MAX_WORKERS + 1 : threads;
  pthread_mutex_unlock(&par.busy);
}

/* Runs when the program exits or the shared library is unloaded: no worker may outlive the code. */
__attribute__((destructor)) static void par_stop(void) {
  pthread_mutex_lock(&par.lock);
  __atomic_store_n(&par.quit, 1, __ATOMIC_RELAXED);
  pthread_cond_broadcast(&par.wake);
  pthread_mutex_unlock(&par.lock);
  for (int i = 0; i < par.started; ++i) pthread_join(par.worker[i], NULL);
  par.started = 0;
}
)C";

std::string generate_plan_c(const Plan& plan) {
  const Graph& graph = plan.graph;
  const std::string& p = plan.prefix;
  size_t node_count = graph.nodes.size();
  std::string out;
  out += fmt::format("/* Execution plan of '{}', generated by cnnc {}. Do not edit. */\n", p, CNNC_VERSION);
  out += "#define _GNU_SOURCE\n#include <sched.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <time.h>\n#include <math.h>\n#include <pthread.h>\n";
  out += "#include \"HalideRuntime.h\"\n";
  out += fmt::format("#include \"{}.h\"\n\n", p);

  for (const KernelInfo& kernel : plan.kernels)
    out += fmt::format("int {}({});\n", kernel.function, fmt::join(kernel_call(plan, kernel).types, ", "));
  for (const KernelInfo& kernel : plan.training)
    if (!kernel.reuses_inference_kernel)
      out += fmt::format("int {}({});\n", kernel.function, fmt::join(kernel_call(plan, kernel).types, ", "));

  // Static tables.
  std::vector<std::string> names, ranks, extents, storage, elements;
  for (const Node& node : graph.nodes) {
    names.push_back(c_string(node.name));
    ranks.push_back(std::to_string(node.shape.size()));
    std::vector<std::string> dims;
    for (auto it = node.shape.rbegin(); it != node.shape.rend(); ++it) dims.push_back(std::to_string(*it));
    while (dims.size() < 3) dims.push_back("1");
    extents.push_back(fmt::format("{{{}}}", fmt::join(dims, ", ")));
    storage.push_back(std::to_string(plan.storage_of[node.id]));
    elements.push_back(std::to_string(shape_elements(node.shape)));
  }
  out += fmt::format("\n#define NODES {}\n#define OUTPUT_NODE {}\n", node_count, graph.output);
  out += fmt::format("static const char *const node_names[NODES] = {{{}}};\n", fmt::join(names, ", "));
  out += fmt::format("static const int node_rank[NODES] = {{{}}};\n", fmt::join(ranks, ", "));
  out += fmt::format("static const int node_extent[NODES][3] = {{{}}}; /* Halide order: c, x, y */\n",
                     fmt::join(extents, ", "));
  out += fmt::format("static const int node_storage[NODES] = {{{}}}; /* the node owning the memory */\n",
                     fmt::join(storage, ", "));
  out += fmt::format("static const int64_t node_elements[NODES] = {{{}}};\n", fmt::join(elements, ", "));
  std::vector<std::string> train_storage, saved_flags, saved_extents, saved_ranks, saved_elements;
  for (const Node& node : graph.nodes) {
    train_storage.push_back(std::to_string(plan.train_storage_of[node.id]));
    saved_flags.push_back(plan.has_saved[node.id] ? "1" : "0");
    const Shape& kept = node.unfused_shape.empty() ? node.shape : saved_shape(node);
    std::vector<std::string> dims;
    for (auto it = kept.rbegin(); it != kept.rend(); ++it) dims.push_back(std::to_string(*it));
    while (dims.size() < 3) dims.push_back("1");
    saved_extents.push_back(fmt::format("{{{}}}", fmt::join(dims, ", ")));
    saved_ranks.push_back(std::to_string(kept.size()));
    saved_elements.push_back(std::to_string(shape_elements(kept)));
  }
  out += fmt::format("static const int node_storage_train[NODES] = {{{}}}; /* while training */\n",
                     fmt::join(train_storage, ", "));
  out += fmt::format("static const int node_saved[NODES] = {{{}}}; /* keeps a tensor for backward */\n",
                     fmt::join(saved_flags, ", "));
  out += fmt::format("static const int saved_rank[NODES] = {{{}}};\n", fmt::join(saved_ranks, ", "));
  out += fmt::format("static const int saved_extent[NODES][3] = {{{}}};\n", fmt::join(saved_extents, ", "));
  out += fmt::format("static const int64_t saved_elements[NODES] = {{{}}};\n", fmt::join(saved_elements, ", "));
  std::vector<std::string> saved_index;
  for (const Node& node : graph.nodes) saved_index.push_back(saves_pool_index(node) ? "1" : "0");
  out += fmt::format("static const int saved_is_index[NODES] = {{{}}}; /* int32 window indices */\n",
                     fmt::join(saved_index, ", "));
  int64_t classes = shape_elements(graph.nodes[graph.output].shape);
  out += fmt::format("#define CLASSES {}\n", classes);
  out += fmt::format("#define TRAINABLE {}\nstatic const char *const untrainable_reason = {};\n",
                     plan.untrainable.empty() ? 1 : 0, c_string(plan.untrainable));
  std::vector<std::string> train_names;
  for (const KernelInfo& kernel : plan.training)
    if (kernel.kind != KernelKind::Adam && kernel.kind != KernelKind::Sgd) train_names.push_back(c_string(kernel.function));
  size_t train_kernels = train_names.size();
  if (train_names.empty()) train_names.push_back("0");
  out += fmt::format("#define TRAIN_KERNELS {}\nstatic const char *const train_kernel_names[{}] = {{{}}};\n",
                     train_kernels, train_names.size(), fmt::join(train_names, ", "));

  std::vector<std::string> pnames, pranks, pshapes, poffsets, pelements;
  for (size_t i = 0; i < plan.params.size(); ++i) {
    const Node& node = graph.nodes[plan.params[i].first];
    const ParamSpec& param = node.params[plan.params[i].second];
    pnames.push_back(c_string(param_full_name(node, param)));
    pranks.push_back(std::to_string(param.shape.size()));
    std::vector<std::string> dims;
    for (int64_t d : param.shape) dims.push_back(std::to_string(d));
    while (dims.size() < 4) dims.push_back("1");
    pshapes.push_back(fmt::format("{{{}}}", fmt::join(dims, ", ")));
    poffsets.push_back(std::to_string(plan.param_offsets[i]));
    pelements.push_back(std::to_string(shape_elements(param.shape)));
  }
  size_t param_count = plan.params.size();
  out += fmt::format("#define PARAMS {}\n#define PARAM_FLOATS {}\n", param_count, plan.param_floats);
  if (param_count == 0) {
    pnames = {"0"}, pranks = {"0"}, pshapes = {"{1, 1, 1, 1}"}, poffsets = {"0"}, pelements = {"0"};
  }
  size_t table = std::max<size_t>(param_count, 1);
  out += fmt::format("static const char *const param_names[{}] = {{{}}};\n", table, fmt::join(pnames, ", "));
  out += fmt::format("static const int param_rank[{}] = {{{}}};\n", table, fmt::join(pranks, ", "));
  out += fmt::format("static const int64_t param_shape[{}][4] = {{{}}}; /* Keras order */\n", table,
                     fmt::join(pshapes, ", "));
  out += fmt::format("static const int64_t param_offset[{}] = {{{}}};\n", table, fmt::join(poffsets, ", "));
  out += fmt::format("static const int64_t param_elements[{}] = {{{}}};\n", table, fmt::join(pelements, ", "));
  out += fmt::format("static const int gpu = {};\n", plan.gpu ? 1 : 0);
  std::vector<std::string> kernel_names;
  for (const KernelInfo& kernel : plan.kernels) kernel_names.push_back(c_string(kernel.function));
  if (kernel_names.empty()) kernel_names.push_back("0");
  out += fmt::format("#define KERNELS {}\nstatic const char *const kernel_names[{}] = {{{}}};\n\n", plan.kernels.size(),
                     kernel_names.size(), fmt::join(kernel_names, ", "));

  out += fmt::format(R"(struct {p}_model {{
  int capacity;                          /* batch size the activations are allocated for */
  float *params;
  float *storage[NODES];                 /* owned activation memory (NULL for views and the input) */
  struct halide_buffer_t node_buffer[NODES];
  struct halide_dimension_t node_dim[NODES][4];
  struct halide_buffer_t param_buffer[PARAMS > 0 ? PARAMS : 1];
  struct halide_dimension_t param_dim[PARAMS > 0 ? PARAMS : 1][4];
  const float *input;
  double kernel_seconds[KERNELS > 0 ? KERNELS : 1];
  char error[1024];

  /* Training: allocated on first use. */
  int train_capacity;
  float *saved_storage[NODES], *grad_storage[NODES];
  struct halide_buffer_t saved_buffer[NODES], grad_buffer[NODES];
  struct halide_dimension_t saved_dim[NODES][4], grad_dim[NODES][4];
  float *logit_grad, *loss;
  struct halide_buffer_t logit_grad_buffer, labels_buffer, loss_buffer;
  struct halide_dimension_t logit_grad_dim[2], labels_dim[1], loss_dim[1];
  float *grads, *state[2];                  /* PARAM_FLOATS each: gradients, optimizer state */
  struct halide_buffer_t grad_param_buffer[PARAMS > 0 ? PARAMS : 1];
  struct halide_dimension_t grad_param_dim[PARAMS > 0 ? PARAMS : 1][4];
  struct halide_buffer_t flat[4];           /* params, grads, state 0, state 1 as flat vectors */
  struct halide_dimension_t flat_dim[4][1];
  int optimizer;                            /* 0: adam, 1: sgd */
  float learning_rate, beta_1, beta_2, epsilon, momentum;
  int64_t step;
  uint32_t seed;
  double train_kernel_seconds[TRAIN_KERNELS > 0 ? TRAIN_KERNELS : 1];
}};

/* Zeroed float storage aligned to 128 bytes, as Halide aligns its own allocations (wide vector
 * loads may assume it). Freed with free(). */
static float *new_floats(size_t count) {{
  void *memory = NULL;
  if (posix_memalign(&memory, 128, (count > 0 ? count : 1) * sizeof(float)) != 0) return NULL;
  memset(memory, 0, (count > 0 ? count : 1) * sizeof(float));
  return (float *)memory;
}}

static double now(void) {{
  struct timespec time;
  clock_gettime(CLOCK_MONOTONIC, &time);
  return (double)time.tv_sec + 1e-9 * (double)time.tv_nsec;
}}

/* Halide allocates its intermediate buffers on every call. Freed blocks are kept for reuse, so
 * that a training step does not page-fault fresh memory each time: the sizes repeat exactly. */
#define POOL_SLOTS 64
#define POOL_HEADER 128 /* keeps Halide's 128-byte alignment and remembers the size */
static struct {{ void *block; size_t size; }} pool[POOL_SLOTS];
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

#define POOL_MIN_BYTES (64 << 10) /* smaller blocks (per-thread tiles) go straight to malloc */

static void *pool_malloc(void *user_context, size_t size) {{
  (void)user_context;
  if (size < POOL_MIN_BYTES) {{
    void *memory = NULL;
    if (posix_memalign(&memory, 128, size + POOL_HEADER) != 0) return NULL;
    *(size_t *)memory = size;
    return (char *)memory + POOL_HEADER;
  }}
  pthread_mutex_lock(&pool_lock);
  for (int i = 0; i < POOL_SLOTS; ++i)
    if (pool[i].block && pool[i].size == size) {{
      void *block = pool[i].block;
      pool[i].block = NULL;
      pthread_mutex_unlock(&pool_lock);
      return block;
    }}
  pthread_mutex_unlock(&pool_lock);
  void *memory = NULL;
  if (posix_memalign(&memory, 128, size + POOL_HEADER) != 0) return NULL;
  *(size_t *)memory = size;
  return (char *)memory + POOL_HEADER;
}}

static void pool_free(void *user_context, void *block) {{
  (void)user_context;
  if (!block) return;
  size_t size = *(size_t *)((char *)block - POOL_HEADER);
  if (size < POOL_MIN_BYTES) {{
    free((char *)block - POOL_HEADER);
    return;
  }}
  pthread_mutex_lock(&pool_lock);
  for (int i = 0; i < POOL_SLOTS; ++i)
    if (!pool[i].block) {{
      pool[i].block = block;
      pool[i].size = size;
      pthread_mutex_unlock(&pool_lock);
      return;
    }}
  pthread_mutex_unlock(&pool_lock);
  free((char *)block - POOL_HEADER);
}}

{thread_pool}
/* Halide reports errors through one global handler per runtime; keep the last message. */
static char halide_message[1024];
static pthread_mutex_t halide_message_lock = PTHREAD_MUTEX_INITIALIZER; /* tasks may fail at once */
static void on_halide_error(void *user_context, const char *message) {{
  (void)user_context;
  pthread_mutex_lock(&halide_message_lock);
  if (!halide_message[0]) snprintf(halide_message, sizeof halide_message, "%s", message); /* the first */
  pthread_mutex_unlock(&halide_message_lock);
}}

static int fail({p}_model *model, const char *what) {{
  snprintf(model->error, sizeof model->error, "%s%s%s", what, halide_message[0] ? ": " : "", halide_message);
  halide_message[0] = 0;
  return 1;
}}

static void set_layout(struct halide_buffer_t *buffer, struct halide_dimension_t *dim, int rank,
                       const int64_t *keras_shape_reversed, int batched, int batch) {{
  int32_t stride = 1;
  memset(buffer, 0, sizeof *buffer);
  buffer->type.code = halide_type_float;
  buffer->type.bits = 32;
  buffer->type.lanes = 1;
  buffer->dimensions = rank + (batched ? 1 : 0);
  buffer->dim = dim;
  for (int d = 0; d < rank; ++d) {{
    dim[d].min = 0;
    dim[d].extent = (int32_t)keras_shape_reversed[d];
    dim[d].stride = stride;
    dim[d].flags = 0;
    stride *= (int32_t)keras_shape_reversed[d];
  }}
  if (batched) {{
    dim[rank].min = 0;
    dim[rank].extent = batch;
    dim[rank].stride = stride;
    dim[rank].flags = 0;
  }}
}}

{p}_model *{p}_create(void) {{
  {p}_model *model = ({p}_model *)calloc(1, sizeof({p}_model));
  if (!model) return NULL;
  halide_set_error_handler(on_halide_error);
  halide_set_custom_malloc(pool_malloc);
  halide_set_custom_free(pool_free);
  halide_set_custom_do_par_for(par_for);
  model->params = new_floats(PARAM_FLOATS > 0 ? PARAM_FLOATS : 1);
  if (!model->params) {{
    free(model);
    return NULL;
  }}
  for (int i = 0; i < PARAMS; ++i) {{
    int64_t reversed[4];
    for (int d = 0; d < param_rank[i]; ++d) reversed[d] = param_shape[i][param_rank[i] - 1 - d];
    set_layout(&model->param_buffer[i], model->param_dim[i], param_rank[i], reversed, 0, 0);
    model->param_buffer[i].host = (uint8_t *)(model->params + param_offset[i]);
    model->param_buffer[i].flags = halide_buffer_flag_host_dirty;
  }}
  /* Keras defaults. */
  model->optimizer = 0;
  model->learning_rate = 0.001f;
  model->beta_1 = 0.9f;
  model->beta_2 = 0.999f;
  model->epsilon = 1e-7f;
  model->momentum = 0.0f;
  return model;
}}

static void free_device(struct halide_buffer_t *buffer) {{
  if (gpu && buffer->device) halide_device_free(NULL, buffer);
}}

void {p}_destroy({p}_model *model) {{
  if (!model) return;
  for (int i = 0; i < NODES; ++i) {{
    free_device(&model->node_buffer[i]);
    free(model->storage[i]);
  }}
  for (int i = 0; i < PARAMS; ++i) free_device(&model->param_buffer[i]);
  for (int i = 0; i < NODES; ++i) {{
    free_device(&model->saved_buffer[i]);
    free_device(&model->grad_buffer[i]);
    free(model->saved_storage[i]);
    free(model->grad_storage[i]);
  }}
  for (int i = 0; i < PARAMS; ++i) free_device(&model->grad_param_buffer[i]);
  for (int i = 0; i < 4; ++i) free_device(&model->flat[i]);
  free_device(&model->logit_grad_buffer);
  free_device(&model->labels_buffer);
  free_device(&model->loss_buffer);
  free(model->logit_grad);
  free(model->loss);
  free(model->grads);
  free(model->state[0]);
  free(model->state[1]);
  free(model->params);
  free(model);
}}

int {p}_param_count(void) {{ return PARAMS; }}
const char *{p}_param_name(int index) {{ return index >= 0 && index < PARAMS ? param_names[index] : NULL; }}
int {p}_param_rank(int index) {{ return index >= 0 && index < PARAMS ? param_rank[index] : 0; }}
int64_t {p}_param_dim(int index, int axis) {{
  return index >= 0 && index < PARAMS && axis >= 0 && axis < param_rank[index] ? param_shape[index][axis] : 0;
}}
int64_t {p}_param_elements(int index) {{ return index >= 0 && index < PARAMS ? param_elements[index] : 0; }}
float *{p}_param_data({p}_model *model, int index) {{
  return index >= 0 && index < PARAMS ? model->params + param_offset[index] : NULL;
}}
void {p}_params_changed({p}_model *model) {{
  for (int i = 0; i < PARAMS; ++i) model->param_buffer[i].flags |= halide_buffer_flag_host_dirty;
}}

int {p}_node_count(void) {{ return NODES; }}
const char *{p}_node_name(int node) {{ return node >= 0 && node < NODES ? node_names[node] : NULL; }}
int64_t {p}_node_elements(int node) {{ return node >= 0 && node < NODES ? node_elements[node] : 0; }}
const float *{p}_node_output(const {p}_model *model, int node) {{
  if (node < 0 || node >= NODES) return NULL;
  return (const float *)model->node_buffer[node].host;
}}
const char *{p}_error(const {p}_model *model) {{ return model->error; }}
int {p}_kernel_count(void) {{ return KERNELS; }}
const char *{p}_kernel_name(int kernel) {{ return kernel >= 0 && kernel < KERNELS ? kernel_names[kernel] : NULL; }}
double {p}_kernel_seconds(const {p}_model *model, int kernel) {{
  return kernel >= 0 && kernel < KERNELS ? model->kernel_seconds[kernel] : 0.0;
}}
void {p}_set_threads(int threads) {{
  par_set_threads(threads);
  halide_set_num_threads(threads);
}}

/* (Re)describes every node's buffer for this batch, allocating when the batch grows. */
static int prepare({p}_model *model, const float *input, int batch, int training) {{
  if (batch > model->capacity) {{
    for (int i = 0; i < NODES; ++i) {{
      free_device(&model->node_buffer[i]);
      free(model->storage[i]);
      model->storage[i] = NULL;
    }}
    for (int i = 1; i < NODES; ++i) {{
      if (node_storage_train[i] != i) continue; /* a superset of the inference owners */
      model->storage[i] = new_floats((size_t)node_elements[i] * (size_t)batch);
      if (!model->storage[i]) return fail(model, "out of memory for activations");
    }}
    model->capacity = batch;
  }}
  for (int i = 0; i < NODES; ++i) {{
    int64_t reversed[3] = {{node_extent[i][0], node_extent[i][1], node_extent[i][2]}};
    free_device(&model->node_buffer[i]);
    set_layout(&model->node_buffer[i], model->node_dim[i], node_rank[i], reversed, 1, batch);
    int owner = training ? node_storage_train[i] : node_storage[i];
    model->node_buffer[i].host = owner == 0 ? (uint8_t *)input : (uint8_t *)model->storage[owner];
  }}
  return 0;
}}

)",
                     fmt::arg("p", p), fmt::arg("thread_pool", kThreadPoolC));

  out += fmt::format("int {}_forward({}_model *model, const float *input, int batch, float *output) {{\n", p, p);
  out += "  model->error[0] = 0;\n";
  out += "  if (!input || !output) return fail(model, \"input and output must not be NULL\");\n";
  out += "  if (batch < 1) return fail(model, \"batch must be at least 1\");\n";
  out += "  if ((int64_t)batch * node_elements[0] > 2147483647 || (int64_t)batch * node_elements[OUTPUT_NODE] > "
         "2147483647)\n    return fail(model, \"batch too large: a tensor would exceed 2^31 elements\");\n";
  out += "  if (prepare(model, input, batch, 0)) return 1;\n";
  out += "  halide_message[0] = 0;\n";
  out += "  struct halide_buffer_t *b = model->node_buffer;\n";
  out += "  struct halide_buffer_t *w = model->param_buffer;\n";
  out += "  double start = now(), end;\n";
  for (size_t k = 0; k < plan.kernels.size(); ++k) out += emit_call(plan, plan.kernels[k], "model->kernel_seconds", k);
  out += "  memcpy(output, b[OUTPUT_NODE].host, (size_t)batch * (size_t)node_elements[OUTPUT_NODE] * sizeof(float));\n";
  out += "  return 0;\n}\n";
  out += generate_training_c(plan);
  return out;
}

nlohmann::json shape_json(const Shape& shape) { return nlohmann::json(shape); }

// FLOPs per example of a training kernel, counted like the forward ones: a backward conv2d or
// dense does its forward FLOPs once for the weight gradient and once more for the input gradient.
int64_t training_kernel_flops(const Graph& graph, const KernelInfo& kernel) {
  const Node& node = graph.nodes[kernel.node];
  switch (kernel.kind) {
    case KernelKind::Forward:
    case KernelKind::ForwardTrain:
      return node.flops;
    case KernelKind::Backward: {
      bool input_grad = std::find(kernel.input_grad.begin(), kernel.input_grad.end(), true) != kernel.input_grad.end();
      if (node.op == "conv2d" || node.op == "dense") return node.flops * (input_grad ? 2 : 1);
      return node.flops;
    }
    case KernelKind::Loss:
      return 4 * shape_elements(node.shape);
    case KernelKind::Adam:
    case KernelKind::Sgd:
      return 0;  // per step, not per example
  }
  return 0;
}

nlohmann::json generate_manifest(const Plan& plan, const TargetInfo& target, const std::string& fingerprint) {
  const Graph& graph = plan.graph;
  nlohmann::json manifest;
  manifest["format"] = "cnnc-package-1";
  manifest["cnnc_version"] = CNNC_VERSION;
  manifest["halide_version"] = halide_version();
  manifest["model"] = graph.name;
  manifest["model_file"] = graph.file;
  manifest["model_hash"] = fingerprint;
  manifest["target"] = {{"name", target.name}, {"halide", target.halide}, {"gpu", target.gpu}, {"arch", target.arch}};
  manifest["layout"] = "NHWC float32; Halide dims (c, x, y, n), vectors (i, n); batch dynamic";
  manifest["input"] = {{"node", 0}, {"shape", shape_json(graph.nodes[0].shape)}};
  manifest["output"] = {{"node", graph.output}, {"shape", shape_json(graph.nodes[graph.output].shape)}};
  nlohmann::json nodes = nlohmann::json::array();
  for (const Node& node : graph.nodes) {
    nlohmann::json fused = nlohmann::json::array();
    for (const Node::FusedOp& op : node.fused) fused.push_back({{"op", op.op}, {"layer", op.name}});
    nodes.push_back({{"id", node.id},
                     {"name", node.name},
                     {"op", node.op},
                     {"shape", shape_json(node.shape)},
                     {"inputs", node.inputs},
                     {"fused", fused},
                     {"storage", plan.storage_of[node.id]},
                     {"view", node.is_view},
                     {"flops", node.flops}});
  }
  manifest["buffers"] = nodes;
  nlohmann::json params = nlohmann::json::array();
  for (size_t i = 0; i < plan.params.size(); ++i) {
    const Node& node = graph.nodes[plan.params[i].first];
    const ParamSpec& param = node.params[plan.params[i].second];
    params.push_back({{"name", param_full_name(node, param)},
                      {"layer", node.name},
                      {"shape", shape_json(param.shape)},
                      {"offset", plan.param_offsets[i]},
                      {"trainable", param.trainable}});
  }
  manifest["params"] = params;
  manifest["param_floats"] = plan.param_floats;
  nlohmann::json kernels = nlohmann::json::array();
  for (const KernelInfo& kernel : plan.kernels) {
    std::vector<std::string> arguments;
    for (size_t i = 0; i < kernel.inputs.size(); ++i) arguments.push_back(fmt::format("input{}", i));
    for (const std::string& name : kernel.params) arguments.push_back(name);
    arguments.push_back("output");
    const Node& node = graph.nodes[kernel.node];
    nlohmann::json fused = nlohmann::json::array();
    for (const Node::FusedOp& op : node.fused) fused.push_back(op.op);
    kernels.push_back({{"function", kernel.function},
                       {"node", kernel.node},
                       {"op", node.op},
                       {"fused", fused},
                       {"arguments", arguments},
                       {"inputs", kernel.inputs},
                       {"output", kernel.node},
                       {"flops_per_example", node.flops},
                       {"schedule", {{"origin", kernel.schedule_origin}, {"knobs", kernel.knobs.str()},
                                     {"description", kernel.schedule}}}});
  }
  manifest["kernels"] = kernels;
  manifest["trainable"] = plan.untrainable.empty();
  if (!plan.untrainable.empty()) manifest["untrainable_reason"] = plan.untrainable;
  static const char* kind_names[] = {"forward", "forward_train", "backward", "loss", "adam", "sgd"};
  nlohmann::json training = nlohmann::json::array();
  for (const KernelInfo& kernel : plan.training)
    training.push_back({{"function", kernel.function},
                        {"kind", kind_names[int(kernel.kind)]},
                        {"node", kernel.node},
                        {"flops_per_example", training_kernel_flops(graph, kernel)},
                        {"schedule", {{"origin", kernel.schedule_origin}, {"knobs", kernel.knobs.str()},
                                      {"description", kernel.schedule}}}});
  manifest["training_kernels"] = training;
  std::vector<std::string> order;
  for (const KernelInfo& kernel : plan.kernels) order.push_back(kernel.function);
  manifest["plan"] = order;
  return manifest;
}

std::string temporary_name(const std::string& base) {
  std::random_device random;
  return fmt::format("{}.tmp-{}-{:08x}", base, getpid(), random());
}

void copy_package(const std::string& from, const std::string& to) {
  fs::create_directories(to);
  for (const fs::directory_entry& entry : fs::directory_iterator(from)) {
    if (!entry.is_regular_file()) continue;
    std::string name = entry.path().filename().string();
    if (name.rfind("build.", 0) == 0 || entry.path().extension() == ".o") continue;
    fs::path target = fs::path(to) / name;
    fs::path temporary = temporary_name(target.string());
    fs::copy_file(entry.path(), temporary, fs::copy_options::overwrite_existing);
    fs::rename(temporary, target);
  }
}

}  // namespace

std::vector<KernelInfo> plan_kernels(const Graph& graph) {
  std::vector<KernelInfo> kernels;
  for (const Node& node : graph.nodes) {
    if (node.id == 0 || node.is_view) continue;
    KernelInfo kernel;
    kernel.function = fmt::format("{}_k{}_{}", graph.name, node.id, node.name);
    kernel.node = node.id;
    kernel.inputs = node.inputs;
    for (const ParamSpec& param : node.params) kernel.params.push_back(param.name);
    kernels.push_back(kernel);
  }
  return kernels;
}

std::string ScheduleKnobs::str() const {
  if (!autoscheduler.empty()) return "autoscheduler=" + autoscheduler;
  std::vector<std::string> parts;
  if (channel_vectors > 0) parts.push_back(fmt::format("channel_vectors={}", channel_vectors));
  if (pixel_tile > 0) parts.push_back(fmt::format("pixel_tile={}", pixel_tile));
  if (batch_chunks > 0) parts.push_back(fmt::format("batch_chunks={}", batch_chunks));
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
    else
      throw UserError(SourceLoc{"schedule", 0, 0}, fmt::format("unknown schedule knob '{}'", word));
  }
  return knobs;
}

std::string kernel_signature(const Graph& graph, const KernelInfo& kernel) {
  static const char* kinds[] = {"forward", "forward_train", "backward", "loss", "adam", "sgd"};
  std::string text = kinds[int(kernel.kind)];
  std::string revision = fmt::format(" schedules=r{}", kScheduleRevision);
  if (kernel.kind == KernelKind::Adam || kernel.kind == KernelKind::Sgd)
    return text + fmt::format(" params={}", kernel.param_floats) + revision;
  const Node& node = graph.nodes[kernel.node];
  text += " " + node.op;
  for (auto& [key, value] : node.attrs.values()) {
    if (auto* i = std::get_if<int64_t>(&value)) text += fmt::format(" {}={}", key, *i);
    else if (auto* p = std::get_if<std::pair<int64_t, int64_t>>(&value)) text += fmt::format(" {}={}x{}", key, p->first, p->second);
    else if (auto* d = std::get_if<double>(&value)) text += fmt::format(" {}={}", key, *d);
    else if (auto* b = std::get_if<bool>(&value)) text += fmt::format(" {}={}", key, *b);
    else text += fmt::format(" {}={}", key, std::get<std::string>(value));
  }
  for (int input : node.inputs) text += fmt::format(" in=[{}]", fmt::join(graph.nodes[input].shape, ","));
  text += fmt::format(" out=[{}] unfused=[{}]", fmt::join(node.shape, ","), fmt::join(node.unfused_shape, ","));
  for (const Node::FusedOp& op : node.fused) {
    text += " +" + op.op;
    if (op.attrs.has("size"))
      text += fmt::format("({}x{}/{}x{} {})", op.attrs.get_pair("size").first, op.attrs.get_pair("size").second,
                          op.attrs.get_pair("stride").first, op.attrs.get_pair("stride").second, op.attrs.get_string("padding"));
  }
  if (kernel.has_saved) text += " saved";
  if (kernel.from_logits) text += " from_logits";
  for (size_t i = 0; i < kernel.input_grad.size(); ++i)
    text += fmt::format(" g{}={}{}", i, kernel.input_grad[i] ? 1 : 0, kernel.accumulate[i] ? "+" : "");
  return text + revision;
}

bool node_keeps_saved(const Node& node, bool is_loss_node) {
  for (const Node::FusedOp& op : node.fused) {
    if (op.op == "maxpool2d" || op.op == "avgpool2d") return true;
    if (op.op == "softmax" && is_loss_node) return true;
  }
  return false;
}

bool saves_pool_index(const Node& node) {
  if (node.op != "conv2d" || node.inputs.empty()) return false;
  for (const Node::FusedOp& op : node.fused) {
    if (op.op != "maxpool2d") continue;
    return op.attrs.get_pair("size") == op.attrs.get_pair("stride") && op.attrs.get_string("padding") == "valid";
  }
  return false;
}

const Shape& saved_shape(const Node& node) { return saves_pool_index(node) ? node.shape : node.unfused_shape; }

std::optional<UserError> training_blocker(const Graph& graph) {
  const Node& out = graph.nodes[graph.output];
  bool softmax = out.op == "softmax" || (!out.fused.empty() && out.fused.back().op == "softmax");
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

std::vector<KernelInfo> plan_training_kernels(const Graph& graph, int64_t param_floats) {
  CNNC_ASSERT(training_unsupported_reason(graph).empty(), "planning training for an untrainable graph");
  std::vector<KernelInfo> kernels;
  int loss_node = graph.output;
  std::vector<KernelInfo> inference = plan_kernels(graph);
  // Training forward: the inference kernel where nothing needs keeping, else a training variant.
  for (const Node& node : graph.nodes) {
    if (node.id == 0 || node.op == "flatten") continue;
    KernelInfo kernel;
    kernel.node = node.id;
    kernel.inputs = node.inputs;
    for (const ParamSpec& param : node.params) kernel.params.push_back(param.name);
    kernel.has_saved = node_keeps_saved(node, node.id == loss_node);
    if (kernel.has_saved || node.op == "dropout" || node.op == "batchnorm") {
      kernel.kind = KernelKind::ForwardTrain;
      kernel.function = fmt::format("{}_t{}_{}", graph.name, node.id, node.name);
    } else {
      kernel.kind = KernelKind::Forward;
      kernel.reuses_inference_kernel = true;
      for (const KernelInfo& k : inference)
        if (k.node == node.id) kernel.function = k.function;
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
  std::vector<int> owner(graph.nodes.size());
  for (const Node& node : graph.nodes) owner[node.id] = node.op == "flatten" ? owner[node.inputs[0]] : node.id;
  std::vector<bool> written(graph.nodes.size(), false);
  written[owner[loss_node]] = true;  // the loss writes the gradient the output node starts from
  for (int id = int(graph.nodes.size()) - 1; id >= 1; --id) {
    const Node& node = graph.nodes[id];
    if (node.op == "flatten") continue;
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

std::string model_fingerprint(const Graph& graph) {
  std::string text = format_graph(graph);
  text = text.substr(text.find('\n') + 1);  // drop the header, which names the file
  for (const Node& node : graph.nodes)
    for (const ParamSpec& param : node.params) text += fmt::format("{}.{} {}\n", node.name, param.name, fmt::join(param.shape, "x"));
  return hash_hex(text);
}

std::string cache_directory() {
  if (const char* dir = std::getenv("CNNC_CACHE"); dir && *dir) return dir;
  if (const char* dir = std::getenv("XDG_CACHE_HOME"); dir && *dir) return std::string(dir) + "/cnnc";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/cnnc";
  return "/tmp/cnnc-cache";
}

void apply_tuning(const Graph& graph, std::vector<KernelInfo>& kernels, const TargetInfo& target) {
  std::string path = TuningDb::default_path(cache_directory());
  std::error_code ignored;
  if (!fs::exists(path, ignored)) return;  // nothing tuned yet: never create the database here
  TuningDb db(path);
  for (KernelInfo& kernel : kernels) {
    if (kernel.reuses_inference_kernel) continue;
    std::optional<Measurement> best = db.best(kernel_signature(graph, kernel), target.halide, halide_version());
    if (!best || best->candidate == "default") continue;
    kernel.knobs = ScheduleKnobs::parse(best->candidate);
    kernel.schedule_origin = best->origin;
  }
}

PackageResult build_package(const Graph& graph, const BuildOptions& options) {
  auto start = std::chrono::steady_clock::now();
  TargetInfo target = resolve_target(options.target);
  std::string fingerprint = model_fingerprint(graph);
  // The schedules: the tuning database's best where it has one, else the defaults.
  std::vector<KernelInfo> kernels = plan_kernels(graph);
  Plan plan = make_plan(graph, kernels, target.gpu);
  if (options.use_tuning) {
    apply_tuning(graph, kernels, target);
    apply_tuning(graph, plan.training, target);
  }
  std::string schedules;
  for (const KernelInfo& kernel : kernels) schedules += kernel.knobs.str() + ";";
  for (const KernelInfo& kernel : plan.training) schedules += kernel.knobs.str() + ";";
  PackageResult result;
  // The build stamps of both code generators (kernels and plan) change whenever they are
  // recompiled, so that packages from an older cnnc are never reused.
  result.cache_key = hash_hex(fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}", graph.name, fingerprint, target.halide, CNNC_VERSION,
                                          halide_version(), kCodegenRevision, codegen_build_stamp(),
                                          __DATE__ " " __TIME__, schedules));
  std::string entry = cache_directory() + "/packages/" + graph.name + "-" + result.cache_key;
  auto finish = [&](const std::string& dir) {
    result.dir = dir;
    if (!options.output_dir.empty()) {
      copy_package(dir, options.output_dir);
      result.dir = options.output_dir;
    }
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
  };
  std::error_code ignored;
  if (options.use_cache && fs::exists(entry + "/manifest.json", ignored)) {
    result.from_cache = true;
    return finish(entry);
  }

  std::error_code error;
  fs::create_directories(cache_directory() + "/packages", error);
  if (error)
    throw UserError(SourceLoc{cache_directory(), 0, 0},
                    fmt::format("cannot create the cache directory: {} (set CNNC_CACHE to a writable directory)",
                                error.message()));
  std::string work = temporary_name(entry);
  fs::create_directories(work);
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ignored;
      fs::remove_all(dir, ignored);
    }
  } cleanup{work};

  std::vector<KernelInfo> all = kernels;
  all.insert(all.end(), plan.training.begin(), plan.training.end());
  auto log = [&](const std::string& line) {
    if (options.log) *options.log << "cnnc: " << line << "\n" << std::flush;
  };
  log(fmt::format("{} for {}: compiling {} kernels ({} for inference) with Halide {}", graph.name, target.name,
                  all.size(), kernels.size(), halide_version()));
  compile_kernels(graph, all, target, work + "/kernels.o", work + "/runtime.o");
  for (size_t i = 0; i < kernels.size(); ++i) kernels[i].schedule = all[i].schedule;
  for (size_t i = 0; i < plan.training.size(); ++i) plan.training[i].schedule = all[kernels.size() + i].schedule;
  write_file(work + "/" + graph.name + ".h", generate_header(plan, target));
  write_file(work + "/plan.c", generate_plan_c(plan));
  log("compiling the plan and linking kernels.a, kernels.so");
  run_program({target.c_compiler, "-O2", "-fPIC", "-std=c99", "-Wall", "-I", CNNC_HALIDE_INCLUDE_DIR, "-I", work, "-c",
               work + "/plan.c", "-o", work + "/plan.o"},
              work + "/build.log");
  run_program({"ar", "rcs", work + "/kernels.a", work + "/kernels.o", work + "/runtime.o", work + "/plan.o"},
              work + "/build.log");
  run_program({target.c_compiler, "-shared", "-o", work + "/kernels.so", work + "/kernels.o", work + "/runtime.o",
               work + "/plan.o", "-lpthread", "-ldl", "-lm"},
              work + "/build.log");
  write_file(work + "/manifest.json", generate_manifest(plan, target, fingerprint).dump(2) + "\n");
  fs::remove(work + "/build.log", ignored);

  if (!options.use_cache) {
    std::string dir = options.output_dir.empty() ? entry : options.output_dir;
    fs::create_directories(dir);
    copy_package(work, dir);
    result.dir = dir;
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
  }
  // Publish atomically; a concurrent build of the same package may have won the race.
  fs::rename(work, entry, error);
  if (error && !fs::exists(entry + "/manifest.json", ignored))
    throw UserError(SourceLoc{entry, 0, 0}, "cannot write the package into the cache: " + error.message());
  cleanup.dir = error ? work : "";
  return finish(entry);
}

}  // namespace cnnc
