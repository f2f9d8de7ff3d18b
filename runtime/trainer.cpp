#include "trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <ostream>
#include <random>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "support/diagnostics.h"
#include "support/hash.h"
#include "support/text.h"
#include "weights.h"

namespace cnnc::rt {

namespace {

std::atomic<bool> stop_requested{false};

std::string find_idx(const std::string& dir, const std::string& name) {
  for (const std::string& candidate : {dir + "/" + name + ".gz", dir + "/" + name}) {
    std::ifstream probe(candidate);
    if (probe) return candidate;
  }
  throw UserError(SourceLoc{dir, 0, 0},
                  fmt::format("no {}[.gz] here; expected MNIST-style IDX files (Fashion-MNIST is installed in "
                              "/usr/share/datasets/fashion-mnist by the package dataset-fashion-mnist)",
                              name));
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The order of the examples in an epoch: a Fisher-Yates shuffle from (seed, epoch) alone, so that
// a resumed run sees exactly the batches an uninterrupted one would.
std::vector<int64_t> epoch_order(int64_t count, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) order[size_t(i)] = i;
  std::mt19937_64 random(seed * 0x9E3779B97F4A7C15ull + uint64_t(epoch) + 1);
  for (int64_t i = count - 1; i > 0; --i) std::swap(order[size_t(i)], order[size_t(random() % uint64_t(i + 1))]);
  return order;
}

std::string duration(double seconds) {
  if (seconds < 60) return fmt::format("{:.0f}s", seconds);
  if (seconds < 3600) return fmt::format("{}:{:02d}", int(seconds) / 60, int(seconds) % 60);
  return fmt::format("{}:{:02d}:{:02d}", int(seconds) / 3600, int(seconds) / 60 % 60, int(seconds) % 60);
}

class Progress {
 public:
  Progress(std::ostream& out, bool terminal, int64_t total) : out_(out), terminal_(terminal), total_(total) {}

  void update(int64_t done, double elapsed, int64_t done_here, double loss, double accuracy) {
    if (terminal_) {
      if (done < total_ && elapsed - last_draw_ < 0.1) return;
      last_draw_ = elapsed;
      const int width = 30;
      int filled = int(width * done / std::max<int64_t>(total_, 1));
      std::string bar = std::string(size_t(filled), '=') + (filled < width ? ">" : "") +
                        std::string(size_t(std::max(0, width - filled - 1)), '.');
      double eta = done_here > 0 ? elapsed / double(done_here) * double(total_ - done) : 0;
      out_ << fmt::format("\r{}/{} [{}] - ETA: {} - loss: {:.4f} - accuracy: {:.4f}\033[K", done, total_, bar,
                          duration(eta), loss, accuracy)
           << std::flush;
      return;
    }
    // Plain lines at each quarter of the epoch.
    int64_t quarter = (4 * done) / std::max<int64_t>(total_, 1);
    if (quarter <= last_quarter_ || done == total_) return;
    last_quarter_ = quarter;
    out_ << fmt::format("  {}/{} - {} - loss: {:.4f} - accuracy: {:.4f}\n", done, total_, duration(elapsed), loss, accuracy)
         << std::flush;
  }

  void finish() {
    if (terminal_) out_ << "\r\033[K" << std::flush;
  }

 private:
  std::ostream& out_;
  bool terminal_;
  int64_t total_;
  double last_draw_ = -1;
  int64_t last_quarter_ = 0;
};

std::string number(double value) { return fmt::format("{:.17g}", value); }

// One batch of examples as floats in [0, 1], augmented as the config asks. Each example's
// crop offset and flip come from (seed, epoch, example) alone: the same in a resumed run.
void prepare_batch(const Dataset& data, const std::vector<int64_t>& order, int64_t first, int batch,
                   const TrainConfig& config, int64_t epoch, float* input, int32_t* labels) {
  const ImageSet& images = data.images;
  const int64_t pixels = images.image_bytes(), h = images.height, w = images.width, c = images.channels;
  const bool augment = config.crop_padding > 0 || config.horizontal_flip;
  for (int i = 0; i < batch; ++i) {
    int64_t example = order[size_t(first + i)];
    const uint8_t* from = images.pixels.data() + example * pixels;
    float* to = input + i * pixels;
    labels[i] = data.labels[size_t(example)];
    if (!augment) {
      to_floats(images, example, 1, to);
      continue;
    }
    std::mt19937_64 random(config.seed * 0x9E3779B97F4A7C15ull ^ (uint64_t(epoch) << 40) ^ uint64_t(example) * 0xC2B2AE3D27D4EB4Full);
    int64_t p = config.crop_padding;
    int64_t dy = p > 0 ? int64_t(random() % uint64_t(2 * p + 1)) - p : 0;
    int64_t dx = p > 0 ? int64_t(random() % uint64_t(2 * p + 1)) - p : 0;
    bool flip = config.horizontal_flip && (random() & 1);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        int64_t sy = y + dy, sx = (flip ? w - 1 - x : x) + dx;
        bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
        for (int64_t k = 0; k < c; ++k)
          to[(y * w + x) * c + k] = inside ? float(from[(sy * w + sx) * c + k]) * (1.0f / 255.0f) : 0.0f;
      }
  }
}

// The settings a resumed run must share with the checkpoint, beyond optimizer, batch and seed.
std::string training_settings(const TrainConfig& c) {
  return fmt::format("schedule={} decay_steps={} decay_rate={} staircase={} alpha={} warmup_steps={} weight_decay={} "
                     "clipnorm={} label_smoothing={} early_stopping={} monitor={} patience={} min_delta={} restore={} "
                     "crop_padding={} flip={} epochs={}",
                     c.schedule, c.decay_steps, number(c.decay_rate), c.staircase, number(c.alpha), c.warmup_steps,
                     number(c.weight_decay), number(c.global_clipnorm), number(c.label_smoothing), c.early_stopping,
                     c.monitor, c.patience, number(c.min_delta), c.restore_best_weights, c.crop_padding,
                     c.horizontal_flip, c.schedule == "cosine_decay" ? c.epochs : 0);
}

// A reader thread that prepares batches ahead of the training loop: one thread for the whole run
// (no thread started per batch), handed one batch at a time.
class BatchReader {
 public:
  BatchReader() : thread_([this] { loop(); }) {}
  ~BatchReader() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  // Starts `job` on the reader thread; wait() returns when it is done.
  void start(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = std::move(job);
      busy_ = true;
    }
    wake_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return !busy_; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return quit_ || job_; });
      if (quit_) return;
      std::function<void()> job = std::move(job_);
      job_ = nullptr;
      lock.unlock();
      try {
        job();
      } catch (...) {
        lock.lock();
        error_ = std::current_exception();
        lock.unlock();
      }
      lock.lock();
      busy_ = false;
      done_.notify_all();
    }
  }
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::function<void()> job_;
  bool busy_ = false, quit_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

