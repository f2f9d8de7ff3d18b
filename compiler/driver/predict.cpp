// cnnc predict MODEL.yaml [--weights W] INPUT...: classify images with a model.
#include <algorithm>
#include <iostream>
#include <numeric>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "data.h"
#include "driver/commands.h"
#include "driver/load_model.h"
#include "weights.h"

namespace cnnc {

void add_predict_command(CLI::App& app, CommandAction& action) {
  struct Options {
    std::string model;
    std::vector<std::string> inputs;
    std::string weights;
    uint64_t seed = 0;
    bool seed_given = false;
    int top = 3;
    int digits = 4;
    int64_t limit = 10;
    int threads = 0;
    int batch_size = 256;
    bool quiet = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* predict = app.add_subcommand("predict", "Classify images: print the top classes with probabilities");
  predict->add_option("model", options->model, "Model file (YAML, or ONNX: .onnx)")->required();
  predict->add_option("inputs", options->inputs,
                      "IDX image files (gzipped or not, e.g. t10k-images-idx3-ubyte.gz) or image files (PNG, JPEG, "
                      "BMP); images must have the model's input height and width")
      ->required();
  predict->add_option("-w,--weights", options->weights,
                      "Weights (safetensors, from cnnc train); without it, an ONNX model's own weights, or Keras-default "
                      "initial weights from --seed");
  predict->add_option("--seed", options->seed, "Seed of the initial weights when no --weights is given (default: "
                                               "the model's train: seed)");
  predict->add_option("-k,--top", options->top, "Classes to print per image")->capture_default_str()->check(CLI::Range(1, 1000));
  predict->add_option("--digits", options->digits, "Decimal places of the probabilities printed")
      ->capture_default_str()
      ->check(CLI::Range(1, 9));
  predict->add_option("-n,--limit", options->limit, "Images to read from each IDX file (0: all)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  predict->add_option("--threads", options->threads, "Threads (0: one per core)")->capture_default_str()->check(CLI::Range(0, 1024));
  predict->add_flag("-q,--quiet", options->quiet, "No progress messages");
  predict->callback([options, predict, &action] {
    options->seed_given = predict->count("--seed") > 0;
    action = [options] {
      LoadedModel loaded = load_model(options->model, "host", options->quiet);
      const rt::Package& package = *loaded.package;
      const Shape& input_shape = loaded.graph.nodes[0].shape;
      if (input_shape.size() != 3)
        throw UserError(SourceLoc{options->model, 0, 0}, "predict needs a model whose input is an image [H, W, C]");
      int64_t height = input_shape[0], width = input_shape[1], channels = input_shape[2];
      if (channels != 1 && channels != 3)
        throw UserError(SourceLoc{options->model, 0, 0}, "predict reads images with 1 or 3 channels only");

      rt::Network network(loaded.package);
      package.set_threads(options->threads);
      uint64_t seed = options->seed_given ? options->seed : uint64_t(loaded.graph.train.seed);
      std::vector<std::string> names;
      if (initial_weights(network, loaded, options->weights, seed, &names) == InitialWeights::Seed && !options->quiet)
        std::cerr << "cnnc: no --weights: using untrained initial weights (predictions are meaningless)\n";

      int64_t classes = package.output_elements();
      for (const std::string& path : options->inputs) {
        rt::ImageSet images;
        std::vector<std::string> labels;
        if (rt::is_idx_file(path)) {
          images = rt::read_idx_images(path, options->limit == 0 ? -1 : options->limit);
          for (int64_t i = 0; i < images.count; ++i) labels.push_back(fmt::format("{}[{}]", path, i));
        } else {
          images = rt::read_image(path, int(channels));
          labels.push_back(path);
        }
        if (images.height != height || images.width != width || images.channels != channels)
          throw UserError(SourceLoc{path, 0, 0},
                          fmt::format("images are {}x{}x{}, but the model takes {}x{}x{} (height x width x channels)",
                                      images.height, images.width, images.channels, height, width, channels));
        for (int64_t first = 0; first < images.count; first += options->batch_size) {
          int batch = int(std::min<int64_t>(options->batch_size, images.count - first));
          std::vector<float> input(static_cast<size_t>(batch * images.image_bytes()));
          rt::to_floats(images, first, batch, input.data());
          std::vector<float> output = network.forward(input, batch);
          for (int b = 0; b < batch; ++b) {
            const float* scores = output.data() + b * classes;
            std::vector<int> order(static_cast<size_t>(classes));
            std::iota(order.begin(), order.end(), 0);
            int top = int(std::min<int64_t>(options->top, classes));
            std::partial_sort(order.begin(), order.begin() + top, order.end(),
                              [&](int a, int c) { return scores[a] > scores[c]; });
            std::vector<std::string> parts;
            for (int k = 0; k < top; ++k) parts.push_back(fmt::format("{} ({:.{}f})", names.empty() ? std::to_string(order[k]) : names[size_t(order[k])],
                                             scores[order[k]], options->digits));
            std::cout << fmt::format("{}: {}\n", labels[size_t(first + b)], fmt::join(parts, ", "));
          }
        }
      }
      return 0;
    };
  });
}

}  // namespace cnnc
