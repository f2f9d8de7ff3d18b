// cnnc train MODEL.yaml: train a model on IDX data (default: Fashion-MNIST) and save its weights.
// cnnc eval MODEL.yaml --weights W: loss, accuracy and confusion matrix on the test set.
#include <sched.h>
#include <unistd.h>

#include <csignal>
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "codegen/codegen.h"
#include "codegen/package.h"
#include "driver/commands.h"
#include "driver/distributed.h"
#include "driver/load_model.h"
#include "graph/print.h"
#include "support/text.h"
#include "trainer.h"
#include "weights.h"

namespace cnnc {

namespace {

const char* kDefaultData = "/usr/share/datasets/fashion-mnist";

// SIGINT, SIGTERM and SIGUSR1 stop training after the current step, with a checkpoint. Under
// mpirun, SIGUSR1 is the one to send (mpirun passes it to every rank; on SIGINT or SIGTERM it
// kills the ranks itself within about 2 s).
void on_stop_signals(void (*handler)(int)) {
  for (int signal : {SIGINT, SIGTERM, SIGUSR1}) std::signal(signal, handler);
}
void on_interrupt(int) {
  rt::request_stop();
  on_stop_signals(SIG_DFL);  // a second Ctrl-C stops at once
}

std::string checkpoint_for(const std::string& weights) {
  std::filesystem::path path(weights);
  std::string stem = path.extension() == ".safetensors" ? path.stem().string() : path.filename().string();
  return (path.parent_path() / (stem + ".checkpoint.safetensors")).string();
}

struct TrainOptions {
  std::string model, data = kDefaultData, target = "host", output, resume, metrics, checkpoint;
  int64_t epochs = 0, batch_size = 0, train_limit = -1, test_limit = -1;
  uint64_t seed = 0;
  int threads = 0;
  double validation_split = 0;
  bool skip_bad_images = false;
  int64_t bucket_kib = 256;
};

// One rank's error ends the whole job at once, after its message (the others would wait for it
// in a collective): printed as main() prints it, then MPI_Abort with main's exit status.
[[noreturn]] void end_job(const MpiSession& mpi, std::exception_ptr error) {
  int status = report_error(error, fmt::format("rank {}: ", mpi.rank()));
  std::cerr << std::flush;
  mpi.abort(status);
}

// cnnc train, alone or as one rank of `mpi`'s job.
int train_action(const TrainOptions& options, bool seed_given, const MpiSession* mpi) {
  const bool parallel = mpi && mpi->size() > 1;
  // One rank per machine builds the package (or finds it in the cache), then its neighbours load it.
  if (parallel && mpi->local_rank() != 0) mpi->local_barrier();
  LoadedModel loaded = load_model(options.model, options.target, false);
  if (parallel && mpi->local_rank() == 0) mpi->local_barrier();

  const Graph& graph = loaded.graph;
  rt::Package& package = *loaded.package;
  if (std::optional<UserError> blocker = training_blocker(graph)) throw *blocker;
  const TrainSpec& spec = graph.train;
  rt::TrainConfig config;
  config.epochs = options.epochs > 0 ? options.epochs : spec.epochs;
  config.batch_size = options.batch_size > 0 ? options.batch_size : spec.batch_size;
  config.seed = seed_given ? options.seed : uint64_t(spec.seed);
  config.optimizer = spec.optimizer.kind;
  config.learning_rate = float(spec.optimizer.learning_rate);
  config.beta_1 = float(spec.optimizer.beta_1);
  config.beta_2 = float(spec.optimizer.beta_2);
  config.epsilon = float(spec.optimizer.epsilon);
  config.momentum = float(spec.optimizer.momentum);
  config.model_hash = model_fingerprint(graph);
  config.schedule = spec.schedule.kind;
  config.decay_steps = spec.schedule.decay_steps;
  config.decay_rate = spec.schedule.decay_rate;
  config.staircase = spec.schedule.staircase;
  config.alpha = spec.schedule.alpha;
  config.warmup_steps = spec.schedule.warmup_steps;
  config.weight_decay = spec.weight_decay;
  config.global_clipnorm = spec.global_clipnorm;
  config.label_smoothing = spec.label_smoothing;
  config.early_stopping = spec.early_stopping.enabled;
  config.monitor = spec.early_stopping.monitor;
  config.patience = spec.early_stopping.patience;
  config.min_delta = spec.early_stopping.min_delta;
  config.restore_best_weights = spec.early_stopping.restore_best_weights;
  config.crop_padding = spec.augmentation.crop_padding;
  config.horizontal_flip = spec.augmentation.horizontal_flip;
  std::string output = options.output.empty() ? graph.name + ".safetensors" : options.output;
  config.checkpoint = options.checkpoint.empty() ? checkpoint_for(output) : options.checkpoint;
  config.resume = options.resume;
  config.metrics = options.metrics;
  const int rank = parallel ? mpi->rank() : 0, ranks = parallel ? mpi->size() : 1;
  if (config.batch_size % ranks != 0)
    throw UserError(SourceLoc{options.model, 0, 0},
                    fmt::format("the batch of {} does not divide among {} ranks: each rank takes an equal share of "
                                "every batch; choose --batch-size a multiple of {} (or another number of ranks)",
                                config.batch_size, ranks, ranks));

  const Shape& input_shape = graph.nodes[0].shape;
  int64_t classes = package.output_elements();
  if (!spec.classes.empty() && int64_t(spec.classes.size()) != classes)
    throw UserError(spec.loc, fmt::format("train: 'classes' names {} classes, but the model has {} outputs",
                                          spec.classes.size(), classes));
  if ((config.crop_padding > 0 || config.horizontal_flip) && input_shape.size() != 3)
    throw UserError(spec.loc, "train: 'augmentation' applies to image inputs; this model's input is a vector");
  rt::DataOptions data_options;
  data_options.train_limit = options.train_limit;
  data_options.test_limit = options.test_limit;
  data_options.validation_split = options.validation_split;
  data_options.skip_bad_images = options.skip_bad_images;
  data_options.seed = config.seed;
  data_options.classes = spec.classes;
  rt::TrainTestData data = rt::load_data(options.data, input_shape, classes, data_options);
  if (rank == 0)
    for (const std::string& skipped : data.skipped) std::cerr << "cnnc: skipped " << skipped << "\n";
  const rt::Dataset& train_data = data.train;
  const rt::Dataset& test_data = data.test;
  if (train_data.images.count < ranks)
    throw UserError(SourceLoc{options.data, 0, 0}, fmt::format("{} for {} ranks", plural(train_data.images.count, "training image"), ranks));

  // Ranks sharing a machine share its cores: by default each takes its part of those it may run on.
  int threads = options.threads;
  if (parallel && threads == 0) {
    cpu_set_t cpus;
    int allowed = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
    int cores = int(std::max(1u, std::thread::hardware_concurrency()));
    threads = std::max(1, std::min(allowed, cores / mpi->local_size()));
  }
  package.set_threads(threads);
  rt::Network network(loaded.package);
  if (initial_weights(network, loaded, "", config.seed) == InitialWeights::Onnx && rank == 0)
    std::cout << fmt::format("Starting from the weights in {}\n", options.model);
  std::unique_ptr<rt::DataParallel> data_parallel;
  if (parallel) {
    data_parallel = mpi_data_parallel(*mpi, network, options.bucket_kib * 1024);
    config.parallel = data_parallel.get();
  }
  std::string optimizer = config.optimizer == "adam"
                              ? fmt::format("adam (learning_rate {})", config.learning_rate)
                              : fmt::format("sgd (learning_rate {}, momentum {})", config.learning_rate, config.momentum);
  if (rank == 0)
    std::cout << fmt::format("Training {} ({} parameters) on {} from {}, validating on {}: {}, batch {}{}, {}, seed {}\n",
                             graph.name, with_commas(graph.total_params()), plural(train_data.images.count, "image"),
                             data.description, test_data.images.count, plural(config.epochs, "epoch"), config.batch_size,
                             parallel ? fmt::format(" ({} per rank on {} ranks, {} each)", config.batch_size / ranks,
                                                    ranks, plural(threads, "thread"))
                                      : "",
                             optimizer, config.seed)
              << std::flush;

  on_stop_signals(on_interrupt);
  // (mpirun gives its ranks a terminal of their own even when its output goes to a file: plain lines.)
  bool terminal = isatty(STDOUT_FILENO) != 0 && !parallel;
  rt::TrainResult result;
  try {
    result = rt::train(network, train_data, test_data, config, std::cout, terminal);
  } catch (...) {
    // Ended here, while the network and the reduction's buffers still exist: a reduction still
    // running must not write into freed memory.
    if (parallel) end_job(*mpi, std::current_exception());
    throw;
  }
  on_stop_signals(SIG_DFL);
  if (result.interrupted) return 130;
  if (rank != 0) return 0;  // (every rank holds the same weights; rank 0 writes them)
  rt::save_weights(network, output, data.classes);
  rt::EvalResult test = rt::evaluate(network, test_data);
  std::cout << fmt::format("Test accuracy: {:.4f} (loss {:.4f}) on {}\n", test.accuracy, test.loss,
                           plural(test_data.images.count, "image"));
  std::cout << fmt::format("Saved weights to {} and the checkpoint to {}\n", output, config.checkpoint);
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app, CommandAction& action) {
  auto options = std::make_shared<TrainOptions>();
  CLI::App* train = app.add_subcommand("train", "Train a model on IDX image data and save its weights (safetensors); under "
                                       "mpirun, data-parallel across its ranks (docs/distributed.md)");
  train->add_option("model", options->model, "Model file (YAML with a train: section, defaults apply without one; or ONNX: .onnx, training starts from its weights)")
      ->required();
  train->add_option("--data", options->data,
                    "Directory with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz] and the t10k-* test "
                    "files, or with image folders train/<class>/*.png|jpg and test/<class>/* (class names: the folder "
                    "names, sorted)")
      ->capture_default_str();
  train->add_option("--validation-split", options->validation_split,
                    "Image folders without test/: hold out this fraction of train/ for validation")
      ->check(CLI::Range(0.0, 0.99));
  train->add_flag("--skip-bad-images", options->skip_bad_images,
                  "Leave out image files that cannot be decoded (listed) instead of stopping at the first");
  train->add_option("--epochs", options->epochs, "Epochs (default: the model's train: epochs)")->check(CLI::Range(int64_t(1), int64_t(100000)));
  train->add_option("--batch-size", options->batch_size, "Batch size (default: the model's train: batch_size)")
      ->check(CLI::Range(int64_t(1), int64_t(65536)));
  train->add_option("--seed", options->seed, "Seed of initialization, shuffling and dropout (default: train: seed)");
  train->add_option("--threads", options->threads, "Threads (0: one per core)")->capture_default_str()->check(CLI::Range(0, 1024));
  train->add_option("--target", options->target, "Target to compile for (must run on this machine)")->capture_default_str();
  train->add_option("-o,--output", options->output, "Weights file to write (default: <model name>.safetensors)");
  train->add_option("--checkpoint", options->checkpoint,
                    "Checkpoint written after every epoch and on Ctrl-C (default: <output stem>.checkpoint.safetensors)");
  train->add_option("--resume", options->resume, "Continue from this checkpoint exactly where it stopped");
  train->add_option("--metrics", options->metrics,
                    "Write one JSON object per epoch (epoch, loss, accuracy, val_loss, val_accuracy, seconds, "
                    "images_per_second) to this file");
  train->add_option("--bucket-kib", options->bucket_kib,
                    "Under mpirun (docs/distributed.md): gradients are summed across ranks in buckets of about this "
                    "many KiB, each as soon as backward has finished it; 0: all at once after backward")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(0), int64_t(1) << 22));
  train->add_option("--train-limit", options->train_limit, "Use only the first N training images (quick runs)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  train->add_option("--test-limit", options->test_limit, "Use only the first N test images")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  train->callback([options, train, &action] {
    bool seed_given = train->count("--seed") > 0;
    action = [options, seed_given] {
      // Under mpirun: one rank of a data-parallel job (docs/distributed.md). An error on any rank
      // ends the whole job at once, after its message, instead of leaving the others waiting.
      std::unique_ptr<MpiSession> mpi;
      if (launched_by_mpi()) mpi = std::make_unique<MpiSession>();
      if (!mpi || mpi->size() == 1) return train_action(*options, seed_given, mpi.get());
      try {
        return train_action(*options, seed_given, mpi.get());
      } catch (...) {
        end_job(*mpi, std::current_exception());
      }
    };
  });
}