double monitored(const EpochMetrics& row, const std::string& monitor) {
  if (monitor == "val_accuracy") return row.val_accuracy;
  if (monitor == "loss") return row.loss;
  if (monitor == "accuracy") return row.accuracy;
  return row.val_loss;
}

double metadata_number(const std::map<std::string, std::string>& metadata, const std::string& key,
                       const std::string& path) {
  auto it = metadata.find(key);
  if (it == metadata.end())
    throw UserError(SourceLoc{path, 0, 0}, fmt::format("not a cnnc checkpoint: no '{}' in its metadata", key));
  char* end = nullptr;
  double value = std::strtod(it->second.c_str(), &end);
  if (it->second.empty() || *end != '\0')
    throw UserError(SourceLoc{path, 0, 0}, fmt::format("corrupt checkpoint: '{}' is '{}'", key, it->second));
  return value;
}

}  // namespace

void request_stop() { stop_requested = true; }

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

bool is_image_folder_data(const std::string& dir) {
  std::error_code error;
  return std::filesystem::is_directory(std::filesystem::path(dir) / "train", error) ||
         (std::filesystem::is_directory(std::filesystem::path(dir) / "test", error) &&
          !std::filesystem::exists(std::filesystem::path(dir) / "t10k-images-idx3-ubyte.gz", error));
}

double learning_rate_at(const TrainConfig& config, int64_t step, int64_t total_steps) {
  double lr = config.learning_rate;
  if (config.schedule == "exponential_decay") {
    double p = double(step) / double(std::max<int64_t>(config.decay_steps, 1));
    if (config.staircase) p = std::floor(p);
    return lr * std::pow(config.decay_rate, p);
  }
  if (config.schedule == "cosine_decay") {
    if (step < config.warmup_steps) return lr * double(step) / double(config.warmup_steps);
    int64_t decay = config.decay_steps > 0 ? config.decay_steps : std::max<int64_t>(total_steps - config.warmup_steps, 1);
    double done = double(std::min(step - config.warmup_steps, decay)) / double(decay);
    double cosine = 0.5 * (1 + std::cos(M_PI * done));
    return lr * ((1 - config.alpha) * cosine + config.alpha);
  }
  return lr;
}

