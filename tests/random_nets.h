// Random networks over the whole model language, and the checks every one of them must pass:
// the random-network test (test_random_nets.cpp) and scripts/fuzz-nets.sh (fuzz_nets.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cnnc::test {

// A random model (YAML text) drawn from `seed`: an image or vector input; convolutions with 1 to
// 80 filters, square and rectangular kernels 1-5, strides 1-3, same/valid padding, every
// activation, with or without bias, fused or standalone max/average pooling (windows 1-3, any
// stride and padding), batchnorm, dropout, activation layers (with their alpha), residual `add`s
// (2 or 3 inputs) and `concat`s along channels, height or width, then flatten or global
// pooling, dense layers of 1 to 80 units and a softmax classifier. Shapes stay small enough for the double-precision reference.
std::string random_model_yaml(uint32_t seed);

struct NetCheckOptions {
  std::vector<int> forward_batches = {1, 7, 17};  // 17: more than a vector of 16 examples
  int gradient_batch = 0;                        // 0: 1, 2, 3 or 5, drawn from the seed
  std::string target = "host";  // must run here
};

// What a network's check found: "" where everything matched.
struct NetCheckResult {
  std::string stage;    // "parse", "build", "forward", "training", "gradient"
  std::string message;  // what differed, or the error
  int kernels = 0;      // kernels compiled (inference + training)
  bool ok() const { return message.empty(); }
};

// Builds the model in `yaml` for the host (through the package cache), then
//  - runs forward at each of options.forward_batches with random parameters and inputs and
//    compares every kernel's output with the plain double-precision reference (tests/reference),
//    each kernel fed the package's own outputs of the kernels before it;
//  - runs one training step's forward and backward (compute_gradients) at options.gradient_batch
//    and compares its loss with the reference's training forward pass, and the gradient of every
//    trainable parameter tensor with central differences of the reference loss in double
//    precision: along a random direction over the whole tensor, and at its first and last entries
//    and at random ones.
// Never throws for a failure of the package under test; a crash of a kernel ends the process.
NetCheckResult check_net(const std::string& yaml, const std::string& file, uint32_t seed,
                         const NetCheckOptions& options = {});

}  // namespace cnnc::test
