// The runtime's data and weight files: IDX and PNG input, safetensors weights, initialization.
#include <catch2/catch.hpp>

#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "data.h"
#include "test_support.h"
#include "weights.h"

using namespace cnnc;
namespace fs = std::filesystem;

namespace {

std::string scratch(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("cnnc-runtime-test-" + std::to_string(getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string idx_header(uint32_t magic, std::vector<uint32_t> dims) {
  std::string out;
  for (uint32_t value : std::vector<uint32_t>{magic}) dims.insert(dims.begin(), value);
  for (uint32_t value : dims)
    for (int shift : {24, 16, 8, 0}) out += char((value >> shift) & 0xff);
  return out;
}

}  // namespace

TEST_CASE("data: IDX images and labels, plain and gzipped, are read and validated", "[runtime]") {
  std::string pixels;
  for (int i = 0; i < 3 * 4 * 5; ++i) pixels += char(i * 4);
  std::string plain = scratch("images.idx");
  write_bytes(plain, idx_header(0x803, {3, 4, 5}) + pixels);
  rt::ImageSet images = rt::read_idx_images(plain);
  CHECK(images.count == 3);
  CHECK(images.height == 4);
  CHECK(images.width == 5);
  CHECK(images.pixels[59] == uint8_t(59 * 4));
  CHECK(rt::read_idx_images(plain, 2).count == 2);

  std::string gzipped = scratch("images.idx.gz");
  gzFile file = gzopen(gzipped.c_str(), "wb");
  std::string content = idx_header(0x803, {3, 4, 5}) + pixels;
  gzwrite(file, content.data(), unsigned(content.size()));
  gzclose(file);
  CHECK(rt::read_idx_images(gzipped).pixels == images.pixels);

  std::vector<float> floats(20);
  rt::to_floats(images, 1, 1, floats.data());
  CHECK(floats[0] == Approx(80.0 / 255.0));

  write_bytes(plain, idx_header(0x801, {3}) + std::string("\x01\x09\x00", 3));
  CHECK(rt::read_idx_labels(plain) == std::vector<uint8_t>{1, 9, 0});

  SECTION("errors name the file and what is wrong") {
    write_bytes(plain, idx_header(0x803, {3, 4, 5}) + pixels.substr(0, 30));
    CHECK_THROWS_WITH(rt::read_idx_images(plain), Catch::Contains(plain) && Catch::Contains("truncated") &&
                                                       Catch::Contains("announces 3 images"));
    write_bytes(plain, idx_header(0x801, {3}) + pixels);
    CHECK_THROWS_WITH(rt::read_idx_images(plain), Catch::Contains("magic number 0x00000801"));
    write_bytes(plain, idx_header(0x803, {3, 4, 5}));
    CHECK_THROWS_WITH(rt::read_idx_labels(plain), Catch::Contains("not an IDX label file"));
    write_bytes(plain, "\x00\x00");
    CHECK_THROWS_WITH(rt::read_idx_images(plain), Catch::Contains("ends before its magic number"));
    write_bytes(plain, idx_header(0x803, {1, 0, 5}));
    CHECK_THROWS_WITH(rt::read_idx_images(plain), Catch::Contains("implausible image size"));
    write_bytes(plain, idx_header(0x801, {5}) + "\x01\x02");
    CHECK_THROWS_WITH(rt::read_idx_labels(plain), Catch::Contains("announces 5 labels"));
    CHECK_THROWS_WITH(rt::read_idx_images(scratch("missing.idx")), Catch::Contains("cannot open"));
  }
}

TEST_CASE("data: a PNG decodes to the same pixels as the same image in IDX", "[runtime]") {
  rt::ImageSet png = rt::read_image(test::source_path("tests/data/seven.png"), 1);
  rt::ImageSet idx = rt::read_idx_images(test::source_path("tests/data/two-images-idx3-ubyte.gz"), 1);
  REQUIRE(png.height == 28);
  REQUIRE(png.width == 28);
  CHECK(png.pixels == idx.pixels);
  CHECK(rt::is_idx_file(test::source_path("tests/data/two-images-idx3-ubyte.gz")));
  CHECK_FALSE(rt::is_idx_file(test::source_path("tests/data/seven.png")));
  CHECK_THROWS_WITH(rt::read_image(test::source_path("models/mnist_cnn.yaml"), 1), Catch::Contains("cannot read the image"));
}

TEST_CASE("weights: Keras-default initialization is deterministic and within the Glorot limit", "[runtime]") {
  test::BuiltModel built = test::build_model("models/mnist_cnn.yaml");
  rt::Network a(built.package), b(built.package), c(built.package);
  rt::init_params(a, 42);
  rt::init_params(b, 42);
  rt::init_params(c, 43);
  int64_t floats = built.package->param_floats();
  CHECK(std::equal(a.params(), a.params() + floats, b.params()));
  CHECK_FALSE(std::equal(a.params(), a.params() + floats, c.params()));
  // dense kernel [1600, 128]: limit sqrt(6 / (1600 + 128)) = 0.058926; its bias is zero.
  const float limit = float(std::sqrt(6.0 / (1600 + 128)));
  const float* kernel = a.param("dense.kernel");
  float largest = 0;
  double sum = 0;
  for (int i = 0; i < 1600 * 128; ++i) {
    largest = std::max(largest, std::fabs(kernel[i]));
    sum += kernel[i];
  }
  CHECK(largest <= limit);
  CHECK(largest > 0.99f * limit);
  CHECK(std::fabs(sum / (1600 * 128)) < 0.001);
  const float* bias = a.param("dense.bias");
  CHECK(std::all_of(bias, bias + 128, [](float v) { return v == 0.0f; }));
}

// Each op declares its tensors' initializers (compiler/ops); the manifest carries them.
TEST_CASE("weights: initializers come from the ops, as in Keras (batchnorm: gamma and moving variance 1)", "[runtime]") {
  test::BuiltModel built = test::build_model("models/resnet_small.yaml");
  rt::Network network(built.package);
  rt::init_params(network, 1);
  int checked = 0;
  for (const rt::TensorInfo& info : built.package->params()) {
    std::string suffix = info.name.substr(info.name.rfind('.') + 1);
    std::string expected = suffix == "kernel" ? "glorot_uniform"
                           : suffix == "gamma" || suffix == "moving_variance" ? "ones"
                                                                              : "zeros";
    INFO(info.name);
    CHECK(info.initializer == expected);
    const float* values = network.params() + info.offset;
    if (expected != "glorot_uniform") {
      float value = expected == "ones" ? 1.0f : 0.0f;
      CHECK(std::all_of(values, values + info.elements(), [&](float v) { return v == value; }));
    }
    ++checked;
  }
  CHECK(checked > 10);
}

TEST_CASE("weights: safetensors round trip, and clear errors for bad files", "[runtime]") {
  test::BuiltModel built = test::build_model("models/mnist_cnn.yaml");
  rt::Network a(built.package), b(built.package);
  test::randomize_params(a, 5);
  std::string path = scratch("weights.safetensors");
  rt::save_weights(a, path);
  rt::load_weights(b, path);
  CHECK(std::equal(a.params(), a.params() + built.package->param_floats(), b.params()));
  std::map<std::string, std::string> metadata;
  auto tensors = rt::load_safetensors(path, &metadata);
  CHECK(tensors.at("conv2d.kernel").shape == std::vector<int64_t>{3, 3, 1, 32});
  CHECK(metadata.at("model") == "mnist_cnn");

  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::string bad = scratch("bad.safetensors");
  write_bytes(bad, bytes.substr(0, bytes.size() - 100));
  CHECK_THROWS_WITH(rt::load_weights(b, bad), Catch::Contains(bad) && Catch::Contains("truncated"));
  write_bytes(bad, bytes.substr(0, 5));
  CHECK_THROWS_WITH(rt::load_weights(b, bad), Catch::Contains("not a safetensors file"));
  write_bytes(bad, std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8) + "{}");
  CHECK_THROWS_WITH(rt::load_weights(b, bad), Catch::Contains("header length"));
  write_bytes(bad, std::string("\x02\x00\x00\x00\x00\x00\x00\x00", 8) + "[]");
  CHECK_THROWS_WITH(rt::load_weights(b, bad), Catch::Contains("not a JSON object"));

  // Weights of another model are refused, naming the tensor that does not fit.
  test::BuiltModel lenet = test::build_model("models/lenet5.yaml");
  rt::Network other(lenet.package);
  CHECK_THROWS_WITH(rt::load_weights(other, path),
                    Catch::Contains("'conv2d.kernel' has shape [3, 3, 1, 32], but the model needs [5, 5, 1, 6]"));
  test::BuiltModel resnet = test::build_model("models/resnet_small.yaml");
  rt::Network third(resnet.package);
  CHECK_THROWS_WITH(rt::load_weights(third, path),
                    Catch::Contains("no tensor 'stem.kernel' for model 'resnet_small'") &&
                        Catch::Contains("belong to another model"));
}