TrainTestData load_data(const std::string& dir, const std::vector<int64_t>& input_shape, int64_t classes,
                        const DataOptions& options, bool test_only) {
  namespace fs = std::filesystem;
  TrainTestData data;
  if (!is_image_folder_data(dir)) {
    if (!test_only) data.train = load_dataset(dir, "train", options.train_limit, input_shape, classes);
    data.test = load_dataset(dir, "t10k", options.test_limit, input_shape, classes);
    data.classes = options.classes;
    std::error_code error;
    if (data.classes.empty() && classes == 10 &&
        fs::equivalent(dir, "/usr/share/datasets/fashion-mnist", error))
      data.classes = fashion_mnist_classes();
    data.description = dir;
    return data;
  }
  if (input_shape.size() != 3 || (input_shape[2] != 1 && input_shape[2] != 3))
    throw UserError(SourceLoc{dir, 0, 0}, fmt::format("image folders train models whose input is an image with 1 or 3 "
                                                      "channels; this model's input is [{}]",
                                                      fmt::join(input_shape, ", ")));
  int64_t height = input_shape[0], width = input_shape[1];
  int channels = int(input_shape[2]);
  std::vector<std::string> names = options.classes;
  std::error_code error;
  bool has_train = fs::is_directory(fs::path(dir) / "train", error), has_test = fs::is_directory(fs::path(dir) / "test", error);
  auto add_report = [&](const FolderImages& folder) {
    data.skipped.insert(data.skipped.end(), folder.skipped.begin(), folder.skipped.end());
  };
  auto to_dataset = [](FolderImages& folder) {
    Dataset d;
    d.images = std::move(folder.images);
    d.labels = std::move(folder.labels);
    return d;
  };
  if (!test_only || !has_test) {
    if (!has_train) throw UserError(SourceLoc{dir, 0, 0}, "no train/ folder of class folders here");
    FolderImages train = read_image_folder((fs::path(dir) / "train").string(), names, height, width, channels,
                                           options.skip_bad_images, has_test ? options.train_limit : -1);
    add_report(train);
    data.train = to_dataset(train);
  }
  if (has_test) {
    FolderImages test = read_image_folder((fs::path(dir) / "test").string(), names, height, width, channels,
                                          options.skip_bad_images, options.test_limit);
    add_report(test);
    data.test = to_dataset(test);
  } else {
    if (!(options.validation_split > 0 && options.validation_split < 1))
      throw UserError(SourceLoc{dir, 0, 0}, "no test/ folder here: give --validation-split F (e.g. 0.2) to hold out "
                                            "a fraction of train/ for validation");
    // A seeded shuffle, then the last fraction held out, as the same seed always gives.
    int64_t count = data.train.images.count, held = std::max<int64_t>(1, int64_t(std::llround(double(count) * options.validation_split)));
    if (held >= count) throw UserError(SourceLoc{dir, 0, 0}, "the validation split leaves no training images");
    std::vector<int64_t> order = epoch_order(count, options.seed, -2);
    Dataset train, test;
    for (Dataset* d : {&train, &test}) {
      d->images.height = height, d->images.width = width, d->images.channels = channels;
    }
    int64_t bytes = data.train.images.image_bytes();
    for (int64_t i = 0; i < count; ++i) {
      Dataset& to = i < count - held ? train : test;
      int64_t example = order[size_t(i)];
      to.images.pixels.insert(to.images.pixels.end(), data.train.images.pixels.begin() + example * bytes,
                              data.train.images.pixels.begin() + (example + 1) * bytes);
      to.labels.push_back(data.train.labels[size_t(example)]);
      ++to.images.count;
    }
    auto keep = [](Dataset& d, int64_t limit) {
      if (limit < 0 || d.images.count <= limit) return;
      d.images.count = limit;
      d.images.pixels.resize(size_t(limit * d.images.image_bytes()));
      d.labels.resize(size_t(limit));
    };
    keep(train, options.train_limit);
    keep(test, options.test_limit);
    data.train = std::move(train);
    data.test = std::move(test);
  }
  if (int64_t(names.size()) != classes)
    throw UserError(SourceLoc{dir, 0, 0}, fmt::format("{} class folders ({}), but the model has {} outputs", names.size(),
                                                      fmt::join(names, ", "), classes));
  data.classes = names;
  data.description = fmt::format("{} ({} classes: {})", dir, names.size(), fmt::join(names, ", "));
  return data;
}

Dataset load_dataset(const std::string& dir, const std::string& prefix, int64_t limit,
                     const std::vector<int64_t>& input_shape, int64_t classes) {
  std::string images_path = find_idx(dir, prefix + "-images-idx3-ubyte");
  std::string labels_path = find_idx(dir, prefix + "-labels-idx1-ubyte");
  Dataset data;
  data.images = read_idx_images(images_path, limit);
  data.labels = read_idx_labels(labels_path, limit);
  if (int64_t(data.labels.size()) != data.images.count)
    throw UserError(SourceLoc{labels_path, 0, 0}, fmt::format("{} labels, but {} has {} images", data.labels.size(),
                                                              images_path, data.images.count));
  if (input_shape.size() != 3 || input_shape[2] != 1 || input_shape[0] != data.images.height ||
      input_shape[1] != data.images.width)
    throw UserError(SourceLoc{images_path, 0, 0},
                    fmt::format("the images are {}x{}x1, but the model's input is [{}]", data.images.height,
                                data.images.width, fmt::join(input_shape, ", ")));
  for (size_t i = 0; i < data.labels.size(); ++i)
    if (data.labels[i] >= classes)
      throw UserError(SourceLoc{labels_path, 0, 0},
                      fmt::format("label {} of example {} is not one of the model's {} classes (0 to {})",
                                  int(data.labels[i]), i, classes, classes - 1));
  if (data.images.count == 0) throw UserError(SourceLoc{images_path, 0, 0}, "the data set is empty");
  return data;
}

