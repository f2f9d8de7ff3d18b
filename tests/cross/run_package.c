/* Runs a model package's forward pass from files: the cross-target check (ARM under qemu).
 * Built per model with -DMODEL=<name> -DMODEL_HEADER="<name>.h", linked with the package's kernels.a.
 *   run_package PARAMS.bin INPUT.bin BATCH NODES.bin [LABELS.bin GRADS.bin]
 * reads every parameter (float32, checkpoint order) and the input, runs forward, and writes every
 * node's output (node order, batch x elements each). With labels (int32), it then computes one
 * training step's gradients and writes the gradient block (the parameter block's layout). */
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>

#include MODEL_HEADER

#define CONCAT(a, b) a##b
#define EXPAND(a, b) CONCAT(a, b)
#define API(name) EXPAND(MODEL, name)

static long file_floats(const char *path, float **out) {
  FILE *file = fopen(path, "rb");
  if (!file) return -1;
  fseek(file, 0, SEEK_END);
  long bytes = ftell(file);
  fseek(file, 0, SEEK_SET);
  *out = malloc(bytes > 0 ? (size_t)bytes : 1);
  long got = (long)fread(*out, 1, (size_t)bytes, file);
  fclose(file);
  return got == bytes ? bytes / 4 : -1;
}

int main(int argc, char **argv) {
  if (argc != 5 && argc != 7) {
    fprintf(stderr, "usage: run_package PARAMS.bin INPUT.bin BATCH NODES.bin [LABELS.bin GRADS.bin]\n");
    return 2;
  }
  int batch = atoi(argv[3]);
  float *params = NULL, *input = NULL;
  long param_floats = file_floats(argv[1], &params);
  long input_floats = file_floats(argv[2], &input);
  API(_model) *model = API(_create)();
  /* The parameter block: every tensor, each starting on a 128-byte boundary. */
  int last = API(_param_count)() - 1;
  long expected = last < 0 ? 0
                           : (long)(API(_param_data)(model, last) - API(_param_data)(model, 0)) +
                                 (long)API(_param_elements)(last);
  if (param_floats != expected || input_floats < 0) {
    fprintf(stderr, "bad input files (%ld params, expected %ld)\n", param_floats, expected);
    return 1;
  }
  if (expected > 0) {
    float *data = API(_param_data)(model, 0);
    for (long i = 0; i < expected; ++i) data[i] = params[i];
    API(_params_changed)(model);
  }
  long largest = 1; /* the output is one of the nodes */
  for (int node = 0; node < API(_node_count)(); ++node)
    if ((long)API(_node_elements)(node) > largest) largest = (long)API(_node_elements)(node);
  float *output = malloc((size_t)batch * (size_t)largest * 4);
  if (API(_forward)(model, input, batch, output)) {
    fprintf(stderr, "forward failed: %s\n", API(_error)(model));
    return 1;
  }
  FILE *file = fopen(argv[4], "wb");
  for (int node = 0; node < API(_node_count)(); ++node)
    fwrite(API(_node_output)(model, node), 4, (size_t)(batch * API(_node_elements)(node)), file);
  fclose(file);
  if (argc == 7) {
    float *labels = NULL; /* int32 values, read as 4-byte words */
    if (file_floats(argv[5], &labels) != batch) {
      fprintf(stderr, "expected %d labels\n", batch);
      return 1;
    }
    float loss = 0;
    int correct = 0;
    if (API(_compute_gradients)(model, input, (const int32_t *)labels, batch, &loss, &correct)) {
      fprintf(stderr, "gradients failed: %s\n", API(_error)(model));
      return 1;
    }
    file = fopen(argv[6], "wb");
    fwrite(API(_param_grads)(model), 4, (size_t)expected, file);
    fclose(file);
  }
  API(_destroy)(model);
  return 0;
}
