/* The part of every package's plan.c that does not depend on the model: the model struct, its
 * memory (guard zones in test builds), Halide's allocator, error handler and thread pool, and
 * every function of the C API (docs/c-api.md) but the call sequences of the kernels.
 *
 * cnnc pastes this file's text into each plan.c (CMake embeds it, see CMakeLists.txt), after
 * the per-model part emit_c.cpp writes: the includes, the kernels' declarations, the tables
 * (NODES, node_names, ..., KERNELS, kernel_names) and CNNC_PREFIX, which names the API
 * (`#define CNNC_PREFIX(name) mymodel_##name`). After it come the call sequences it declares
 * below (run_forward_kernels, run_training_kernels, run_optimizer). The line including
 * plan_thread_pool.c is replaced by that file's text. cnnc's build compiles this file on its
 * own (plan_runtime_check.c, with and without CNNC_GUARD_ZONES, warnings as errors), so that a
 * mistake here fails there and not when a package is built.
 *
 * C99; the packages compile it with -O2 -fPIC -std=c99 -Wall. */

#define MODEL CNNC_PREFIX(model)

struct MODEL {
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
  float learning_rate, beta_1, beta_2, epsilon, momentum, label_smoothing;
  int64_t step;
  uint32_t seed;
  int64_t example_offset;                   /* of this batch in the global batch (dropout masks) */
  void (*gradient_hook)(void *user, int param);  /* told as gradients become final (see the API) */
  void *gradient_hook_user;
  double train_kernel_seconds[TRAIN_KERNELS > 0 ? TRAIN_KERNELS : 1];
  double optimizer_seconds;
};

/* The call sequences, written per model after this file (emit_c.cpp). Each returns 0, or 1 with
 * the model's error set. */
/* Inference: every kernel in order, on the buffers prepare() described. */
static int run_forward_kernels(MODEL *model);
/* Training: forward (training variants), the loss, backward; gradients in model->grads. */
static int run_training_kernels(MODEL *model);
/* The optimizer's update of the parameters from model->grads (model->step already counted). */
static int run_optimizer(MODEL *model);


#ifndef CNNC_GUARD_ZONES
/* Zeroed float storage aligned to 128 bytes, as Halide aligns its own allocations (wide vector
 * loads may assume it). Freed with free_floats(). */
static float *new_floats(size_t count) {
  void *memory = NULL;
  if (posix_memalign(&memory, 128, (count > 0 ? count : 1) * sizeof(float)) != 0) return NULL;
  memset(memory, 0, (count > 0 ? count : 1) * sizeof(float));
  return (float *)memory;
}
#define free_floats free
#define GUARD_CHECK(model, what) 0
#else
/* Test builds (cnnc's tests build packages with guard zones): every block of the plan --
 * activations, kept tensors, gradients, parameters, optimizer state -- lies between two zones
 * of canary words, checked after every kernel, so that a kernel writing outside its buffers
 * fails with its name instead of corrupting memory. */
#define GUARD_FLOATS 256 /* 1 KiB on each side, a multiple of the 128-byte alignment */
#define GUARD_WORD 0x7fa5c3e1u
#define GUARD_BLOCKS 4096
static struct { uint32_t *block; size_t count; } guard_blocks[GUARD_BLOCKS];
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static float *new_floats(size_t count) {
  void *memory = NULL;
  if (count == 0) count = 1;
  if (posix_memalign(&memory, 128, (count + 2 * GUARD_FLOATS) * sizeof(float)) != 0) return NULL;
  uint32_t *words = (uint32_t *)memory;
  for (size_t i = 0; i < GUARD_FLOATS; ++i) words[i] = words[GUARD_FLOATS + count + i] = GUARD_WORD;
  memset(words + GUARD_FLOATS, 0, count * sizeof(float));
  pthread_mutex_lock(&guard_lock);
  for (int i = 0; i < GUARD_BLOCKS; ++i)
    if (!guard_blocks[i].block) {
      guard_blocks[i].block = words;
      guard_blocks[i].count = count;
      break;
    }
  pthread_mutex_unlock(&guard_lock);
  return (float *)(words + GUARD_FLOATS);
}
static void free_floats(void *data) {
  if (!data) return;
  uint32_t *words = (uint32_t *)data - GUARD_FLOATS;
  pthread_mutex_lock(&guard_lock);
  for (int i = 0; i < GUARD_BLOCKS; ++i)
    if (guard_blocks[i].block == words) guard_blocks[i].block = NULL;
  pthread_mutex_unlock(&guard_lock);
  free(words);
}
/* Non-zero (and the model's error set) if a guard zone was written since it was laid. */
static int guard_violated(char *error, size_t size, const char *what) {
  int hit = 0;
  pthread_mutex_lock(&guard_lock);
  for (int b = 0; b < GUARD_BLOCKS && !hit; ++b) {
    uint32_t *words = guard_blocks[b].block;
    if (!words) continue;
    size_t count = guard_blocks[b].count;
    for (size_t i = 0; i < GUARD_FLOATS && !hit; ++i) {
      if (words[i] != GUARD_WORD) {
        snprintf(error, size, "%s wrote %zu floats before a buffer of %zu floats", what, GUARD_FLOATS - i, count);
        hit = 1;
      } else if (words[GUARD_FLOATS + count + i] != GUARD_WORD) {
        snprintf(error, size, "%s wrote %zu floats past the end of a buffer of %zu floats", what, i + 1, count);
        hit = 1;
      }
    }
  }
  pthread_mutex_unlock(&guard_lock);
  return hit;
}
#define GUARD_CHECK(model, what) guard_violated((model)->error, sizeof (model)->error, what)
#endif