namespace {

// Inference on examples [begin, end) of `data`: the summed loss, the correct count and the
// confusion matrix.
struct EvalSums {
  double loss = 0;
  int64_t correct = 0;
  std::vector<std::vector<int64_t>> confusion;
};
EvalSums evaluate_examples(Network& network, const Dataset& data, int64_t begin, int64_t end, int batch_size) {
  int64_t classes = network.package().output_elements();
  EvalSums result;
  result.confusion.assign(size_t(classes), std::vector<int64_t>(size_t(classes), 0));
  std::vector<float> input, output;
  double& loss = result.loss;
  int64_t& correct = result.correct;
  for (int64_t first = begin; first < end; first += batch_size) {
    int batch = int(std::min<int64_t>(batch_size, end - first));
    input.resize(size_t(batch * data.images.image_bytes()));
    output.resize(size_t(batch * classes));
    to_floats(data.images, first, batch, input.data());
    network.forward(input.data(), batch, output.data());
    for (int i = 0; i < batch; ++i) {
      const float* p = output.data() + i * classes;
      int label = data.labels[size_t(first + i)];
      int best = 0;
      for (int k = 1; k < classes; ++k)
        if (p[k] > p[best]) best = k;
      correct += best == label;
      ++result.confusion[size_t(label)][size_t(best)];
      loss -= std::log(std::clamp(double(p[label]), 1e-7, 1.0 - 1e-7));
    }
  }
  return result;
}

}  // namespace

EvalResult evaluate(Network& network, const Dataset& data, int batch_size) {
  EvalSums sums = evaluate_examples(network, data, 0, data.images.count, batch_size);
  EvalResult result;
  result.loss = sums.loss / double(data.images.count);
  result.accuracy = double(sums.correct) / double(data.images.count);
  result.confusion = std::move(sums.confusion);
  return result;
}

void save_checkpoint(Network& network, const TrainConfig& config, const CheckpointPosition& position,
                     const std::string& path) {
  const Package& package = network.package();
  std::map<std::string, Tensor> tensors;
  int slots = config.optimizer == "adam" ? 2 : 1;
  for (const TensorInfo& info : package.params()) {
    const float* values = network.params() + info.offset;
    tensors[info.name] = Tensor{info.shape, std::vector<float>(values, values + info.elements())};
    const std::vector<float>& best = position.best_weights;
    if (config.early_stopping && config.restore_best_weights && !best.empty())
      tensors["best." + info.name] =
          Tensor{info.shape, std::vector<float>(best.begin() + info.offset, best.begin() + info.offset + info.elements())};
    for (int slot = 0; slot < slots; ++slot) {
      const float* state = network.optimizer_state(slot) + info.offset;
      tensors[fmt::format("optimizer.{}.{}", slot, info.name)] =
          Tensor{info.shape, std::vector<float>(state, state + info.elements())};
    }
  }
  std::map<std::string, const Tensor*> pointers;
  for (auto& [name, tensor] : tensors) pointers[name] = &tensor;
  std::map<std::string, std::string> metadata = {
      {"format", "cnnc-checkpoint-1"},
      {"model", package.model_name()},
      {"model_hash", config.model_hash},
      {"epoch", std::to_string(position.epoch)},
      {"batch", std::to_string(position.batch)},
      {"step", std::to_string(position.step)},
      {"loss_sum", number(position.loss_sum)},
      {"correct", std::to_string(position.correct)},
      {"seen", std::to_string(position.seen)},
      {"seed", std::to_string(config.seed)},
      {"batch_size", std::to_string(config.batch_size)},
      {"optimizer", config.optimizer},
      {"learning_rate", number(config.learning_rate)},
      {"beta_1", number(config.beta_1)},
      {"beta_2", number(config.beta_2)},
      {"epsilon", number(config.epsilon)},
      {"momentum", number(config.momentum)},
      {"best", number(position.best)},
      {"best_epoch", std::to_string(position.best_epoch)},
      {"wait", std::to_string(position.wait)},
      {"training", training_settings(config)},
  };
  save_safetensors(path, pointers, metadata);
}

