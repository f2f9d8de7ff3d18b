// Training and evaluation on IDX data sets: epochs of shuffled mini-batches through a package's
// training kernels, validation, Keras-like progress, metrics, checkpoints and exact resume.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "data.h"
#include "package.h"

namespace cnnc::rt {

struct Dataset {
  ImageSet images;
  std::vector<uint8_t> labels;
};

// Where training data comes from (cnnc train --data DIR): IDX files (train-* and t10k-*), or a
// folder of images per class, DIR/train/<class>/* and DIR/test/<class>/* (or a validation split).
struct DataOptions {
  int64_t train_limit = -1, test_limit = -1;  // >= 0: keep that many examples
  double validation_split = 0;  // image folders without DIR/test: this fraction of DIR/train, held out
  bool skip_bad_images = false;  // leave undecodable images out (reported) instead of stopping
  uint64_t seed = 0;             // of the validation split
  std::vector<std::string> classes;  // class names from the model (train: classes), if any
};
struct TrainTestData {
  Dataset train, test;
  std::vector<std::string> classes;  // names in label order; empty when unknown
  std::string description;           // for the log: what was read
  std::vector<std::string> skipped;  // images left out, "path: reason"
};
// Fashion-MNIST's ten class names, for its IDX files in the default data folder.
const std::vector<std::string>& fashion_mnist_classes();
bool is_image_folder_data(const std::string& dir);
// The training and test sets. `test_only` reads only the test part (cnnc eval).
TrainTestData load_data(const std::string& dir, const std::vector<int64_t>& input_shape, int64_t classes,
                        const DataOptions& options, bool test_only = false);

// Reads <dir>/<prefix>-images-idx3-ubyte[.gz] and <prefix>-labels-idx1-ubyte[.gz] ("train" or
// "t10k"); `limit` >= 0 keeps the first `limit` examples. Checks that the counts agree, that the
// images have the model's input shape and that every label is one of its `classes`.
Dataset load_dataset(const std::string& dir, const std::string& prefix, int64_t limit,
                     const std::vector<int64_t>& input_shape, int64_t classes);

// A group of processes training one network together by data parallelism (docs/distributed.md):
// each takes its shard of every global batch and the gradients are summed across them. cnnc's
// implementation is on MPI (compiler/driver/distributed.cpp); libcnnrt itself needs no MPI. Every
// call is collective: each process makes the same calls in the same order.
class DataParallel {
 public:
  virtual ~DataParallel() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // A step's gradient reduction. begin_step: shares[r] is rank r's part of the global batch (its
  // examples / the batch's), the same list on every rank. gradient_ready(p): parameter p's
  // gradient is final (the network's gradient hook; -1: none, only a chance to make progress).
  // finish_step: on return the network's gradients are sum over r of shares[r] * gradient_r, and
  // its non-trainable parameters (moving statistics) sum over r of shares[r] * value_r, summed in
  // rank order: the same bits on every rank, run after run.
  virtual void begin_step(const std::vector<double>& shares) = 0;
  virtual void gradient_ready(int param) = 0;
  virtual void finish_step() = 0;
  // Each value replaced by its sum over ranks, added in rank order.
  virtual void sum(std::vector<double>& values) = 0;
  // Rank 0's values to every rank.
  virtual void broadcast(float* data, int64_t count) = 0;
  virtual void broadcast(std::vector<double>& values) = 0;
};

struct TrainConfig {
  int64_t epochs = 1;
  int64_t batch_size = 32;
  uint64_t seed = 0;
  std::string optimizer = "adam";
  float learning_rate = 0.001f, beta_1 = 0.9f, beta_2 = 0.999f, epsilon = 1e-7f, momentum = 0.0f;
  std::string model_hash;  // stored in checkpoints, checked on resume
  std::string checkpoint;  // written at the end of every epoch and when interrupted ("" : none)
  std::string resume;      // checkpoint to continue from ("" : start afresh)
  std::string metrics;     // JSON Lines, one object per epoch ("" : none)
  // The learning rate per step (Keras schedules): "" constant, exponential_decay, cosine_decay.
  std::string schedule;
  int64_t decay_steps = 0;  // cosine_decay: 0 means every step of the run after the warmup
  double decay_rate = 0.96, alpha = 0;
  bool staircase = false;
  int64_t warmup_steps = 0;
  double weight_decay = 0;  // decoupled (AdamW, SGDW): w -= lr * weight_decay * w before the update
  double global_clipnorm = 0;  // > 0: gradients scaled to a global L2 norm of at most this (Keras)
  double label_smoothing = 0;  // targets (1 - s) one-hot + s / classes in the training loss
  // Early stopping on a metric of EpochMetrics: val_loss, val_accuracy, loss or accuracy.
  bool early_stopping = false;
  std::string monitor = "val_loss";
  int64_t patience = 0;
  double min_delta = 0;
  bool restore_best_weights = false;
  // Augmentation of image batches, seeded by (seed, epoch, example): a random crop of the image
  // padded with crop_padding zeros on each side, and a left-right mirror with probability 1/2.
  int64_t crop_padding = 0;
  bool horizontal_flip = false;
  // Called after every step with the number of steps taken; returning true stops training as
  // an interruption does (tests use it to interrupt at an exact step).
  std::function<bool(int64_t step)> stop_after;
  // Several processes, each with its shard of every batch (null or size 1: this process alone).
  // Only rank 0 prints progress and writes the checkpoint and metrics; every rank ends with the
  // same parameters.
  DataParallel* parallel = nullptr;
};

struct EpochMetrics {
  int64_t epoch = 0;
  double loss = 0, accuracy = 0, val_loss = 0, val_accuracy = 0, seconds = 0, images_per_second = 0;
  double learning_rate = 0;  // at the epoch's last step
  // Data parallelism: seconds this rank waited after backward for the gradients' reduction
  // (what the overlap with backward did not hide).
  double reduce_wait_seconds = 0;
};

// The learning rate of optimizer step `step` (0-based) of a run of `total_steps`.
double learning_rate_at(const TrainConfig& config, int64_t step, int64_t total_steps);

struct EvalResult {
  double loss = 0, accuracy = 0;
  std::vector<std::vector<int64_t>> confusion;  // [true class][predicted class]
};

// Runs inference on every example; loss is categorical cross-entropy with Keras' clipping (1e-7).
EvalResult evaluate(Network& network, const Dataset& data, int batch_size = 256);

// Set from a signal handler: training stops after the current step, saves a checkpoint and
// returns with interrupted = true.
void request_stop();

struct TrainResult {
  std::vector<EpochMetrics> history;  // epochs run by this call
  bool interrupted = false;
  bool stopped_early = false;         // early stopping ended the run (weights restored if asked)
};

// Trains `network` (parameters already initialized, or restored from config.resume).
// Progress goes to `out`: a bar redrawn in place on a terminal, plain lines otherwise.
TrainResult train(Network& network, const Dataset& train_data, const Dataset& test_data, const TrainConfig& config,
                  std::ostream& out, bool terminal);

// Checkpoints: safetensors holding the parameters (names as in weight files), the optimizer
// state ("optimizer.0.<name>", "optimizer.1.<name>") and the position in training as metadata.
struct CheckpointPosition {
  int64_t epoch = 0;         // epochs completed
  int64_t batch = 0;         // batches of the next epoch already done (after an interruption)
  int64_t step = 0;          // optimizer steps
  double loss_sum = 0;       // running sums of the interrupted epoch
  int64_t correct = 0, seen = 0;
  // Early stopping: the best monitored value, its epoch, epochs since, and with
  // restore_best_weights that epoch's parameters (in the checkpoint as "best.<name>").
  double best = 0;
  int64_t best_epoch = 0, wait = 0;
  std::vector<float> best_weights;
};
void save_checkpoint(Network& network, const TrainConfig& config, const CheckpointPosition& position,
                     const std::string& path);
CheckpointPosition load_checkpoint(Network& network, const TrainConfig& config, const std::string& path);

}  // namespace cnnc::rt