static double now(void) {
  struct timespec time;
  clock_gettime(CLOCK_MONOTONIC, &time);
  return (double)time.tv_sec + 1e-9 * (double)time.tv_nsec;
}

#include "plan_thread_pool.c"
/* Halide reports errors through one global handler per runtime; keep the last message. */
static char halide_message[1024];
static pthread_mutex_t halide_message_lock = PTHREAD_MUTEX_INITIALIZER; /* tasks may fail at once */
static void on_halide_error(void *user_context, const char *message) {
  (void)user_context;
  pthread_mutex_lock(&halide_message_lock);
  if (!halide_message[0]) snprintf(halide_message, sizeof halide_message, "%s", message); /* the first */
  pthread_mutex_unlock(&halide_message_lock);
}

static int fail(MODEL *model, const char *what) {
  snprintf(model->error, sizeof model->error, "%s%s%s", what, halide_message[0] ? ": " : "", halide_message);
  halide_message[0] = 0;
  return 1;
}

static void set_layout(struct halide_buffer_t *buffer, struct halide_dimension_t *dim, int rank,
                       const int64_t *keras_shape_reversed, int batched, int batch) {
  int32_t stride = 1;
  memset(buffer, 0, sizeof *buffer);
  buffer->type.code = halide_type_float;
  buffer->type.bits = 32;
  buffer->type.lanes = 1;
  buffer->dimensions = rank + (batched ? 1 : 0);
  buffer->dim = dim;
  for (int d = 0; d < rank; ++d) {
    dim[d].min = 0;
    dim[d].extent = (int32_t)keras_shape_reversed[d];
    dim[d].stride = stride;
    dim[d].flags = 0;
    stride *= (int32_t)keras_shape_reversed[d];
  }
  if (batched) {
    dim[rank].min = 0;
    dim[rank].extent = batch;
    dim[rank].stride = stride;
    dim[rank].flags = 0;
  }
}

MODEL *CNNC_PREFIX(create)(void) {
  MODEL *model = (MODEL *)calloc(1, sizeof(MODEL));
  if (!model) return NULL;
  halide_set_error_handler(on_halide_error);
  halide_set_custom_malloc(pool_malloc);
  halide_set_custom_free(pool_free);
  halide_set_custom_do_par_for(par_for);
  model->params = new_floats(PARAM_FLOATS > 0 ? PARAM_FLOATS : 1);
  if (!model->params) {
    free(model);
    return NULL;
  }
  for (int i = 0; i < PARAMS; ++i) {
    int64_t reversed[4];
    for (int d = 0; d < param_rank[i]; ++d) reversed[d] = param_shape[i][param_rank[i] - 1 - d];
    set_layout(&model->param_buffer[i], model->param_dim[i], param_rank[i], reversed, 0, 0);
    model->param_buffer[i].host = (uint8_t *)(model->params + param_offset[i]);
    model->param_buffer[i].flags = halide_buffer_flag_host_dirty;
  }
  /* Keras defaults. */
  model->optimizer = 0;
  model->learning_rate = 0.001f;
  model->beta_1 = 0.9f;
  model->beta_2 = 0.999f;
  model->epsilon = 1e-7f;
  model->momentum = 0.0f;
  model->label_smoothing = 0.0f;
  return model;
}

static void free_device(struct halide_buffer_t *buffer) {
  if (gpu && buffer->device) halide_device_free(NULL, buffer);
}

