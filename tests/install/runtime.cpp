// libcnnrt (cnnc::cnnrt): opens the package in argv[1], runs the forward pass of main.cpp,
// writes and reads back the weights as safetensors in argv[2], reads the IDX image file argv[3].
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <cnnc/data.h>
#include <cnnc/package.h>
#include <cnnc/support/diagnostics.h>
#include <cnnc/weights.h>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: runtime PACKAGE_DIR WEIGHTS.safetensors IMAGES.idx3-ubyte[.gz]\n");
    return 2;
  }
  try {
    cnnc::rt::Network network(cnnc::rt::Package::open(argv[1]));
    const cnnc::rt::Package& package = network.package();
    float* params = network.params();
    for (int64_t i = 0; i < package.param_floats(); ++i) params[i] = 0.05f * std::sin(0.37f * float(i));
    network.params_changed();

    std::vector<float> image(package.input_elements(), 0.0f);
    std::vector<float> scores = network.forward(image, 1);
    std::printf("runtime: %lld floats, probabilities", static_cast<long long>(package.param_floats()));
    for (float p : scores) std::printf(" %.6f", p);
    std::printf("\n");

    cnnc::rt::save_weights(network, argv[2]);
    std::printf("runtime: %zu tensors in %s\n", cnnc::rt::load_safetensors(argv[2]).size(), argv[2]);
    std::printf("runtime: %lld images in %s\n", static_cast<long long>(cnnc::rt::read_idx_images(argv[3]).count), argv[3]);
    cnnc::rt::Package::open(argv[1] + std::string("/missing"));
  } catch (const cnnc::UserError& error) {
    std::printf("runtime: %s\n", error.formatted().c_str());
    return 0;
  }
  return 1;
}
