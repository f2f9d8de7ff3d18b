#include "trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <ostream>
#include <random>

#include <fmt/format.h>

#include "support/diagnostics.h"
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

EvalResult evaluate(Network& network, const Dataset& data, int batch_size) {
  int64_t classes = network.package().output_elements();
  EvalResult result;
  result.confusion.assign(size_t(classes), std::vector<int64_t>(size_t(classes), 0));
  std::vector<float> input, output;
  double loss = 0;
  int64_t correct = 0;
  for (int64_t first = 0; first < data.images.count; first += batch_size) {
    int batch = int(std::min<int64_t>(batch_size, data.images.count - first));
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
  result.loss = loss / double(data.images.count);
  result.accuracy = double(correct) / double(data.images.count);
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
  network.params_changed();
  CheckpointPosition position;
  position.epoch = int64_t(metadata_number(metadata, "epoch", path));
  position.batch = int64_t(metadata_number(metadata, "batch", path));
  position.step = int64_t(metadata_number(metadata, "step", path));
  position.loss_sum = metadata_number(metadata, "loss_sum", path);
  position.correct = int64_t(metadata_number(metadata, "correct", path));
  position.seen = int64_t(metadata_number(metadata, "seen", path));
  if (position.epoch < 0 || position.batch < 0 || position.step < 0)
    throw UserError(where, "corrupt checkpoint: negative position");
  network.set_step(position.step);
  return position;
}

TrainResult train(Network& network, const Dataset& train_data, const Dataset& test_data, const TrainConfig& config,
                  std::ostream& out, bool terminal) {
  stop_requested = false;
  network.set_optimizer(config.optimizer, config.learning_rate, config.beta_1, config.beta_2, config.epsilon,
                        config.momentum);
  network.set_seed(uint32_t(config.seed));
  CheckpointPosition position;
  if (!config.resume.empty()) {
    position = load_checkpoint(network, config, config.resume);
    out << fmt::format("Resuming from {}: {} epochs and {} batches done, step {}\n", config.resume, position.epoch,
                       position.batch, position.step);
  } else {
    network.set_step(0);
    std::fill(network.optimizer_state(0), network.optimizer_state(0) + network.package().param_floats(), 0.0f);
    std::fill(network.optimizer_state(1), network.optimizer_state(1) + network.package().param_floats(), 0.0f);
  }

  std::ofstream metrics;
  if (!config.metrics.empty()) {
    metrics.open(config.metrics, config.resume.empty() ? std::ios::trunc : std::ios::app);
    if (!metrics) throw UserError(SourceLoc{config.metrics, 0, 0}, "cannot write the metrics file");
  }

  const int64_t count = train_data.images.count, batch_size = config.batch_size;
  const int64_t batches = (count + batch_size - 1) / batch_size;
  const int64_t pixels = train_data.images.image_bytes();
  std::vector<float> input(static_cast<size_t>(batch_size * pixels));
  std::vector<int32_t> labels(static_cast<size_t>(batch_size));
  TrainResult result;
  for (int64_t epoch = position.epoch; epoch < config.epochs; ++epoch) {
    std::vector<int64_t> order = epoch_order(count, config.seed, epoch);
    int64_t first_batch = epoch == position.epoch ? position.batch : 0;
    double loss_sum = epoch == position.epoch ? position.loss_sum : 0;
    int64_t correct = epoch == position.epoch ? position.correct : 0, seen = epoch == position.epoch ? position.seen : 0;
    int64_t seen_here = 0;
    out << fmt::format("Epoch {}/{}\n", epoch + 1, config.epochs) << std::flush;
    Progress progress(out, terminal, batches);
    auto start = std::chrono::steady_clock::now();
    for (int64_t b = first_batch; b < batches; ++b) {
      int batch = int(std::min(batch_size, count - b * batch_size));
      for (int i = 0; i < batch; ++i) {
        int64_t example = order[size_t(b * batch_size + i)];
        const uint8_t* from = train_data.images.pixels.data() + example * pixels;
        float* to = input.data() + i * pixels;
        for (int64_t k = 0; k < pixels; ++k) to[k] = float(from[k]) * (1.0f / 255.0f);
        labels[size_t(i)] = train_data.labels[size_t(example)];
      }
      Network::StepResult step = network.train_step(input.data(), labels.data(), batch);
      loss_sum += step.loss_sum;
      correct += step.correct;
      seen += batch;
      seen_here += batch;
      progress.update(b + 1, seconds_since(start), b + 1 - first_batch, loss_sum / double(seen), double(correct) / double(seen));
      if (config.stop_after && config.stop_after(network.step())) stop_requested = true;
      if (stop_requested && b + 1 < batches) {
        progress.finish();
        if (!config.checkpoint.empty()) {
          save_checkpoint(network, config, {epoch, b + 1, network.step(), loss_sum, correct, seen}, config.checkpoint);
          out << fmt::format("Interrupted after batch {}/{} of epoch {}; saved {} (continue with --resume {})\n", b + 1,
                             batches, epoch + 1, config.checkpoint, config.checkpoint);
        } else {
          out << "Interrupted; no checkpoint file was given, so this run's progress is lost\n";
        }
        result.interrupted = true;
        return result;
      }
    }
    double seconds = seconds_since(start);
    progress.finish();
    EvalResult validation = evaluate(network, test_data);
    EpochMetrics metrics_row{epoch + 1,
                             loss_sum / double(seen),
                             double(correct) / double(seen),
                             validation.loss,
                             validation.accuracy,
                             seconds,
                             double(seen_here) / seconds};
    out << fmt::format("{}/{} - {:.1f}s - {:.0f} images/s - loss: {:.4f} - accuracy: {:.4f} - val_loss: {:.4f} - "
                       "val_accuracy: {:.4f}\n",
                       batches, batches, seconds, metrics_row.images_per_second, metrics_row.loss, metrics_row.accuracy,
                       metrics_row.val_loss, metrics_row.val_accuracy)
        << std::flush;
    if (metrics)
      metrics << fmt::format("{{\"epoch\": {}, \"loss\": {:.6f}, \"accuracy\": {:.6f}, \"val_loss\": {:.6f}, "
                             "\"val_accuracy\": {:.6f}, \"seconds\": {:.3f}, \"images_per_second\": {:.1f}}}\n",
                             metrics_row.epoch, metrics_row.loss, metrics_row.accuracy, metrics_row.val_loss,
                             metrics_row.val_accuracy, metrics_row.seconds, metrics_row.images_per_second)
              << std::flush;
    if (!config.checkpoint.empty())
      save_checkpoint(network, config, {epoch + 1, 0, network.step(), 0, 0, 0}, config.checkpoint);
    result.history.push_back(metrics_row);
  }
  return result;
}

}  // namespace cnnc::rt