void CNNC_PREFIX(destroy)(MODEL *model) {
  if (!model) return;
  for (int i = 0; i < NODES; ++i) {
    free_device(&model->node_buffer[i]);
    free_floats(model->storage[i]);
  }
  for (int i = 0; i < PARAMS; ++i) free_device(&model->param_buffer[i]);
  for (int i = 0; i < NODES; ++i) {
    free_device(&model->saved_buffer[i]);
    free_device(&model->grad_buffer[i]);
    free_floats(model->saved_storage[i]);
    free_floats(model->grad_storage[i]);
  }
  for (int i = 0; i < PARAMS; ++i) free_device(&model->grad_param_buffer[i]);
  for (int i = 0; i < 4; ++i) free_device(&model->flat[i]);
  free_device(&model->logit_grad_buffer);
  free_device(&model->labels_buffer);
  free_device(&model->loss_buffer);
  free_floats(model->logit_grad);
  free_floats(model->loss);
  free_floats(model->grads);
  free_floats(model->state[0]);
  free_floats(model->state[1]);
  free_floats(model->params);
  free(model);
}

int CNNC_PREFIX(param_count)(void) { return PARAMS; }
const char *CNNC_PREFIX(param_name)(int index) { return index >= 0 && index < PARAMS ? param_names[index] : NULL; }
int CNNC_PREFIX(param_rank)(int index) { return index >= 0 && index < PARAMS ? param_rank[index] : 0; }
int64_t CNNC_PREFIX(param_dim)(int index, int axis) {
  return index >= 0 && index < PARAMS && axis >= 0 && axis < param_rank[index] ? param_shape[index][axis] : 0;
}
int64_t CNNC_PREFIX(param_elements)(int index) { return index >= 0 && index < PARAMS ? param_elements[index] : 0; }
float *CNNC_PREFIX(param_data)(MODEL *model, int index) {
  return index >= 0 && index < PARAMS ? model->params + param_offset[index] : NULL;
}
void CNNC_PREFIX(params_changed)(MODEL *model) {
  for (int i = 0; i < PARAMS; ++i) model->param_buffer[i].flags |= halide_buffer_flag_host_dirty;
}

int CNNC_PREFIX(node_count)(void) { return NODES; }
const char *CNNC_PREFIX(node_name)(int node) { return node >= 0 && node < NODES ? node_names[node] : NULL; }
int64_t CNNC_PREFIX(node_elements)(int node) { return node >= 0 && node < NODES ? node_elements[node] : 0; }
const float *CNNC_PREFIX(node_output)(const MODEL *model, int node) {
  if (node < 0 || node >= NODES) return NULL;
  return (const float *)model->node_buffer[node].host;
}
const char *CNNC_PREFIX(error)(const MODEL *model) { return model->error; }
int CNNC_PREFIX(kernel_count)(void) { return KERNELS; }
const char *CNNC_PREFIX(kernel_name)(int kernel) { return kernel >= 0 && kernel < KERNELS ? kernel_names[kernel] : NULL; }
double CNNC_PREFIX(kernel_seconds)(const MODEL *model, int kernel) {
  return kernel >= 0 && kernel < KERNELS ? model->kernel_seconds[kernel] : 0.0;
}
void CNNC_PREFIX(set_threads)(int threads) {
  par_set_threads(threads);
  halide_set_num_threads(threads);
}

/* (Re)describes every node's buffer for this batch, allocating when the batch grows. */
static int prepare(MODEL *model, const float *input, int batch, int training) {
  if (batch > model->capacity) {
    for (int i = 0; i < NODES; ++i) {
      free_device(&model->node_buffer[i]);
      free_floats(model->storage[i]);
      model->storage[i] = NULL;
    }
    for (int i = 1; i < NODES; ++i) {
      if (node_storage_train[i] != i) continue; /* a superset of the inference owners */
      model->storage[i] = new_floats((size_t)node_elements[i] * (size_t)batch);
      if (!model->storage[i]) return fail(model, "out of memory for activations");
    }
    model->capacity = batch;
  }
  for (int i = 0; i < NODES; ++i) {
    int64_t reversed[3] = {node_extent[i][0], node_extent[i][1], node_extent[i][2]};
    free_device(&model->node_buffer[i]);
    set_layout(&model->node_buffer[i], model->node_dim[i], node_rank[i], reversed, 1, batch);
    int owner = training ? node_storage_train[i] : node_storage[i];
    model->node_buffer[i].host = owner == 0 ? (uint8_t *)input : (uint8_t *)model->storage[owner];
  }
  return 0;
}

