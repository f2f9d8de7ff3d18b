// ModelSpec: the model as the user wrote it, checked for form but not yet for shapes.
//
// The front end (parse_model) produces it from YAML; graph/build_graph turns it into the Graph IR.
// Every piece remembers where it came from so that later stages can point at the user's text.
#pragma once

#include <string>
#include <vector>

#include "ops/op.h"
#include "support/diagnostics.h"

namespace cnnc {

struct LayerSpec {
  int index = 0;              // 1-based position in `layers:`
  std::string op;             // "conv2d"
  std::string name;           // as written, or generated Keras-style ("conv2d", "conv2d_1", ...)
  bool has_explicit_name = false;
  std::vector<std::string> inputs;  // names from `inputs:`; empty means "the layer before"
  std::vector<SourceLoc> input_locs;
  Attrs attrs;                // complete: defaults filled in
  SourceLoc loc;              // where the layer's op is written

  // "layer 3 'conv2d_1' (conv2d)": how errors name a layer.
  std::string describe() const;
};

struct OptimizerSpec {
  std::string kind = "adam";  // adam | sgd
  double learning_rate = 0.001;
  double beta_1 = 0.9;        // adam
  double beta_2 = 0.999;      // adam
  double epsilon = 1e-7;      // adam
  double momentum = 0.0;      // sgd
};

// The learning rate over the steps of a run, as Keras's schedules (keras.optimizers.schedules).
struct ScheduleSpec {
  std::string kind;  // "" (constant), exponential_decay, cosine_decay
  int64_t decay_steps = 0;   // exponential_decay: required; cosine_decay: 0 means the whole run
  double decay_rate = 0.96;  // exponential_decay: lr * rate^(step / decay_steps)
  bool staircase = false;    // exponential_decay: step / decay_steps rounded down (step decay)
  double alpha = 0.0;        // cosine_decay: the floor, as a fraction of the learning rate
  int64_t warmup_steps = 0;  // cosine_decay: linear warmup from 0 first
};

struct EarlyStoppingSpec {
  bool enabled = false;
  std::string monitor = "val_loss";  // val_loss, val_accuracy, loss, accuracy
  int64_t patience = 0;
  double min_delta = 0;
  bool restore_best_weights = false;
};

struct AugmentationSpec {
  int64_t crop_padding = 0;       // random crop of the image padded with this many zeros each side
  bool horizontal_flip = false;   // mirror left-right with probability 1/2
};

struct TrainSpec {
  std::string loss = "categorical_crossentropy";
  OptimizerSpec optimizer;
  int64_t batch_size = 32;
  int64_t epochs = 1;
  int64_t seed = 0;
  ScheduleSpec schedule;
  double weight_decay = 0;  // decoupled (AdamW / SGDW): w -= lr * weight_decay * w each step
  double global_clipnorm = 0;  // > 0: gradients scaled so that their global norm is at most this
  double label_smoothing = 0;  // loss: {categorical_crossentropy: {label_smoothing: s}}
  EarlyStoppingSpec early_stopping;
  AugmentationSpec augmentation;
  std::vector<std::string> classes;  // names of the output classes, in order (optional)
  SourceLoc loc;
};

struct ModelSpec {
  std::string file;
  std::string name;
  Shape input_shape;  // [H, W, C] or [N], batch excluded
  SourceLoc input_loc;
  std::vector<LayerSpec> layers;
  TrainSpec train;
};

// The name of the model's input tensor, usable in `inputs:`.
inline const char* kInputName = "input";

}  // namespace cnnc
