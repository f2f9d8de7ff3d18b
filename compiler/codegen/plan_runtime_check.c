/* plan_runtime.c compiled on its own, in the form every plan.c takes, so that a mistake in the
 * fixed part of the packages' C fails cnnc's build (-std=c99 -Wall -Wextra -Werror, with and
 * without CNNC_GUARD_ZONES; see CMakeLists.txt) instead of a package build at run time.
 *
 * What emit_c.cpp writes per model is stubbed here for a model `cnnc_check` of two nodes: an
 * input of 4 floats and a dense layer of 3 units with a softmax. The C API is declared from
 * c_api.def first, so a definition in plan_runtime.c that does not match its entry is an error.
 * The object is not linked into anything: the kernels are only declared. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>
#include <pthread.h>
#include "HalideRuntime.h"

/* <name>.h */
#define CNNC_PREFIX(name) cnnc_check_##name
typedef struct cnnc_check_model cnnc_check_model;
#define MODEL CNNC_PREFIX(model)
#define CNNC_API_DOC(text)
#define CNNC_API(return_type, name, parameters) return_type CNNC_PREFIX(name) parameters;
#include "c_api.def"
#undef CNNC_API
#undef CNNC_API_DOC

/* The kernels. */
int cnnc_check_k1_dense(struct halide_buffer_t *, struct halide_buffer_t *, struct halide_buffer_t *,
                        struct halide_buffer_t *);
int cnnc_check_t1_dense(struct halide_buffer_t *, struct halide_buffer_t *, struct halide_buffer_t *,
                        struct halide_buffer_t *, struct halide_buffer_t *);
int cnnc_check_loss(struct halide_buffer_t *, struct halide_buffer_t *, struct halide_buffer_t *,
                    struct halide_buffer_t *);
int cnnc_check_adam(struct halide_buffer_t *, struct halide_buffer_t *, struct halide_buffer_t *,
                    struct halide_buffer_t *, float, float, float, float, struct halide_buffer_t *,
                    struct halide_buffer_t *, struct halide_buffer_t *);

/* The tables. */
#define NODES 2
#define OUTPUT_NODE 1
static const char *const node_names[NODES] = {"input", "dense"};
static const int node_rank[NODES] = {1, 1};
static const int node_extent[NODES][3] = {{4, 1, 1}, {3, 1, 1}}; /* Halide order: c, x, y */
static const int node_storage[NODES] = {0, 1}; /* the node owning the memory */
static const int64_t node_elements[NODES] = {4, 3};
static const int node_storage_train[NODES] = {0, 1}; /* while training */
static const int node_saved[NODES] = {0, 1}; /* keeps a tensor for backward */
static const int saved_rank[NODES] = {1, 1};
static const int saved_extent[NODES][3] = {{4, 1, 1}, {3, 1, 1}};
static const int64_t saved_elements[NODES] = {4, 3};
static const int saved_is_index[NODES] = {0, 0}; /* int32 window indices */
#define CLASSES 3
#define TRAINABLE 1
static const char *const untrainable_reason = "";
#define TRAIN_KERNELS 2
static const char *const train_kernel_names[2] = {"cnnc_check_t1_dense", "cnnc_check_loss"};
#define PARAMS 2
#define PARAM_FLOATS 35
static const char *const param_names[2] = {"dense.kernel", "dense.bias"};
static const int param_rank[2] = {2, 1};
static const int64_t param_shape[2][4] = {{4, 3, 1, 1}, {3, 1, 1, 1}}; /* Keras order */
static const int64_t param_offset[2] = {0, 32};
static const int64_t param_elements[2] = {12, 3};
static const int gpu = 0;
#define KERNELS 1
static const char *const kernel_names[1] = {"cnnc_check_k1_dense"};

#include "plan_runtime.c"

/* The call sequences, as emit_c.cpp writes them. */
static int run_forward_kernels(cnnc_check_model *model) {
  struct halide_buffer_t *b = model->node_buffer;
  struct halide_buffer_t *w = model->param_buffer;
  (void)b; (void)w;
  double start = now(), end;
  if (run_flushing_denormals(cnnc_check_k1_dense(&b[0], &w[0], &w[1], &b[1]))) return fail(model, "kernel cnnc_check_k1_dense failed");
  if (GUARD_CHECK(model, "kernel cnnc_check_k1_dense")) return 1;
  end = now();
  model->kernel_seconds[0] = end - start;
  start = end;
  (void)start; (void)end;
  return 0;
}

static int run_training_kernels(cnnc_check_model *model) {
  struct halide_buffer_t *b = model->node_buffer, *w = model->param_buffer, *s = model->saved_buffer;
  struct halide_buffer_t *g = model->grad_buffer, *pg = model->grad_param_buffer;
  (void)s; (void)g; (void)pg; (void)w; (void)b;
  double start = now(), end;
  if (run_flushing_denormals(cnnc_check_t1_dense(&b[0], &w[0], &w[1], &b[1], &s[1]))) return fail(model, "kernel cnnc_check_t1_dense failed");
  if (GUARD_CHECK(model, "kernel cnnc_check_t1_dense")) return 1;
  end = now();
  model->train_kernel_seconds[0] = end - start;
  start = end;
  if (run_flushing_denormals(cnnc_check_loss(&s[1], &model->labels_buffer, &model->logit_grad_buffer, &model->loss_buffer))) return fail(model, "kernel cnnc_check_loss failed");
  if (GUARD_CHECK(model, "kernel cnnc_check_loss")) return 1;
  end = now();
  model->train_kernel_seconds[1] = end - start;
  start = end;
  return 0;
}

static int run_optimizer(cnnc_check_model *model) {
  double start = now();
  if (model->optimizer == 0) {
    double t = (double)model->step;
    float lr_t = (float)(model->learning_rate * sqrt(1.0 - pow(model->beta_2, t)) / (1.0 - pow(model->beta_1, t)));
    if (run_flushing_denormals(cnnc_check_adam(&model->flat[0], &model->flat[1], &model->flat[2], &model->flat[3], lr_t, model->beta_1, model->beta_2, model->epsilon, &model->flat[0], &model->flat[2], &model->flat[3]))) return fail(model, "optimizer cnnc_check_adam failed");
    if (GUARD_CHECK(model, "optimizer cnnc_check_adam")) return 1;
  }
  model->optimizer_seconds = now() - start;
  return 0;
}