int CNNC_PREFIX(forward)(MODEL *model, const float *input, int batch, float *output) {
  model->error[0] = 0;
  if (!input || !output) return fail(model, "input and output must not be NULL");
  if (batch < 1) return fail(model, "batch must be at least 1");
  if ((int64_t)batch * node_elements[0] > 2147483647 || (int64_t)batch * node_elements[OUTPUT_NODE] > 2147483647)
    return fail(model, "batch too large: a tensor would exceed 2^31 elements");
  if (prepare(model, input, batch, 0)) return 1;
  halide_message[0] = 0;
  if (run_forward_kernels(model)) return 1;
  memcpy(output, model->node_buffer[OUTPUT_NODE].host, (size_t)batch * (size_t)node_elements[OUTPUT_NODE] * sizeof(float));
  return 0;
}
int CNNC_PREFIX(trainable)(void) { return TRAINABLE; }
int CNNC_PREFIX(train_kernel_count)(void) { return TRAIN_KERNELS; }
const char *CNNC_PREFIX(train_kernel_name)(int kernel) {
  return kernel >= 0 && kernel < TRAIN_KERNELS ? train_kernel_names[kernel] : NULL;
}
double CNNC_PREFIX(train_kernel_seconds)(const MODEL *model, int kernel) {
  return kernel >= 0 && kernel < TRAIN_KERNELS ? model->train_kernel_seconds[kernel] : 0.0;
}
double CNNC_PREFIX(optimizer_seconds)(const MODEL *model) { return model->optimizer_seconds; }
const float *CNNC_PREFIX(param_grads)(const MODEL *model) { return model->grads; }
int64_t CNNC_PREFIX(step)(const MODEL *model) { return model->step; }
void CNNC_PREFIX(set_step)(MODEL *model, int64_t step) { model->step = step; }
void CNNC_PREFIX(set_seed)(MODEL *model, uint32_t seed) { model->seed = seed; }
void CNNC_PREFIX(set_example_offset)(MODEL *model, int64_t offset) { model->example_offset = offset; }
float *CNNC_PREFIX(param_grads_data)(MODEL *model) { return model->grads; }
void CNNC_PREFIX(set_gradient_hook)(MODEL *model, void (*hook)(void *user, int param), void *user) {
  model->gradient_hook = hook;
  model->gradient_hook_user = user;
}

/* Gradient and optimizer blocks, allocated on first use. */
static int ensure_training_blocks(MODEL *model) {
  if (model->grads) return 0;
  size_t floats = PARAM_FLOATS > 0 ? PARAM_FLOATS : 1;
  model->grads = new_floats(floats);
  model->state[0] = new_floats(floats);
  model->state[1] = new_floats(floats);
  if (!model->grads || !model->state[0] || !model->state[1]) return fail(model, "out of memory for gradients");
  for (int i = 0; i < PARAMS; ++i) {
    int64_t reversed[4];
    for (int d = 0; d < param_rank[i]; ++d) reversed[d] = param_shape[i][param_rank[i] - 1 - d];
    set_layout(&model->grad_param_buffer[i], model->grad_param_dim[i], param_rank[i], reversed, 0, 0);
    model->grad_param_buffer[i].host = (uint8_t *)(model->grads + param_offset[i]);
  }
  float *blocks[4] = {model->params, model->grads, model->state[0], model->state[1]};
  int64_t size[1] = {PARAM_FLOATS};
  for (int i = 0; i < 4; ++i) {
    set_layout(&model->flat[i], model->flat_dim[i], 1, size, 0, 0);
    model->flat[i].host = (uint8_t *)blocks[i];
  }
  return 0;
}

float *CNNC_PREFIX(optimizer_state)(MODEL *model, int slot) {
  if (slot < 0 || slot > 1 || ensure_training_blocks(model)) return NULL;
  return model->state[slot];
}

int CNNC_PREFIX(set_optimizer)(MODEL *model, const char *kind, float learning_rate, float beta_1, float beta_2,
                      float epsilon, float momentum) {
  if (!kind || (strcmp(kind, "adam") != 0 && strcmp(kind, "sgd") != 0))
    return fail(model, "unknown optimizer; expected adam or sgd");
  model->optimizer = strcmp(kind, "sgd") == 0;
  model->learning_rate = learning_rate;
  model->beta_1 = beta_1;
  model->beta_2 = beta_2;
  model->epsilon = epsilon;
  model->momentum = momentum;
  return 0;
}

int CNNC_PREFIX(set_label_smoothing)(MODEL *model, float smoothing) {
  if (!(smoothing >= 0.0f && smoothing < 1.0f)) return fail(model, "label smoothing must be in [0, 1)");
  model->label_smoothing = smoothing;
  return 0;
}

