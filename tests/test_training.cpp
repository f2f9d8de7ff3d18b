// Training end to end on synthetic IDX data: the loss falls, checkpoints round-trip, resuming
// equals training without interruption, the same seed gives the same weights, bad data and bad
// checkpoints give clear errors.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <cmath>

#include <fmt/format.h>
#include <stb_image_write.h>

#include "data.h"
#include "test_support.h"
#include "trainer.h"
#include "weights.h"

using namespace cnnc;
namespace fs = std::filesystem;

namespace {

std::string scratch_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("cnnc-train-test-" + std::to_string(getpid())) / name;
  fs::create_directories(dir);
  return dir.string();
}

void write_idx(const std::string& path, uint32_t magic, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary);
  for (uint32_t value : std::vector<uint32_t>{magic}) out.put(char(value >> 24)).put(char(value >> 16)).put(char(value >> 8)).put(char(value));
  for (uint32_t value : dims) out.put(char(value >> 24)).put(char(value >> 16)).put(char(value >> 8)).put(char(value));
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
}

// 12x12 images of 4 classes: a bright bar (horizontal top/bottom, vertical left/right) plus noise.
void write_synthetic(const std::string& dir, const std::string& prefix, int count, uint32_t seed) {
  std::mt19937 random(seed);
  std::vector<uint8_t> images, labels;
  for (int i = 0; i < count; ++i) {
    int label = int(random() % 4);
    labels.push_back(uint8_t(label));
    for (int y = 0; y < 12; ++y)
      for (int x = 0; x < 12; ++x) {
        bool bar = (label == 0 && y < 3) || (label == 1 && y > 8) || (label == 2 && x < 3) || (label == 3 && x > 8);
        images.push_back(uint8_t(std::min<uint32_t>(255, (bar ? 180 : 0) + random() % 60)));
      }
  }
  write_idx(dir + "/" + prefix + "-images-idx3-ubyte", 0x803, {uint32_t(count), 12, 12}, images);
  write_idx(dir + "/" + prefix + "-labels-idx1-ubyte", 0x801, {uint32_t(count)}, labels);
}

struct Fixture {
  test::BuiltModel built = test::build_model("tests/models/train_small.yaml");
  std::string data = scratch_dir("data");
  rt::Dataset train_data, test_data;
  Fixture() {
    write_synthetic(data, "train", 200, 1);
    write_synthetic(data, "t10k", 64, 2);
    std::vector<int64_t> shape = built.graph.nodes[0].shape;
    train_data = rt::load_dataset(data, "train", -1, shape, 4);
    test_data = rt::load_dataset(data, "t10k", -1, shape, 4);
  }
  rt::TrainConfig config(const std::string& name) const {
    rt::TrainConfig config;
    config.epochs = 3;
    config.batch_size = 8;
    config.seed = 3;
    config.learning_rate = 0.01f;
    config.model_hash = model_fingerprint(built.graph);
    config.checkpoint = scratch_dir(name) + "/checkpoint.safetensors";
    return config;
  }
  std::vector<float> run(rt::TrainConfig config, int threads = 2) {
    built.package->set_threads(threads);
    rt::Network network(built.package);
    rt::init_params(network, config.seed);
    std::ostringstream log;
    rt::train(network, train_data, test_data, config, log, false);
    return std::vector<float>(network.params(), network.params() + built.package->param_floats());
  }
};

}  // namespace

TEST_CASE("training: the loss falls and the accuracy rises on a small data set", "[training]") {
  Fixture fixture;
  rt::Network network(fixture.built.package);
  rt::init_params(network, 3);
  double before = rt::evaluate(network, fixture.test_data).loss;
  std::ostringstream log;
  rt::TrainConfig config = fixture.config("falls");
  config.metrics = scratch_dir("falls") + "/metrics.jsonl";
  rt::TrainResult result = rt::train(network, fixture.train_data, fixture.test_data, config, log, false);
  REQUIRE(result.history.size() == 3);
  INFO(log.str());
  CHECK(result.history.back().loss < result.history.front().loss);
  CHECK(result.history.back().val_loss < before);
  CHECK(result.history.back().val_accuracy >= 0.9);  // the bars are easy: chance is 0.25
  CHECK_FALSE(result.interrupted);
  // Metrics: one JSON object per epoch, with exactly the documented keys.
  std::ifstream metrics(config.metrics);
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    ++lines;
    CHECK(line.rfind("{\"epoch\": " + std::to_string(lines) + ", \"loss\": ", 0) == 0);
    for (const char* key : {"\"accuracy\"", "\"val_loss\"", "\"val_accuracy\"", "\"seconds\"", "\"images_per_second\""})
      CHECK(line.find(key) != std::string::npos);
  }
  CHECK(lines == 3);
  CHECK(log.str().find("val_accuracy") != std::string::npos);
}

