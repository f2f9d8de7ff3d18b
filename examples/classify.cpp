// An example of a program that links a model compiled ahead of time by cnnc.
//
// CMakeLists.txt:
//   include(CnncModel)
//   cnnc_add_model(mnist_cnn MODEL models/mnist_cnn.yaml)
//   target_link_libraries(classify PRIVATE mnist_cnn)
//
// It needs nothing but the generated header and kernels.a: no Halide, no LLVM, no cnnc runtime.
//   classify [WEIGHTS.f32]
// WEIGHTS.f32 holds every parameter as raw float32 in the header's order (all of them at once);
// without it the parameters are a fixed pattern. Classifies a synthetic image at batch 1 and 8.
#include <cmath>
#include <cstdio>
#include <vector>

#include "mnist_cnn.h"

int main(int argc, char** argv) {
  mnist_cnn_model* model = mnist_cnn_create();
  if (!model) return 1;

  std::printf("mnist_cnn: %d parameter tensors, %d floats\n", mnist_cnn_param_count(), MNIST_CNN_PARAM_FLOATS);
  float* params = mnist_cnn_param_data(model, 0);  // one contiguous block
  if (argc > 1) {
    FILE* file = std::fopen(argv[1], "rb");
    if (!file || std::fread(params, sizeof(float), MNIST_CNN_PARAM_FLOATS, file) != MNIST_CNN_PARAM_FLOATS) {
      std::fprintf(stderr, "cannot read %d floats from %s\n", MNIST_CNN_PARAM_FLOATS, argv[1]);
      return 1;
    }
    std::fclose(file);
  } else {
    for (int i = 0; i < MNIST_CNN_PARAM_FLOATS; ++i) params[i] = 0.05f * std::sin(0.37f * float(i));
  }
  mnist_cnn_params_changed(model);
  mnist_cnn_set_threads(2);

  // A synthetic "image": a bright vertical bar on a dark background, repeated for a batch of 8.
  const int batch = 8;
  std::vector<float> images(batch * MNIST_CNN_INPUT_SIZE, 0.0f), scores(batch * MNIST_CNN_OUTPUT_SIZE);
  for (int b = 0; b < batch; ++b)
    for (int y = 4; y < 24; ++y)
      for (int x = 12 + b % 3; x < 16 + b % 3; ++x) images[b * MNIST_CNN_INPUT_SIZE + y * 28 + x] = 1.0f;

  for (int size : {1, batch}) {
    if (mnist_cnn_forward(model, images.data(), size, scores.data()) != 0) {
      std::fprintf(stderr, "forward failed: %s\n", mnist_cnn_error(model));
      return 1;
    }
    for (int b = 0; b < size; ++b) {
      int best = 0;
      float total = 0;
      for (int k = 0; k < MNIST_CNN_OUTPUT_SIZE; ++k) {
        total += scores[b * MNIST_CNN_OUTPUT_SIZE + k];
        if (scores[b * MNIST_CNN_OUTPUT_SIZE + k] > scores[b * MNIST_CNN_OUTPUT_SIZE + best]) best = k;
      }
      if (std::fabs(total - 1.0f) > 1e-4f) {
        std::fprintf(stderr, "probabilities sum to %f, not 1\n", total);
        return 1;
      }
      std::printf("batch %d, image %d: class %d (p = %.4f)\n", size, b, best, scores[b * MNIST_CNN_OUTPUT_SIZE + best]);
    }
  }
  for (int k = 0; k < mnist_cnn_kernel_count(); ++k)
    std::printf("kernel %-28s %.3f ms\n", mnist_cnn_kernel_name(k), 1e3 * mnist_cnn_kernel_seconds(model, k));
  mnist_cnn_destroy(model);
  std::printf("ok\n");
  return 0;
}