/* Describes the training buffers for this batch, allocating when the batch grows. */
static int prepare_training(MODEL *model, const int32_t *labels, int batch) {
  if (ensure_training_blocks(model)) return 1;
  if (batch > model->train_capacity) {
    for (int i = 0; i < NODES; ++i) {
      free_device(&model->saved_buffer[i]);
      free_device(&model->grad_buffer[i]);
      free_floats(model->saved_storage[i]);
      free_floats(model->grad_storage[i]);
      model->saved_storage[i] = model->grad_storage[i] = NULL;
    }
    free_floats(model->logit_grad);
    free_floats(model->loss);
    for (int i = 1; i < NODES; ++i) {
      if (node_saved[i]) {
        model->saved_storage[i] = new_floats((size_t)saved_elements[i] * (size_t)batch);
        if (!model->saved_storage[i]) return fail(model, "out of memory for training");
      }
      if (node_storage_train[i] == i) {
        model->grad_storage[i] = new_floats((size_t)node_elements[i] * (size_t)batch);
        if (!model->grad_storage[i]) return fail(model, "out of memory for training");
      }
    }
    model->logit_grad = new_floats((size_t)CLASSES * (size_t)batch);
    model->loss = new_floats((size_t)batch);
    if (!model->logit_grad || !model->loss) return fail(model, "out of memory for training");
    model->train_capacity = batch;
  }
  for (int i = 1; i < NODES; ++i) {
    int64_t kept[3] = {saved_extent[i][0], saved_extent[i][1], saved_extent[i][2]};
    int64_t shape[3] = {node_extent[i][0], node_extent[i][1], node_extent[i][2]};
    free_device(&model->saved_buffer[i]);
    free_device(&model->grad_buffer[i]);
    set_layout(&model->saved_buffer[i], model->saved_dim[i], saved_rank[i], kept, 1, batch);
    if (saved_is_index[i]) model->saved_buffer[i].type.code = halide_type_int;
    model->saved_buffer[i].host = (uint8_t *)model->saved_storage[i];
    set_layout(&model->grad_buffer[i], model->grad_dim[i], node_rank[i], shape, 1, batch);
    model->grad_buffer[i].host = (uint8_t *)model->grad_storage[node_storage_train[i]];
  }
  int64_t classes[1] = {CLASSES};
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
}

int CNNC_PREFIX(compute_gradients)(MODEL *model, const float *input, const int32_t *labels, int batch,
                          float *loss_sum, int *correct) {
  model->error[0] = 0;
  if (!TRAINABLE) return fail(model, untrainable_reason);
  if (!input || !labels) return fail(model, "input and labels must not be NULL");
  if (batch < 1) return fail(model, "batch must be at least 1");
  if ((int64_t)batch * node_elements[0] > 2147483647 || (int64_t)batch * saved_elements[OUTPUT_NODE] > 2147483647)
    return fail(model, "batch too large: a tensor would exceed 2^31 elements");
  for (int i = 0; i < batch; ++i)
    if (labels[i] < 0 || labels[i] >= CLASSES) {
      snprintf(model->error, sizeof model->error, "label %d of example %d is outside [0, %d)", (int)labels[i], i, CLASSES);
      return 1;
    }
  if (prepare(model, input, batch, 1) || prepare_training(model, labels, batch)) return 1;
  halide_message[0] = 0;
  if (run_training_kernels(model)) return 1;
  if (loss_sum) {
    double total = 0;
    for (int i = 0; i < batch; ++i) total += model->loss[i];
    *loss_sum = (float)total;
  }
  if (correct) {
    const float *probabilities = (const float *)model->node_buffer[OUTPUT_NODE].host;
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

int CNNC_PREFIX(apply_gradients)(MODEL *model, float scale) {
  model->error[0] = 0;
  if (!TRAINABLE) return fail(model, untrainable_reason);
  if (!model->grads) return fail(model, "no gradients yet: call compute_gradients first");
  if (!(scale >= 0.0f) || scale > 1e30f) return fail(model, "the gradient scale must be a finite number >= 0");
  if (scale != 1.0f)
    for (int64_t i = 0; i < (int64_t)PARAM_FLOATS; ++i) model->grads[i] *= scale;
  model->step += 1;
  if (run_optimizer(model)) return 1;
  CNNC_PREFIX(params_changed)(model);
  return 0;
}

int CNNC_PREFIX(train_step)(MODEL *model, const float *input, const int32_t *labels, int batch, float *loss_sum,
                   int *correct) {
  if (CNNC_PREFIX(compute_gradients)(model, input, labels, batch, loss_sum, correct)) return 1;
  return CNNC_PREFIX(apply_gradients)(model, 1.0f);
}