TEST_CASE("training: the same seed gives bit-identical weights with 1 or 2 threads, another seed other weights", "[training]") {
  Fixture fixture;
  std::vector<float> first = fixture.run(fixture.config("same1"));
  std::vector<float> second = fixture.run(fixture.config("same2"));
  CHECK(first == second);
  rt::TrainConfig other = fixture.config("other");
  other.seed = 4;
  CHECK(fixture.run(other) != first);
  // Reductions run in a fixed order inside each output element, so the thread count does not matter either.
  CHECK(fixture.run(fixture.config("one_thread"), 1) == first);
}

TEST_CASE("training: resuming from a checkpoint equals training without interruption", "[training]") {
  Fixture fixture;
  std::vector<float> uninterrupted = fixture.run(fixture.config("whole"));

  SECTION("interrupted at an epoch boundary") {
    rt::TrainConfig first = fixture.config("boundary");
    first.epochs = 1;
    fixture.run(first);
    rt::TrainConfig second = fixture.config("boundary");
    second.resume = first.checkpoint;
    CHECK(fixture.run(second) == uninterrupted);
  }
  SECTION("interrupted in the middle of an epoch (as by Ctrl-C)") {
    rt::TrainConfig first = fixture.config("middle");
    first.stop_after = [](int64_t step) { return step == 37; };  // epoch 2, batch 12 of 25
    std::vector<float> partial = fixture.run(first);
    CHECK(partial != uninterrupted);
    rt::TrainConfig second = fixture.config("middle");
    second.resume = first.checkpoint;
    CHECK(fixture.run(second) == uninterrupted);
  }
}