CheckpointPosition load_checkpoint(Network& network, const TrainConfig& config, const std::string& path) {
  std::map<std::string, std::string> metadata;
  std::map<std::string, Tensor> tensors = load_safetensors(path, &metadata);
  SourceLoc where{path, 0, 0};
  if (metadata["format"] != "cnnc-checkpoint-1")
    throw UserError(where, "not a cnnc checkpoint (weights from -o are not enough to resume: use the checkpoint file)");
  if (metadata["model_hash"] != config.model_hash)
    throw UserError(where, fmt::format("this checkpoint belongs to another model ('{}', hash {}); this model's hash is {}",
                                       metadata["model"], metadata["model_hash"], config.model_hash));
  auto require_same = [&](const std::string& key, const std::string& now) {
    if (metadata[key] != now)
      throw UserError(where, fmt::format("the checkpoint was trained with {} {}, but this run asks for {}; resume with "
                                         "the same settings",
                                         key, metadata[key], now));
  };
  require_same("optimizer", config.optimizer);
  require_same("batch_size", std::to_string(config.batch_size));
  require_same("seed", std::to_string(config.seed));
  if (metadata.count("training")) require_same("training", training_settings(config));
  const Package& package = network.package();
  int slots = config.optimizer == "adam" ? 2 : 1;
  for (const TensorInfo& info : package.params()) {
    for (int slot = -1; slot < slots; ++slot) {
      std::string name = slot < 0 ? info.name : fmt::format("optimizer.{}.{}", slot, info.name);
      auto it = tensors.find(name);
      if (it == tensors.end()) throw UserError(where, fmt::format("corrupt checkpoint: no tensor '{}'", name));
      if (it->second.shape != info.shape)
        throw UserError(where, fmt::format("tensor '{}' has shape [{}], expected [{}]", name, fmt::join(it->second.shape, ", "),
                                           fmt::join(info.shape, ", ")));
      float* target = (slot < 0 ? network.params() : network.optimizer_state(slot)) + info.offset;
      std::copy(it->second.data.begin(), it->second.data.end(), target);
    }
  }
  CheckpointPosition position;
  if (config.early_stopping && config.restore_best_weights && tensors.count("best." + package.params()[0].name)) {
    position.best_weights.assign(size_t(package.param_floats()), 0.0f);
    for (const TensorInfo& info : package.params()) {
      auto it = tensors.find("best." + info.name);
      if (it == tensors.end() || it->second.shape != info.shape)
        throw UserError(where, fmt::format("corrupt checkpoint: no best.{} of the right shape", info.name));
      std::copy(it->second.data.begin(), it->second.data.end(), position.best_weights.begin() + info.offset);
    }
  }
  network.params_changed();
  position.epoch = int64_t(metadata_number(metadata, "epoch", path));
  position.batch = int64_t(metadata_number(metadata, "batch", path));
  position.step = int64_t(metadata_number(metadata, "step", path));
  position.loss_sum = metadata_number(metadata, "loss_sum", path);
  position.correct = int64_t(metadata_number(metadata, "correct", path));
  position.seen = int64_t(metadata_number(metadata, "seen", path));
  if (metadata.count("best")) {
    position.best = metadata_number(metadata, "best", path);
    position.best_epoch = int64_t(metadata_number(metadata, "best_epoch", path));
    position.wait = int64_t(metadata_number(metadata, "wait", path));
  }
  if (position.epoch < 0 || position.batch < 0 || position.step < 0)
    throw UserError(where, "corrupt checkpoint: negative position");
  network.set_step(position.step);
  return position;
}

namespace {

// Data parallelism: every rank starts from rank 0's parameters, optimizer state and position in
// training (a checkpoint only rank 0 read, or rank 0's initialization), as DDP does.
void share_state(DataParallel& parallel, Network& network, CheckpointPosition& position) {
  const int64_t floats = network.package().param_floats();
  parallel.broadcast(network.params(), floats);
  parallel.broadcast(network.optimizer_state(0), floats);
  parallel.broadcast(network.optimizer_state(1), floats);
  std::vector<double> numbers = {double(position.epoch), double(position.batch), double(position.step),
                                 position.loss_sum,      double(position.correct), double(position.seen),
                                 position.best,          double(position.best_epoch), double(position.wait),
                                 double(position.best_weights.size())};
  parallel.broadcast(numbers);
  position.epoch = int64_t(numbers[0]), position.batch = int64_t(numbers[1]), position.step = int64_t(numbers[2]);
  position.loss_sum = numbers[3], position.correct = int64_t(numbers[4]), position.seen = int64_t(numbers[5]);
  position.best = numbers[6], position.best_epoch = int64_t(numbers[7]), position.wait = int64_t(numbers[8]);
  position.best_weights.resize(size_t(numbers[9]));
  if (!position.best_weights.empty()) parallel.broadcast(position.best_weights.data(), int64_t(position.best_weights.size()));
  network.set_step(position.step);
  network.params_changed();
}

// Every rank must train the same model with the same settings on the same data (each loads its
// own copy: on several machines, files that should be the same may not be), or the ranks would
// count other batches and their collectives would not match. Rank 0's fingerprint against each
// rank's; a difference is an error on every rank, naming what differs.
void check_ranks_agree(DataParallel& parallel, const Network& network, const Dataset& train_data,
                       const Dataset& test_data, const TrainConfig& config) {
  auto data_hash = [](const Dataset& data) {
    uint64_t hash = fnv1a(data.labels.data(), data.labels.size());
    const std::vector<uint8_t>& pixels = data.images.pixels;
    const size_t stride = std::max<size_t>(1, pixels.size() / 65536);  // a sample: 64 Ki bytes
    for (size_t i = 0; i < pixels.size(); i += stride) hash = fnv1a(&pixels[i], 1, hash);
    return hash;
  };
  std::string settings = fmt::format("{} {} {} {} {} {} {} {}", config.model_hash, training_settings(config),
                                     config.optimizer, number(config.learning_rate), config.batch_size, config.seed,
                                     config.epochs, network.package().param_floats());
  const uint64_t hashes[3] = {fnv1a(settings.data(), settings.size()), data_hash(train_data), data_hash(test_data)};
  const char* names[3] = {"the model or the training settings", "the training data", "the validation data"};
  std::vector<double> mine, theirs;
  for (uint64_t hash : hashes) {
    mine.push_back(double(hash >> 32));
    mine.push_back(double(hash & 0xffffffffu));
  }
  theirs = mine;
  parallel.broadcast(theirs);
  std::vector<double> differs(3, 0.0);
  for (size_t k = 0; k < 3; ++k) differs[k] = mine[2 * k] != theirs[2 * k] || mine[2 * k + 1] != theirs[2 * k + 1];
  parallel.sum(differs);
  std::vector<std::string> what;
  for (size_t k = 0; k < 3; ++k)
    if (differs[k] > 0) what.push_back(fmt::format("{} ({} of {} ranks differ from rank 0)", names[k], int(differs[k]),
                                                   parallel.size()));
  if (!what.empty())
    throw UserError(SourceLoc{"mpi", 0, 0}, fmt::format("the ranks do not train the same thing: {}; give every rank the "
                                                        "same model, options and data files",
                                                        fmt::join(what, ", ")));
}

// Rank r's part of `count` examples: [count * r / ranks, count * (r + 1) / ranks).
std::pair<int64_t, int64_t> shard(int64_t count, int rank, int ranks) {
  return {count * rank / ranks, count * (rank + 1) / ranks};
}

}  // namespace

