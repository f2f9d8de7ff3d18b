// The plan-kernels step (`--dump-after plan-kernels`): the kernels a package runs, for inference
// and training, planned without Halide. Checked on small models whose plans are worked out by
// hand: which nodes get a kernel, which keep a tensor for backward, which gradients add up.
#include <catch2/catch.hpp>

#include <string>

#include "codegen/plan.h"
#include "frontend/parse_model.h"
#include "graph/pipeline.h"

using namespace cnnc;

namespace {

std::string dump(const std::string& relative_path) {
  Graph graph = compile_graph(parse_model_file(std::string(CNNC_SOURCE_DIR) + "/" + relative_path));
  return format_kernel_plan(make_plan(graph, /*gpu=*/false));
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

}  // namespace

TEST_CASE("plan-kernels: inference and training kernels of a small model", "[plan]") {
  // conv2d+relu+maxpool 2x2 (non-overlapping: keeps the window index), flatten (a view),
  // dropout (a view at inference, a mask while training), dense+relu, dense+softmax.
  std::string text = dump("tests/models/train_small.yaml");
  INFO(text);
  CHECK(text.rfind("// after plan-kernels\n", 0) == 0);
  CHECK(has_line(text, "train_small: 3 inference kernels"));
  CHECK(has_line(text, "  train_small_k1_conv2d forward node=1:conv2d inputs=[0:input] params=[kernel, bias]"));
  CHECK(has_line(text, "  train_small_k4_dense forward node=4:dense inputs=[3:dropout] params=[kernel, bias]"));
  CHECK(has_line(text, "  train_small_k5_dense_1 forward node=5:dense_1 inputs=[4:dense] params=[kernel, bias]"));
  CHECK(has_line(text, "train_small: 11 training kernels"));
  CHECK(has_line(text, "  train_small_t1_conv2d forward_train node=1:conv2d inputs=[0:input] params=[kernel, bias] "
                       "saved=pool_index"));
  CHECK(has_line(text, "  train_small_t3_dropout forward_train node=3:dropout inputs=[2:flatten]"));
  CHECK(has_line(text, "  train_small_k4_dense forward node=4:dense inputs=[3:dropout] params=[kernel, bias] "
                       "(the inference kernel)"));
  CHECK(has_line(text, "  train_small_t5_dense_1 forward_train node=5:dense_1 inputs=[4:dense] params=[kernel, bias] saved"));
  CHECK(has_line(text, "  train_small_loss loss node=5:dense_1 from_logits"));
  CHECK(has_line(text, "  train_small_b5_dense_1 backward node=5:dense_1 inputs=[4:dense] params=[kernel, bias] "
                       "input_grads=[grad] saved from_logits"));
  CHECK(has_line(text, "  train_small_b3_dropout backward node=3:dropout inputs=[2:flatten] input_grads=[grad]"));
  // The first layer's input gradient is not needed: only its parameter gradients.
  CHECK(has_line(text, "  train_small_b1_conv2d backward node=1:conv2d inputs=[0:input] params=[kernel, bias] "
                       "input_grads=[-] saved=pool_index"));
  // 60 + 2,416 + 68 floats, each tensor starting at a multiple of 32.
  CHECK(has_line(text, "  train_small_adam adam param_floats=2596"));
  CHECK(has_line(text, "  train_small_sgd sgd param_floats=2596"));
}

TEST_CASE("plan-kernels: a tensor used by several consumers gets its gradients added", "[plan]") {
  // s = add(a, b, a): a's gradient is written once (its two uses summed by the add's backward);
  // b's is added to the one concat k wrote before (backward runs in reverse order).
  std::string text = dump("tests/models/grad_dag.yaml");
  INFO(text);
  CHECK(has_line(text, "  grad_dag_b3_s backward node=3:s inputs=[1:a, 2:b, 1:a] input_grads=[grad, grad+, -]"));
  CHECK(has_line(text, "  grad_dag_b4_k backward node=4:k inputs=[3:s, 2:b] input_grads=[grad, grad]"));
  CHECK(has_line(text, "  grad_dag_b5_h backward node=5:h inputs=[4:k, 4:k] input_grads=[grad, -]"));
}

TEST_CASE("plan-kernels: a model that cannot be trained says why", "[plan]") {
  Graph graph = compile_graph(parse_model_text("name: plain\ninput: {shape: [4]}\nlayers:\n  - dense: {units: 3}\n",
                                               "plain.yaml"));
  std::string text = format_kernel_plan(make_plan(graph, /*gpu=*/false));
  INFO(text);
  CHECK(has_line(text, "plain: 1 inference kernels"));
  CHECK(has_line(text, "  plain_k1_dense forward node=1:dense inputs=[0:input] params=[kernel, bias]"));
  CHECK(text.find("plain: not trainable: ") != std::string::npos);
  CHECK(text.find("training kernels") == std::string::npos);
}