void add_eval_command(CLI::App& app, CommandAction& action) {
  struct Options {
    std::string model, weights, data = kDefaultData;
    int64_t limit = -1;
    int threads = 0;
    bool skip_bad_images = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* eval = app.add_subcommand("eval", "Evaluate trained weights: loss, accuracy and the confusion matrix");
  eval->add_option("model", options->model, "Model file (YAML, or ONNX: .onnx)")->required();
  eval->add_option("-w,--weights", options->weights,
                   "Weights (safetensors, from cnnc train); required unless the model is ONNX (its own weights)");
  eval->add_option("--data", options->data,
                   "Directory with t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], or image folders "
                   "test/<class>/*")
      ->capture_default_str();
  eval->add_flag("--skip-bad-images", options->skip_bad_images, "Leave out image files that cannot be decoded");
  eval->add_option("--limit", options->limit, "Use only the first N test images")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  eval->add_option("--threads", options->threads, "Threads (0: one per core)")->capture_default_str()->check(CLI::Range(0, 1024));
  eval->callback([options, &action] {
    action = [options] {
      LoadedModel loaded = load_model(options->model, "host", true);
      rt::Network network(loaded.package);
      loaded.package->set_threads(options->threads);
      if (options->weights.empty() && !loaded.onnx)
        throw UserError(SourceLoc{options->model, 0, 0}, "eval needs --weights (the model file has none)");
      rt::DataOptions data_options;
      initial_weights(network, loaded, options->weights, 0, &data_options.classes);
      int64_t classes = loaded.package->output_elements();
      data_options.test_limit = options->limit;
      data_options.skip_bad_images = options->skip_bad_images;
      rt::TrainTestData loaded_data = rt::load_data(options->data, loaded.graph.nodes[0].shape, classes, data_options,
                                                    /*test_only=*/true);
      const rt::Dataset& data = loaded_data.test;
      std::vector<std::string> names = loaded_data.classes;
      rt::EvalResult result = rt::evaluate(network, data);
      std::cout << fmt::format("{} on {} from {}\nloss: {:.4f} - accuracy: {:.4f}\n\n", loaded.graph.name,
                               plural(data.images.count, "test image"), options->data, result.loss, result.accuracy);
      // Rows labelled with the class names where known; columns by number.
      auto row_label = [&](int64_t k) {
        return size_t(k) < names.size() ? fmt::format("{} {}", k, names[size_t(k)]) : fmt::format("{}", k);
      };
      size_t label_width = 6;
      for (int64_t k = 0; k < classes; ++k) label_width = std::max(label_width, row_label(k).size() + 2);
      std::cout << "Confusion matrix (rows: true class, columns: predicted class)\n"
                << std::string(label_width, ' ');
      for (int64_t k = 0; k < classes; ++k) std::cout << fmt::format("{:>6}", k);
      std::cout << "\n";
      for (int64_t t = 0; t < classes; ++t) {
        std::cout << fmt::format("{:<{}}", row_label(t), label_width);
        for (int64_t k = 0; k < classes; ++k) std::cout << fmt::format("{:>6}", result.confusion[size_t(t)][size_t(k)]);
        std::cout << "\n";
      }
      return 0;
    };
  });
}

}  // namespace cnnc