TEST_CASE("training: checkpoints round-trip and bad ones give clear errors", "[training]") {
  Fixture fixture;
  rt::TrainConfig config = fixture.config("roundtrip");
  config.epochs = 1;
  fixture.built.package->set_threads(2);
  rt::Network network(fixture.built.package);
  rt::init_params(network, 3);
  std::ostringstream log;
  rt::train(network, fixture.train_data, fixture.test_data, config, log, false);

  rt::Network restored(fixture.built.package);
  rt::CheckpointPosition position = rt::load_checkpoint(restored, config, config.checkpoint);
  CHECK(position.epoch == 1);
  CHECK(position.batch == 0);
  CHECK(position.step == 25);
  int64_t floats = fixture.built.package->param_floats();
  CHECK(std::equal(network.params(), network.params() + floats, restored.params()));
  for (int slot : {0, 1})
    CHECK(std::equal(network.optimizer_state(slot), network.optimizer_state(slot) + floats, restored.optimizer_state(slot)));

  std::string bytes;
  {
    std::ifstream in(config.checkpoint, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::string bad = scratch_dir("roundtrip") + "/bad.safetensors";
  std::ofstream(bad, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  CHECK_THROWS_WITH(rt::load_checkpoint(restored, config, bad), Catch::Contains("truncated"));

  rt::TrainConfig other_batch = config;
  other_batch.batch_size = 16;
  CHECK_THROWS_WITH(rt::load_checkpoint(restored, other_batch, config.checkpoint),
                    Catch::Contains("batch_size 8") && Catch::Contains("16"));
  rt::TrainConfig other_model = config;
  other_model.model_hash = "0123";
  CHECK_THROWS_WITH(rt::load_checkpoint(restored, other_model, config.checkpoint), Catch::Contains("another model"));
  std::string weights = scratch_dir("roundtrip") + "/weights.safetensors";
  rt::save_weights(network, weights);
  CHECK_THROWS_WITH(rt::load_checkpoint(restored, config, weights), Catch::Contains("not a cnnc checkpoint"));
}

TEST_CASE("training data: truncated files, wrong magic numbers and bad labels give clear errors", "[training]") {
  Fixture fixture;
  std::vector<int64_t> shape = {12, 12, 1};
  std::string dir = scratch_dir("baddata");
  write_synthetic(dir, "train", 10, 5);
  CHECK_THROWS_WITH(rt::load_dataset(dir, "train", -1, shape, 3), Catch::Contains("train-labels-idx1-ubyte") &&
                                                                      Catch::Contains("not one of the model's 3 classes"));
  CHECK_THROWS_WITH(rt::load_dataset(dir, "train", -1, {28, 28, 1}, 4), Catch::Contains("the images are 12x12x1"));
  CHECK_THROWS_WITH(rt::load_dataset(dir, "t10k", -1, shape, 4),
                    Catch::Contains("no t10k-images-idx3-ubyte[.gz]") && Catch::Contains("dataset-fashion-mnist"));
  write_idx(dir + "/train-labels-idx1-ubyte", 0x801, {9}, std::vector<uint8_t>(9, 1));
  CHECK_THROWS_WITH(rt::load_dataset(dir, "train", -1, shape, 4), Catch::Contains("9 labels, but"));
  write_idx(dir + "/train-labels-idx1-ubyte", 0x803, {10}, std::vector<uint8_t>(10, 1));
  CHECK_THROWS_WITH(rt::load_dataset(dir, "train", -1, shape, 4), Catch::Contains("not an IDX label file"));
  write_idx(dir + "/train-images-idx3-ubyte", 0x803, {10, 12, 12}, std::vector<uint8_t>(500, 1));
  CHECK_THROWS_WITH(rt::load_dataset(dir, "train", -1, shape, 4), Catch::Contains("truncated"));
}

TEST_CASE("training: a model that cannot be trained says why", "[training]") {
  test::BuiltModel dag = test::build_model("tests/models/ops_dag.yaml");  // ends in a sigmoid
  CHECK_FALSE(dag.package->trainable());
  CHECK_THAT(dag.package->untrainable_reason(), Catch::Contains("ops_dag.yaml:") && Catch::Contains("end in a softmax"));
  rt::Network network(dag.package);
  std::vector<float> input(static_cast<size_t>(dag.package->input_elements()), 0.5f);
  std::vector<int32_t> labels = {1};
  CHECK_THROWS_WITH(network.train_step(input.data(), labels.data(), 1), Catch::Contains("softmax"));
  Graph no_softmax = compile_graph(parse_model_text(
      "input: {shape: [4]}\nlayers:\n  - dense: {units: 3, activation: relu}\n", "m.yaml"));
  CHECK_THAT(training_unsupported_reason(no_softmax), Catch::Contains("m.yaml:3:5") && Catch::Contains("softmax"));
}

TEST_CASE("training: a residual network with batchnorm trains, and its moving statistics move", "[training]") {
  test::BuiltModel resnet = test::build_model("models/resnet_small.yaml");
  REQUIRE(resnet.package->trainable());
  resnet.package->set_threads(2);
  rt::Network network(resnet.package);
  rt::init_params(network, 7);
  const float* moving_mean = network.param("block1_bn1.moving_mean");
  REQUIRE(moving_mean != nullptr);
  std::vector<float> before(moving_mean, moving_mean + 16);
  // Two classes: bright upper half or bright lower half.
  const int batch = 16;
  std::vector<float> input(static_cast<size_t>(batch * 784), 0.0f);
  std::vector<int32_t> labels(batch);
  for (int b = 0; b < batch; ++b) {
    labels[size_t(b)] = b % 2;
    for (int y = 0; y < 14; ++y)
      for (int x = 0; x < 28; ++x) input[size_t(b * 784 + (y + 14 * (b % 2)) * 28 + x)] = 1.0f;
  }
  network.set_optimizer("adam", 0.01f, 0.9f, 0.999f, 1e-7f, 0.0f);
  float first = network.train_step(input.data(), labels.data(), batch).loss_sum;
  float last = first;
  for (int step = 0; step < 30; ++step) last = network.train_step(input.data(), labels.data(), batch).loss_sum;
  CHECK(last < 0.5f * first);
  CHECK_FALSE(std::equal(before.begin(), before.end(), network.param("block1_bn1.moving_mean")));
}

TEST_CASE("training: batchnorm's batch statistics keep their digits on channels far from zero and after an outlying "
          "first example",
          "[training]") {
  // One pass of sums of x - K (K the mean of the first examples' values): E[x^2] - E[x]^2 in
  // float would lose every digit of channel 1's variance (1e4 + noise of 1e-2), and K near
  // example 0's outlying value 1e4 (channel 2) must not cost more than the bound allows.
  test::BuiltModel built = test::build_model("tests/models/bn_offset.yaml");
  REQUIRE(built.package->trainable());
  rt::Network network(built.package);
  rt::init_params(network, 3);
  const int batch = 32, pixels = 25, channels = 3;
  std::mt19937 random(11);
  std::normal_distribution<double> noise(0.0, 1.0);
  std::vector<float> input(static_cast<size_t>(batch * pixels * channels));
  for (int b = 0; b < batch; ++b)
    for (int p = 0; p < pixels; ++p) {
      float* value = &input[size_t((b * pixels + p) * channels)];
      value[0] = float(1000 + noise(random));
      value[1] = float(1e4 + 1e-2 * noise(random));
      value[2] = b == 0 ? 1e4f : float(noise(random));
    }
  std::vector<int32_t> labels(batch, 0);
  network.train_step(input.data(), labels.data(), batch);
  const float* mean = network.param("bn.moving_mean");
  const float* variance = network.param("bn.moving_variance");
  REQUIRE(mean != nullptr);
  REQUIRE(variance != nullptr);
  for (int c = 0; c < channels; ++c) {
    double sum = 0, squares = 0;
    for (int i = 0; i < batch * pixels; ++i) sum += input[size_t(i * channels + c)];
    double exact_mean = sum / (batch * pixels);
    for (int i = 0; i < batch * pixels; ++i) {
      double d = input[size_t(i * channels + c)] - exact_mean;
      squares += d * d;
    }
    double exact_variance = squares / (batch * pixels);
    INFO("channel " << c << ": mean " << mean[c] << " vs " << exact_mean << ", variance " << variance[c] << " vs "
                    << exact_variance);
    CHECK(std::fabs(mean[c] - exact_mean) <= 1e-6 * std::fabs(exact_mean) + 1e-4 * std::sqrt(exact_variance));
    CHECK(std::fabs(variance[c] - exact_variance) <= 1e-3 * exact_variance);
  }
}

TEST_CASE("training options: the learning-rate schedules follow Keras's formulas", "[training]") {
  rt::TrainConfig config;
  config.learning_rate = 0.1f;
  config.schedule = "exponential_decay";
  config.decay_steps = 10;
  config.decay_rate = 0.5;
  CHECK(rt::learning_rate_at(config, 0, 100) == Approx(0.1));
  CHECK(rt::learning_rate_at(config, 10, 100) == Approx(0.05));
  CHECK(rt::learning_rate_at(config, 15, 100) == Approx(0.1 * std::pow(0.5, 1.5)));
  config.staircase = true;
  CHECK(rt::learning_rate_at(config, 15, 100) == Approx(0.05));
  config.schedule = "cosine_decay";
  config.decay_steps = 0;  // the rest of the run
  config.warmup_steps = 10;
  config.alpha = 0.1;
  CHECK(rt::learning_rate_at(config, 0, 110) == Approx(0.0));
  CHECK(rt::learning_rate_at(config, 5, 110) == Approx(0.05));
  CHECK(rt::learning_rate_at(config, 10, 110) == Approx(0.1));
  CHECK(rt::learning_rate_at(config, 60, 110) == Approx(0.1 * (0.9 * 0.5 + 0.1)));  // half way: cos = 0
  CHECK(rt::learning_rate_at(config, 110, 110) == Approx(0.01));
  CHECK(rt::learning_rate_at(config, 500, 110) == Approx(0.01));
}

TEST_CASE("training options: schedule, weight decay, augmentation and early stopping resume exactly", "[training]") {
  Fixture fixture;
  auto with_options = [&](const std::string& name) {
    rt::TrainConfig config = fixture.config(name);
    config.schedule = "cosine_decay";
    config.warmup_steps = 10;
    config.weight_decay = 0.05;
    config.crop_padding = 2;
    config.horizontal_flip = true;
    config.early_stopping = true;
    config.patience = 5;
    config.restore_best_weights = true;
    return config;
  };
  std::vector<float> whole = fixture.run(with_options("opts_whole"));
  CHECK(fixture.run(with_options("opts_again")) == whole);  // seeded: bit-reproducible
  rt::TrainConfig first = with_options("opts_middle");
  first.stop_after = [](int64_t step) { return step == 37; };
  CHECK(fixture.run(first) != whole);
  rt::TrainConfig second = with_options("opts_middle");
  second.resume = first.checkpoint;
  CHECK(fixture.run(second) == whole);
  // A resumed run must keep the settings.
  rt::TrainConfig changed = with_options("opts_middle");
  changed.resume = first.checkpoint;
  changed.weight_decay = 0.01;
  CHECK_THROWS_WITH(fixture.run(changed), Catch::Contains("resume with the same settings"));

  // Each option changes the result; weight decay shrinks the weights.
  auto norm = [](const std::vector<float>& w) {
    double sum = 0;
    for (float v : w) sum += double(v) * v;
    return sum;
  };
  rt::TrainConfig plain = fixture.config("opts_plain");
  std::vector<float> base = fixture.run(plain);
  rt::TrainConfig decayed = fixture.config("opts_decay");
  decayed.weight_decay = 0.2;
  std::vector<float> shrunk = fixture.run(decayed);
  CHECK(norm(shrunk) < norm(base));
  rt::TrainConfig augmented = fixture.config("opts_augment");
  augmented.horizontal_flip = true;
  CHECK(fixture.run(augmented) != base);
}

TEST_CASE("training options: early stopping stops and restores the best weights", "[training]") {
  Fixture fixture;
  rt::TrainConfig one = fixture.config("early_one");
  one.epochs = 1;
  std::vector<float> after_one = fixture.run(one);
  rt::TrainConfig config = fixture.config("early");
  config.early_stopping = true;
  config.monitor = "val_accuracy";
  config.min_delta = 2.0;  // no epoch can improve on the first by that much
  config.restore_best_weights = true;
  fixture.built.package->set_threads(2);
  rt::Network network(fixture.built.package);
  rt::init_params(network, config.seed);
  std::ostringstream log;
  rt::TrainResult result = rt::train(network, fixture.train_data, fixture.test_data, config, log, false);
  INFO(log.str());
  CHECK(result.stopped_early);
  CHECK(result.history.size() == 2);
  CHECK(log.str().find("Early stopping: val_accuracy has not improved for 1 epoch;") != std::string::npos);
  CHECK(std::vector<float>(network.params(), network.params() + fixture.built.package->param_floats()) == after_one);
}

TEST_CASE("training data: image folders, class names, corrupt files, resizing and a validation split", "[training]") {
  test::Scratch scratch("image-folders");
  fs::path root = scratch.path;
  // The synthetic bars as PNG files in four class folders; names sorted: across, down, left, up.
  const char* names[] = {"up", "down", "left", "across"};  // label 0..3 of write_synthetic's bars
  std::mt19937 random(5);
  auto write_split = [&](const std::string& split, int count, int size) {
    for (int i = 0; i < count; ++i) {
      int label = int(random() % 4);
      std::vector<uint8_t> pixels;
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x) {
          int yy = y * 12 / size, xx = x * 12 / size;
          bool bar = (label == 0 && yy < 3) || (label == 1 && yy > 8) || (label == 2 && xx < 3) || (label == 3 && xx > 8);
          pixels.push_back(uint8_t(std::min<uint32_t>(255, (bar ? 180 : 0) + random() % 60)));
        }
      fs::path dir = root / split / names[label];
      fs::create_directories(dir);
      REQUIRE(stbi_write_png((dir / fmt::format("{:03d}.png", i)).c_str(), size, size, 1, pixels.data(), size));
    }
  };
  write_split("train", 160, 12);
  write_split("test", 40, 24);  // twice the model's size: resized
  test::BuiltModel built = test::build_model("tests/models/train_small.yaml");
  std::vector<int64_t> shape = built.graph.nodes[0].shape;
  rt::DataOptions options;
  rt::TrainTestData data = rt::load_data(root.string(), shape, 4, options);
  CHECK(data.classes == std::vector<std::string>{"across", "down", "left", "up"});
  CHECK(data.train.images.count == 160);
  CHECK(data.test.images.count == 40);
  CHECK(data.train.images.height == 12);

  // Trains like the IDX version, and the class names travel with the weights.
  rt::Network network(built.package);
  rt::init_params(network, 3);
  rt::TrainConfig config;
  config.epochs = 4;
  config.batch_size = 8;
  config.learning_rate = 0.01f;
  config.model_hash = model_fingerprint(built.graph);
  std::ostringstream log;
  rt::TrainResult result = rt::train(network, data.train, data.test, config, log, false);
  INFO(log.str());
  CHECK(result.history.back().val_accuracy >= 0.9);
  std::string weights = (root / "w.safetensors").string();
  rt::save_weights(network, weights, data.classes);
  CHECK(rt::load_class_names(weights) == data.classes);

  // A corrupt file: an error naming it, or left out with --skip-bad-images.
  std::ofstream((root / "train" / "up" / "broken.png").string()) << "not a png";
  CHECK_THROWS_WITH(rt::load_data(root.string(), shape, 4, options), Catch::Contains("broken.png"));
  options.skip_bad_images = true;
  rt::TrainTestData skipped = rt::load_data(root.string(), shape, 4, options);
  REQUIRE(skipped.skipped.size() == 1);
  CHECK(skipped.train.images.count == 160);
  // A class folder in test/ that train/ lacks, and the wrong number of classes.
  fs::create_directories(root / "test" / "sideways");
  CHECK_THROWS_WITH(rt::load_data(root.string(), shape, 4, options), Catch::Contains("sideways"));
  fs::remove_all(root / "test");
  // Without test/: a validation split, the same for the same seed.
  CHECK_THROWS_WITH(rt::load_data(root.string(), shape, 4, options), Catch::Contains("--validation-split"));
  options.validation_split = 0.25;
  rt::TrainTestData split = rt::load_data(root.string(), shape, 4, options);
  CHECK(split.train.images.count == 120);
  CHECK(split.test.images.count == 40);
  CHECK(rt::load_data(root.string(), shape, 4, options).test.labels == split.test.labels);
  CHECK_THROWS_WITH(rt::load_data(root.string(), shape, 3, options), Catch::Contains("4 class folders"));
}

TEST_CASE("image resizing: bilinear with aligned pixel centres", "[training]") {
  // 2x2 to 4x4: corners keep their values, inner pixels mix.
  std::vector<uint8_t> in = {0, 100, 200, 40};
  std::vector<uint8_t> out = rt::resize_bilinear(in.data(), 2, 2, 1, 4, 4);
  CHECK(out[0] == 0);
  CHECK(out[3] == 100);
  CHECK(out[12] == 200);
  CHECK(out[15] == 40);
  CHECK(out[1] == 25);  // x = 0.25 between 0 and 100
  // Same size: unchanged.
  CHECK(rt::resize_bilinear(in.data(), 2, 2, 1, 2, 2) == in);
}

TEST_CASE("training options: label smoothing's loss and gradients; clipping by global norm", "[training]") {
  test::BuiltModel built = test::build_model("tests/models/grad_relu.yaml");  // no dropout or batchnorm
  rt::Network network(built.package);
  test::randomize_params(network, 11);
  const int batch = 5;
  const int64_t classes = built.package->output_elements();
  std::vector<float> input = test::random_input(batch * built.package->input_elements(), 12);
  std::vector<int32_t> labels;
  for (int i = 0; i < batch; ++i) labels.push_back(int32_t((i * 7) % classes));
  std::vector<float> p = network.forward(input, batch);
  const double s = 0.2;
  double expected = 0;  // -sum over examples and classes of target * log p
  for (int n = 0; n < batch; ++n)
    for (int64_t k = 0; k < classes; ++k) {
      double target = (k == labels[size_t(n)] ? 1 - s : 0) + s / double(classes);
      expected -= target * std::log(double(p[size_t(n * classes + k)]));
    }
  network.set_label_smoothing(float(s));
  auto loss_at = [&]() { return double(network.compute_gradients(input.data(), labels.data(), batch).loss_sum); };
  CHECK(loss_at() == Approx(expected).epsilon(1e-4));
  // The gradient of the mean loss against central differences, at a few parameters.
  network.compute_gradients(input.data(), labels.data(), batch);
  const std::vector<float> grads(network.param_grads(), network.param_grads() + built.package->param_floats());
  for (int64_t k : {int64_t(0), built.package->param_floats() / 2, built.package->param_floats() - 1}) {
    float* w = network.params() + k;
    const float original = *w, h = 1e-2f;
    *w = original + h;
    network.params_changed();
    double up = loss_at();
    *w = original - h;
    network.params_changed();
    double down = loss_at();
    *w = original;
    network.params_changed();
    double numeric = (up - down) / (2 * h) / batch;
    INFO("parameter " << k);
    CHECK(grads[size_t(k)] == Approx(numeric).margin(2e-3).epsilon(2e-2));
  }
  CHECK_THROWS_WITH(network.set_label_smoothing(1.5f), Catch::Contains("label smoothing must be in [0, 1)"));

  // apply_gradients(scale) is train_step's update with the gradients scaled: with plain SGD the
  // change of every parameter is -lr * scale * gradient.
  network.set_label_smoothing(0);
  network.set_optimizer("sgd", 0.5f, 0, 0, 0, 0);
  network.compute_gradients(input.data(), labels.data(), batch);
  const std::vector<float> g(network.param_grads(), network.param_grads() + built.package->param_floats());
  const std::vector<float> before(network.params(), network.params() + built.package->param_floats());
  network.apply_gradients(0.25f);
  for (size_t k = 0; k < g.size(); k += 7) CHECK(network.params()[k] == Approx(before[k] - 0.5 * 0.25 * g[k]).margin(1e-6));
  CHECK(network.step() == 1);
}

TEST_CASE("data parallelism: the gradient hook tells each gradient once it is final; shards add up to the batch", "[training]") {
  test::BuiltModel built = test::build_model("tests/models/train_small.yaml");  // with dropout
  rt::Network network(built.package);
  test::randomize_params(network, 5);
  network.set_seed(9);
  network.set_step(3);
  const int batch = 8;
  const int64_t floats = built.package->param_floats(), pixels = built.package->input_elements();
  std::vector<float> input = test::random_input(batch * pixels, 6);
  std::vector<int32_t> labels;
  for (int i = 0; i < batch; ++i) labels.push_back(int32_t((i * 3) % 4));
  auto grads = [&] { return std::vector<float>(network.param_grads(), network.param_grads() + floats); };
  network.compute_gradients(input.data(), labels.data(), batch);
  const std::vector<float> whole = grads();

  // The hook: every trainable parameter once, its gradient already final when told, last layers first.
  const std::vector<rt::TensorInfo>& params = built.package->params();
  std::vector<int> told;
  std::vector<std::vector<float>> at_hook(params.size());
  network.set_gradient_hook([&](int p) {
    told.push_back(p);
    if (p < 0) return;
    const float* g = network.param_grads() + params[size_t(p)].offset;
    at_hook[size_t(p)].assign(g, g + params[size_t(p)].elements());
  });
  network.compute_gradients(input.data(), labels.data(), batch);
  CHECK(grads() == whole);
  for (size_t p = 0; p < params.size(); ++p) {
    INFO(params[p].name);
    CHECK(std::count(told.begin(), told.end(), int(p)) == (params[p].trainable ? 1 : 0));
    if (!params[p].trainable) continue;
    const float* g = whole.data() + params[p].offset;
    CHECK(at_hook[p] == std::vector<float>(g, g + params[p].elements()));
  }
  std::vector<int> order;  // backward's: the last layer's parameters first
  for (int p : told)
    if (p >= 0) order.push_back(p);
  REQUIRE(order.size() >= 2);
  CHECK(order.front() > order.back());
  // An exception from the hook ends compute_gradients with it, after the kernels.
  network.set_gradient_hook([](int) { throw UserError(SourceLoc{"hook", 0, 0}, "the network went away"); });
  CHECK_THROWS_WITH(network.compute_gradients(input.data(), labels.data(), batch), Catch::Contains("the network went away"));
  network.set_gradient_hook(nullptr);

  // Two shards at their offsets in the batch draw the whole batch's dropout masks: the mean of
  // their gradients is the batch's (but for rounding). At offset 0 the second shard would reuse
  // the first one's masks.
  auto shard = [&](int first, int64_t offset) {
    network.set_example_offset(offset);
    network.compute_gradients(input.data() + first * pixels, labels.data() + first, batch / 2);
    return grads();
  };
  const std::vector<float> a = shard(0, 0), b = shard(batch / 2, batch / 2), b_unshifted = shard(batch / 2, 0);
  network.set_example_offset(0);
  double largest = 0, error = 0, error_unshifted = 0;
  for (int64_t k = 0; k < floats; ++k) {
    largest = std::max(largest, double(std::abs(whole[size_t(k)])));
    error = std::max(error, std::abs(0.5 * (double(a[size_t(k)]) + b[size_t(k)]) - whole[size_t(k)]));
    error_unshifted = std::max(error_unshifted, std::abs(0.5 * (double(a[size_t(k)]) + b_unshifted[size_t(k)]) - whole[size_t(k)]));
  }
  CHECK(error <= 1e-5 * largest);
  CHECK(error_unshifted > 1e-3 * largest);
}
