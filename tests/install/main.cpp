// The C API of a package built by cnnc_add_model: a forward pass on a zero image with fixed
// parameters (the pattern of runtime.cpp, which must print the same probabilities).
#include <cmath>
#include <cstdio>
#include <vector>

#include "mnist_cnn.h"

int main() {
  mnist_cnn_model* model = mnist_cnn_create();
  if (!model) return 1;
  float* params = mnist_cnn_param_data(model, 0);
  for (int i = 0; i < MNIST_CNN_PARAM_FLOATS; ++i) params[i] = 0.05f * std::sin(0.37f * float(i));
  mnist_cnn_params_changed(model);

  std::vector<float> image(MNIST_CNN_INPUT_SIZE, 0.0f), scores(MNIST_CNN_OUTPUT_SIZE);
  if (mnist_cnn_forward(model, image.data(), 1, scores.data()) != 0) {
    std::fprintf(stderr, "forward failed: %s\n", mnist_cnn_error(model));
    return 1;
  }
  std::printf("c_api: %d floats, probabilities", MNIST_CNN_PARAM_FLOATS);
  for (float p : scores) std::printf(" %.6f", p);
  std::printf("\n");
  mnist_cnn_destroy(model);
  return 0;
}