TrainResult train(Network& network, const Dataset& train_data, const Dataset& test_data, const TrainConfig& config,
                  std::ostream& out_stream, bool terminal) {
  stop_requested = false;
  DataParallel* parallel = config.parallel && config.parallel->size() > 1 ? config.parallel : nullptr;
  const int rank = parallel ? parallel->rank() : 0, ranks = parallel ? parallel->size() : 1;
  // Only rank 0 reports.
  std::ostream discard(nullptr);
  std::ostream& out = rank == 0 ? out_stream : discard;
  network.set_optimizer(config.optimizer, config.learning_rate, config.beta_1, config.beta_2, config.epsilon,
                        config.momentum);
  network.set_seed(uint32_t(config.seed));
  network.set_label_smoothing(float(config.label_smoothing));
  CheckpointPosition position;
  if (!config.resume.empty() && rank == 0) {
    position = load_checkpoint(network, config, config.resume);
    out << fmt::format("Resuming from {}: {} and {} done, step {}\n", config.resume,
                       plural(position.epoch, "epoch"), plural(position.batch, "batch", "batches"), position.step);
  } else if (config.resume.empty()) {
    network.set_step(0);
    std::fill(network.optimizer_state(0), network.optimizer_state(0) + network.package().param_floats(), 0.0f);
    std::fill(network.optimizer_state(1), network.optimizer_state(1) + network.package().param_floats(), 0.0f);
  }
  if (parallel) {
    check_ranks_agree(*parallel, network, train_data, test_data, config);
    share_state(*parallel, network, position);
  }

  std::ofstream metrics;
  if (!config.metrics.empty() && rank == 0) {
    metrics.open(config.metrics, config.resume.empty() ? std::ios::trunc : std::ios::app);
    if (!metrics) throw UserError(SourceLoc{config.metrics, 0, 0}, "cannot write the metrics file");
  }

  const int64_t count = train_data.images.count, batch_size = config.batch_size;
  const int64_t batches = (count + batch_size - 1) / batch_size, total_steps = batches * config.epochs;
  const int64_t pixels = train_data.images.image_bytes();
  // This rank's part of each batch (all of it alone); the last, shorter batch is split too.
  const int64_t local_capacity = (batch_size + ranks - 1) / ranks;
  // Two batch buffers: a reader thread prepares the next batch while the current one trains.
  std::vector<float> inputs[2] = {std::vector<float>(size_t(local_capacity * pixels)),
                                  std::vector<float>(size_t(local_capacity * pixels))};
  std::vector<int32_t> labels[2] = {std::vector<int32_t>(size_t(local_capacity)), std::vector<int32_t>(size_t(local_capacity))};
  // Decoupled weight decay needs the parameters from before each update.
  std::vector<float> before;
  std::vector<std::pair<int64_t, int64_t>> trainable;  // offset, elements
  for (const TensorInfo& info : network.package().params())
    if (info.trainable) trainable.emplace_back(info.offset, info.elements());
  if (parallel) network.set_gradient_hook([parallel](int param) { parallel->gradient_ready(param); });
  struct Unhook {
    Network& network;
    bool hooked;
    ~Unhook() {
      if (hooked) network.set_gradient_hook(nullptr);
    }
  } unhook{network, parallel != nullptr};
  double learning_rate = config.learning_rate;
  BatchReader reader;
  bool use_reader = false;  // decided from the first steps' timings
  TrainResult result;
  for (int64_t epoch = position.epoch; epoch < config.epochs; ++epoch) {
    std::vector<int64_t> order = epoch_order(count, config.seed, epoch);
    int64_t first_batch = epoch == position.epoch ? position.batch : 0;
    double loss_sum = epoch == position.epoch ? position.loss_sum : 0;
    int64_t correct = epoch == position.epoch ? position.correct : 0, seen = epoch == position.epoch ? position.seen : 0;
    int64_t seen_here = 0;
    double reduce_wait = 0;  // seconds spent waiting for the gradients' reduction after backward
    out << fmt::format("Epoch {}/{}\n", epoch + 1, config.epochs) << std::flush;
    Progress progress(out, terminal, batches);
    auto start = std::chrono::steady_clock::now();
    auto prepare = [&](int64_t b, int slot) {
      int64_t batch = std::min(batch_size, count - b * batch_size);
      auto [begin, end] = shard(batch, rank, ranks);
      prepare_batch(train_data, order, b * batch_size + begin, int(end - begin), config, epoch, inputs[slot].data(),
                    labels[slot].data());
    };
    // The first batches are prepared inline and timed against the steps; the reader thread takes
    // over when preparing costs more than a tenth of a step (large images, augmentation). On a
    // small net with small images it would only compete with the kernels' threads for the cores.
    bool pending = false;
    int timed = 0;
    double prepare_seconds = 0, step_seconds = 0;
    for (int64_t b = first_batch; b < batches; ++b) {
      int batch = int(std::min(batch_size, count - b * batch_size));
      auto [shard_begin, shard_end] = shard(batch, rank, ranks);
      int local = int(shard_end - shard_begin);
      int slot = int(b % 2);
      if (pending) {
        reader.wait();
      } else {
        auto before_prepare = std::chrono::steady_clock::now();
        prepare(b, slot);
        prepare_seconds += seconds_since(before_prepare);
      }
      pending = use_reader && b + 1 < batches;
      if (pending) reader.start([&prepare, b, slot] { prepare(b + 1, 1 - slot); });
      auto before_step = std::chrono::steady_clock::now();
      if (!config.schedule.empty()) {
        learning_rate = learning_rate_at(config, network.step(), total_steps);
        network.set_optimizer(config.optimizer, float(learning_rate), config.beta_1, config.beta_2, config.epsilon,
                              config.momentum);
      }
      if (config.weight_decay > 0) before.assign(network.params(), network.params() + network.package().param_floats());
      double step_loss = 0, step_correct = 0;
      bool stop_now = false;
      if (config.global_clipnorm > 0 || parallel) {
        Network::StepResult step;
        if (parallel) {
          // This rank's shard; the gradients summed over ranks, each weighted by its share of the
          // batch, while backward runs (the gradient hook); then the totals and any stop request.
          auto shares = std::vector<double>(size_t(ranks));
          for (int r = 0; r < ranks; ++r) {
            auto [begin, end] = shard(batch, r, ranks);
            shares[size_t(r)] = double(end - begin) / double(batch);
          }
          network.set_example_offset(shard_begin);
          parallel->begin_step(shares);
          if (local > 0) {
            step = network.compute_gradients(inputs[slot].data(), labels[slot].data(), local);
          } else {  // (a last batch smaller than the number of ranks): nothing to add
            std::fill(network.mutable_param_grads(), network.mutable_param_grads() + network.package().param_floats(), 0.0f);
          }
          auto before_wait = std::chrono::steady_clock::now();
          parallel->finish_step();
          reduce_wait += seconds_since(before_wait);
          bool stop_here = stop_requested || (config.stop_after && config.stop_after(network.step() + 1));
          std::vector<double> totals = {double(step.loss_sum), double(step.correct), stop_here ? 1.0 : 0.0};
          parallel->sum(totals);
          step_loss = totals[0], step_correct = totals[1], stop_now = totals[2] > 0;
        } else {
          step = network.compute_gradients(inputs[slot].data(), labels[slot].data(), batch);
          step_loss = step.loss_sum, step_correct = step.correct;
        }
        float scale = 1.0f;
        if (config.global_clipnorm > 0) {
          // Keras's global_clipnorm: all gradients scaled by limit / norm when their norm exceeds it.
          const float* grads = network.param_grads();
          double squares = 0;
          for (auto [offset, elements] : trainable)
            for (int64_t k = offset; k < offset + elements; ++k) squares += double(grads[k]) * grads[k];
          double norm = std::sqrt(squares);
          if (norm > config.global_clipnorm) scale = float(config.global_clipnorm / norm);
        }
        network.apply_gradients(scale);
      } else {
        Network::StepResult step = network.train_step(inputs[slot].data(), labels[slot].data(), batch);
        step_loss = step.loss_sum, step_correct = step.correct;
      }
      if (config.weight_decay > 0) {
        // As AdamW: the update, less learning_rate * weight_decay times the weights before it.
        float decay = float(learning_rate * config.weight_decay);
        float* params = network.params();
        for (auto [offset, elements] : trainable)
          for (int64_t k = offset; k < offset + elements; ++k) params[k] -= decay * before[size_t(k)];
        network.params_changed();
      }
      step_seconds += seconds_since(before_step);
      if (!use_reader && ++timed == 8) use_reader = prepare_seconds > 0.1 * step_seconds;
      loss_sum += step_loss;
      correct += int64_t(step_correct);
      seen += batch;
      seen_here += batch;
      progress.update(b + 1, seconds_since(start), b + 1 - first_batch, loss_sum / double(seen), double(correct) / double(seen));
      if (!parallel) stop_now = stop_requested || (config.stop_after && config.stop_after(network.step()));
      if (stop_now) stop_requested = true;
      if (stop_now && b + 1 < batches) {
        if (pending) reader.wait();
        progress.finish();
        if (!config.checkpoint.empty()) {
          CheckpointPosition here = position;
          here.epoch = epoch, here.batch = b + 1, here.step = network.step(), here.loss_sum = loss_sum;
          here.correct = correct, here.seen = seen;
          if (rank == 0) save_checkpoint(network, config, here, config.checkpoint);
          out << fmt::format("Interrupted after batch {}/{} of epoch {}; saved {} (continue with --resume {})\n", b + 1,
                             batches, epoch + 1, config.checkpoint, config.checkpoint);
        } else {
          out << "Interrupted; no checkpoint file was given, so this run's progress is lost\n";
        }
        if (parallel) {  // no rank leaves before rank 0 has written the checkpoint (mpirun would kill it)
          std::vector<double> barrier = {0};
          parallel->sum(barrier);
        }
        result.interrupted = true;
        return result;
      }
    }
    double seconds = seconds_since(start);
    progress.finish();
    // Validation: each rank evaluates its part of the test set; the sums are added in rank order.
    auto [test_begin, test_end] = shard(test_data.images.count, rank, ranks);
    EvalSums sums = evaluate_examples(network, test_data, test_begin, test_end, 256);
    std::vector<double> totals = {sums.loss, double(sums.correct)};
    if (parallel) parallel->sum(totals);
    EpochMetrics metrics_row{epoch + 1,
                             loss_sum / double(seen),
                             double(correct) / double(seen),
                             totals[0] / double(test_data.images.count),
                             totals[1] / double(test_data.images.count),
                             seconds,
                             double(seen_here) / seconds,
                             learning_rate,
                             reduce_wait};
    out << fmt::format("{}/{} - {:.1f}s - {:.0f} images/s - loss: {:.4f} - accuracy: {:.4f} - val_loss: {:.4f} - "
                       "val_accuracy: {:.4f}{}{}\n",
                       batches, batches, seconds, metrics_row.images_per_second, metrics_row.loss, metrics_row.accuracy,
                       metrics_row.val_loss, metrics_row.val_accuracy,
                       config.schedule.empty() ? "" : fmt::format(" - learning_rate: {:.3g}", learning_rate),
                       parallel ? fmt::format(" - gradient wait: {:.2f}s on {} ranks", reduce_wait, ranks) : "")
        << std::flush;
    if (metrics)
      metrics << fmt::format("{{\"epoch\": {}, \"loss\": {:.6f}, \"accuracy\": {:.6f}, \"val_loss\": {:.6f}, "
                             "\"val_accuracy\": {:.6f}, \"seconds\": {:.3f}, \"images_per_second\": {:.1f}, "
                             "\"learning_rate\": {:.6g}{}}}\n",
                             metrics_row.epoch, metrics_row.loss, metrics_row.accuracy, metrics_row.val_loss,
                             metrics_row.val_accuracy, metrics_row.seconds, metrics_row.images_per_second,
                             metrics_row.learning_rate,
                             parallel ? fmt::format(", \"ranks\": {}, \"gradient_wait_seconds\": {:.4f}", ranks, reduce_wait) : "")
              << std::flush;
    result.history.push_back(metrics_row);

    // Early stopping (Keras's EarlyStopping): an improvement is a change beyond min_delta in the
    // monitored metric's good direction; after `patience` epochs without one, training stops.
    bool stop = false;
    if (config.early_stopping) {
      double value = monitored(metrics_row, config.monitor);
      bool higher_is_better = config.monitor.find("accuracy") != std::string::npos;
      bool first = position.best_epoch == 0;
      bool improved = first || (higher_is_better ? value - position.best > config.min_delta
                                                 : position.best - value > config.min_delta);
      if (improved) {
        position.best = value;
        position.best_epoch = epoch + 1;
        position.wait = 0;
        if (config.restore_best_weights)
          position.best_weights.assign(network.params(), network.params() + network.package().param_floats());
      } else {
        ++position.wait;
      }
      stop = position.wait > config.patience && epoch + 1 < config.epochs;
    }
    if (stop) {
      out << fmt::format("Early stopping: {} has not improved for {}; best {:.4f} at epoch {}{}\n", config.monitor,
                         plural(position.wait, "epoch"), position.best, position.best_epoch,
                         config.restore_best_weights ? ", whose weights are restored" : "");
      if (config.restore_best_weights && !position.best_weights.empty()) {
        std::copy(position.best_weights.begin(), position.best_weights.end(), network.params());
        network.params_changed();
      }
      result.stopped_early = true;
    }
    if (!config.checkpoint.empty()) {
      // A run that stopped early is complete: its checkpoint says so (and holds the weights kept).
      CheckpointPosition here = position;
      here.epoch = stop ? config.epochs : epoch + 1, here.batch = 0, here.step = network.step();
      here.loss_sum = 0, here.correct = 0, here.seen = 0;
      if (rank == 0) save_checkpoint(network, config, here, config.checkpoint);
    }
    if (stop) break;
  }
  return result;
}

}  // namespace cnnc::rt
