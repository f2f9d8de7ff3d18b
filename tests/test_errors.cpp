// One test per class of user error: the error is a UserError, points at the line and column where
// the mistake is written (worked out from the text, 1-based), and says what is wrong in words a
// user can act on.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

#include "frontend/parse_model.h"
#include "graph/pipeline.h"

using namespace cnnc;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

// Parses and compiles `text` (as the file "m.yaml"); returns the UserError it must raise.
// Any other exception escapes and fails the test.
UserError error_of(const std::string& text) {
  try {
    compile_graph(parse_model_text(text, "m.yaml"));
  } catch (const UserError& error) {
    return error;
  }
  FAIL("expected a UserError, but this model was accepted:\n" << text);
  throw;  // unreachable: FAIL throws
}

void check_error(const UserError& error, int line, int column, std::initializer_list<const char*> words) {
  INFO(error.formatted());
  CHECK(error.loc().file == "m.yaml");
  CHECK(error.loc().line == line);
  CHECK(error.loc().column == column);
  for (const char* word : words) CHECK_THAT(error.message(), Contains(word));
  CHECK_THAT(error.formatted(),
             StartsWith("m.yaml:" + std::to_string(line) + ":" + std::to_string(column) + ": error: "));
}

// A unique scratch directory under the system's temporary directory, removed afterwards.
struct ScratchDir {
  std::filesystem::path path;
  ScratchDir() {
    path = std::filesystem::temp_directory_path() /
           ("cnnc_test_errors_" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
};

}  // namespace

TEST_CASE("YAML syntax errors point where the parser stopped", "[errors]") {
  // An extra '}' at line 3, column 22: "  - dense: {units: 3}" is 21 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {units: 3}}\n"),
              3, 22, {"invalid YAML"});
  // A tab can't indent YAML: the '-' after it is at column 2.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "\t- relu\n"),
              3, 2, {"invalid YAML"});
  // A block list cannot start on the line of its key: the '-' is at column 9.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers: - relu\n"),
              2, 9, {"invalid YAML"});
}

TEST_CASE("lists or maps nested too deeply are a syntax error, not a crash", "[errors]") {
  UserError error = error_of("name: x\nlayers: " + std::string(5000, '[') + std::string(5000, ']') + "\n");
  CHECK(error.loc().line == 2);
  CHECK_THAT(error.message(), Contains("nested too deeply"));
  // yaml-cpp calls this "bad file", which would send the user looking at the file system.
  CHECK_THAT(error.message(), !Contains("bad file"));
}

TEST_CASE("an empty file", "[errors]") {
  check_error(error_of(""), 1, 1, {"empty", "input:", "layers:"});
  check_error(error_of("# only a comment\n\n"), 1, 1, {"empty"});
}

TEST_CASE("a top level that is not a map", "[errors]") {
  // A plain scalar on line 3, indented by two spaces.
  check_error(error_of("\n\n  hello\n"), 3, 3, {"expected a model", "found 'hello'"});
  check_error(error_of("- input\n- layers\n"), 1, 1, {"expected a model", "found a list"});
}

TEST_CASE("NUL bytes: not a text file", "[errors]") {
  std::string text = "input: {shape: [8]}\nlayers: [relu]\n";
  text += std::string("\0\x01\x02", 3);
  check_error(error_of(text), 1, 1, {"NUL bytes", "not a text file"});
}

TEST_CASE("a second YAML document is an error, not silently ignored", "[errors]") {
  // The second document's map starts on line 4, after '---' on line 3.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers: [relu]\n"
                       "---\n"
                       "input: {shape: [4]}\n"),
              4, 1, {"second YAML document"});
  // A trailing '---' with nothing after it is harmless.
  CHECK_NOTHROW(parse_model_text("input: {shape: [8]}\nlayers: [relu]\n---\n", "m.yaml"));
}

TEST_CASE("unknown keys are errors, with a suggestion", "[errors]") {
  check_error(error_of("name: x\n"
                       "input: {shape: [4]}\n"
                       "layrs:\n"
                       "  - relu\n"),
              3, 1, {"unknown key 'layrs'", "did you mean 'layers'?"});
  // "  - conv2d: {" is 13 characters, so 'filter' starts at column 14.
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d: {filter: 3, kernel: 3}\n"),
              3, 14, {"unknown key 'filter'", "did you mean 'filters'?", "layer 1 (conv2d)"});
  // The same in block style: 'stides' on line 5, indented by 6.
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d:\n"
                       "      filters: 3\n"
                       "      stides: 2\n"
                       "      kernel: 3\n"),
              5, 7, {"unknown key 'stides'", "did you mean 'stride'?"});
  // Inside the train section, with nothing close enough to suggest.
  check_error(error_of("input: {shape: [4]}\n"
                       "layers: [relu]\n"
                       "train: {shuffle: true}\n"),
              3, 9, {"unknown key 'shuffle'", "loss, optimizer, batch_size, epochs, seed"});
}

TEST_CASE("values of the wrong type", "[errors]") {
  // "  - conv2d: {filters: " is 22 characters: the value starts at column 23.
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d: {filters: three, kernel: 3}\n"),
              3, 23, {"'filters'", "expected an integer", "found 'three'"});
  // "  - conv2d: {filters: 3, kernel: 3, use_bias: " is 46 characters.
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d: {filters: 3, kernel: 3, use_bias: [true]}\n"),
              3, 47, {"'use_bias'", "expected true or false", "found a list"});
  // A quoted number is a string in YAML; the message must say why '3' is not an integer.
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d: {filters: \"3\", kernel: 3}\n"),
              3, 23, {"'filters'", "expected an integer", "quotes"});
  // A float where an integer is expected; a map where a number is expected.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {units: 2.5}\n"),
              3, 20, {"'units'", "expected an integer", "found '2.5'"});
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dropout: {rate: {a: 1}}\n"),
              3, 21, {"'rate'", "expected a number", "found a map"});
  // kernel: a list of three where [height, width] is expected.
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d: {filters: 3, kernel: [3, 3, 3]}\n"),
              3, 34, {"'kernel'", "list of 2 integers", "found a list of 3"});
}

TEST_CASE("an empty value is reported on the line of its key", "[errors]") {
  // yaml-cpp places the empty value of 'units:' at the next token, on line 5; the key is on line 4.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense:\n"
                       "      units:\n"
                       "      activation: relu\n"),
              4, 7, {"'units'", "expected an integer", "found nothing"});
  check_error(error_of("input:\n"
                       "layers:\n"
                       "  - relu\n"),
              1, 1, {"input", "expected a map", "found nothing"});
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "train:\n"
                       "  epochs: 1\n"),
              2, 1, {"'layers'", "expected a list of layers", "found nothing"});
}

TEST_CASE("sizes must be positive", "[errors]") {
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d: {filters: 0, kernel: 3}\n"),
              3, 23, {"'filters'", ">= 1", "found '0'"});
  // "  - conv2d: {filters: 2, kernel: " is 33 characters.
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d: {filters: 2, kernel: -1}\n"),
              3, 34, {"'kernel'", ">= 1", "found '-1'"});
  // In a pair, the bad element itself: "  - maxpool2d: {size: [2, " is 26 characters.
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - maxpool2d: {size: [2, 0]}\n"),
              3, 27, {"'size'", ">= 1", "found '0'"});
  // "input: {shape: [28, " is 20 characters.
  check_error(error_of("input: {shape: [28, 0, 1]}\nlayers: [relu]\n"), 1, 21, {"'shape'", ">= 1", "found '0'"});
}

TEST_CASE("an unknown op, with a suggestion", "[errors]") {
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2: {filters: 2, kernel: 1}\n"),
              3, 5, {"unknown op 'conv2'", "did you mean 'conv2d'?", "expected one of: conv2d, depthwise_conv2d, separable_conv2d, maxpool2d"});
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - relu\n"
                       "  - Dense: {units: 3}\n"),
              4, 5, {"layer 2", "unknown op 'Dense'", "did you mean 'dense'?"});
}

TEST_CASE("an unknown activation, with a suggestion", "[errors]") {
  // "  - conv2d: {filters: 2, kernel: 1, activation: " is 48 characters.
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d: {filters: 2, kernel: 1, activation: rleu}\n"),
              3, 49, {"'activation'", "unknown value 'rleu'", "did you mean 'relu'?", "sigmoid, tanh, relu6, leaky_relu, elu, hard_sigmoid, swish, silu, gelu, hard_swish, softmax"});
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d: {filters: 2, kernel: 1, padding: vaild}\n"),
              3, 46, {"'padding'", "unknown value 'vaild'", "did you mean 'valid'?"});
}

TEST_CASE("shapes that shrink to nothing name the shape reaching the layer", "[errors]") {
  // 8 -> 6 -> 4 -> 2: the fourth 3x3 conv gets a 2x2 image. The error points at its 'kernel',
  // at column 34 ("  - conv2d: {filters: 2, kernel: " is 33 characters) of line 6.
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d: {filters: 2, kernel: 3}\n"
                       "  - conv2d: {filters: 2, kernel: 3}\n"
                       "  - conv2d: {filters: 2, kernel: 3}\n"
                       "  - conv2d: {filters: 2, kernel: 3}\n"),
              6, 34, {"layer 4 'conv2d_3'", "kernel 3x3 is larger than the input 2x2", "(None, 2, 2, 2)", "padding: same"});
  // 8 -> 4 -> 2 -> 1, then a 2x2 pool on 1x1. "  - maxpool2d: {size: " is 22 characters.
  check_error(error_of("input: {shape: [8, 8, 3]}\n"
                       "layers:\n"
                       "  - maxpool2d: {size: 2}\n"
                       "  - maxpool2d: {size: 2}\n"
                       "  - maxpool2d: {size: 2}\n"
                       "  - maxpool2d: {size: 2}\n"),
              6, 23, {"layer 4 'maxpool2d_3'", "pool size 2x2 is larger than the input 1x1", "(None, 1, 1, 3)"});
}

TEST_CASE("an input of the wrong rank", "[errors]") {
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - dense: {units: 3}\n"),
              3, 5, {"layer 1 'dense'", "rank 1", "(None, 8, 8, 1)", "flatten"});
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - flatten\n"
                       "  - maxpool2d\n"),
              4, 5, {"layer 2 'maxpool2d'", "rank 3", "layer 1 'flatten'", "(None, 64)", "image"});
}

TEST_CASE("duplicate layer names", "[errors]") {
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {name: a, units: 3}\n"
                       "  - dense: {name: a, units: 3}\n"),
              4, 5, {"layer 2 'a'", "already used by layer 1 'a'", "unique"});
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {name: input, units: 3}\n"),
              3, 5, {"'input'", "the model's input"});
  // A key given twice in one map.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {units: 3, units: 4}\n"),
              3, 23, {"'units' is given twice"});
}

TEST_CASE("references to missing layers", "[errors]") {
  // "  - dense: {inputs: [" is 21 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {name: hidden, units: 3}\n"
                       "  - dense: {inputs: [hiden], units: 3}\n"),
              4, 22, {"input 'hiden' is not a layer", "did you mean 'hidden'?"});
  // The second of two inputs: "  - add: {inputs: [hidden, " is 27 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {name: hidden, units: 3}\n"
                       "  - add: {inputs: [hidden, nowhere]}\n"),
              4, 28, {"input 'nowhere' is not a layer"});
}

TEST_CASE("cycles list the layers in the cycle", "[errors]") {
  // a reads c, b reads a, c reads b: data flows a -> b -> c -> a.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {name: a, inputs: [c], units: 8}\n"
                       "  - dense: {name: b, inputs: [a], units: 8}\n"
                       "  - dense: {name: c, inputs: [b], units: 8}\n"
                       "  - dense: {inputs: [c], units: 2}\n"),
              3, 5, {"cycle", "a -> b -> c -> a"});
  // A layer reading itself; "  - dense: {name: a, inputs: [" is 30 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {name: a, inputs: [a], units: 3}\n"),
              3, 31, {"cannot be its own input"});
}

TEST_CASE("mismatched shapes at add and concat", "[errors]") {
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {name: a, units: 3}\n"
                       "  - dense: {name: b, inputs: [input], units: 4}\n"
                       "  - add: {inputs: [a, b]}\n"),
              5, 5, {"layer 3 'add'", "same shape", "input 1 is (None, 3)", "input 2 is (None, 4)"});
  // 8x8 by 3x3 valid is 6x6; by 1x1 it stays 8x8: the channels may differ, the rest may not.
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - conv2d: {name: a, filters: 3, kernel: 3}\n"
                       "  - conv2d: {name: b, inputs: [input], filters: 4, kernel: 1}\n"
                       "  - concat: {inputs: [a, b]}\n"),
              5, 5, {"layer 3 'concat'", "(None, 6, 6, 3)", "(None, 8, 8, 4)"});
  // An axis out of range points at 'axis': "  - concat: {inputs: [a, b], axis: " is 35 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {name: a, units: 3}\n"
                       "  - dense: {name: b, inputs: [input], units: 4}\n"
                       "  - concat: {inputs: [a, b], axis: 2}\n"),
              5, 36, {"axis 2 is out of range", "rank 1"});
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - add\n"),
              3, 5, {"at least 2 inputs", "found 1", "inputs: [name, name]"});
}

TEST_CASE("tensors over 2^31 elements are rejected without allocating them", "[errors]") {
  // 100000 * 100000 * 3 = 3e10 floats (120 GB) per example: reported, not allocated.
  auto start = std::chrono::steady_clock::now();
  check_error(error_of("input: {shape: [100000, 100000, 3]}\n"
                       "layers: [relu]\n"),
              1, 8, {"(None, 100000, 100000, 3)", "30000000000 elements", "2^31"});
  // The kernel 10 x 2e9 is a parameter: no batch dimension, so no "(None, ...)".
  check_error(error_of("input: {shape: [10]}\n"
                       "layers:\n"
                       "  - dense: {units: 2000000000}\n"),
              3, 5, {"layer 1 'dense'", "parameter 'kernel' [10, 2000000000]", "20000000000 elements", "2^31"});
  // 4096 * 4096 * 1000 outputs per example.
  check_error(error_of("input: {shape: [4096, 4096, 3]}\n"
                       "layers:\n"
                       "  - conv2d: {filters: 1000, kernel: 3, padding: same}\n"),
              3, 5, {"(None, 4096, 4096, 1000)", "16777216000 elements per example"});
  // Products past 2^63 saturate instead of wrapping around to small or negative numbers.
  check_error(error_of("input: {shape: [2000000000, 2000000000, 2000000000]}\n"
                       "layers: [relu]\n"),
              1, 8, {"over 2^63"});
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
}

TEST_CASE("two ops in one list item", "[errors]") {
  // Block style: the second op, 'relu', is on line 4 at column 5.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {units: 3}\n"
                       "    relu: {}\n"),
              4, 5, {"two ops, 'dense' and 'relu'", "one op per list item"});
  // Flow style: "  - {dense: {units: 3}, " is 24 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - {dense: {units: 3}, relu: {}}\n"),
              3, 25, {"two ops, 'dense' and 'relu'"});
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - {name: x}\n"),
              3, 5, {"no op given"});
}

TEST_CASE("a missing required attribute", "[errors]") {
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {activation: relu}\n"),
              3, 5, {"layer 1 (dense)", "missing required attribute 'units'"});
  check_error(error_of("input: {shape: [8, 8, 1]}\n"
                       "layers:\n"
                       "  - relu\n"
                       "  - conv2d: {filters: 4}\n"),
              4, 5, {"layer 2 (conv2d)", "missing required attribute 'kernel'"});
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dropout\n"),
              3, 5, {"missing required attribute 'rate'"});
  check_error(error_of("layers: [relu]\n"), 1, 1, {"missing 'input:'"});
  check_error(error_of("input: {shape: [4]}\n"), 1, 1, {"missing 'layers:'"});
}

TEST_CASE("a bad train section", "[errors]") {
  // "  optimizer: " is 13 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers: [relu]\n"
                       "train:\n"
                       "  loss: categorical_crossentropy\n"
                       "  optimizer: adamw\n"),
              5, 14, {"unknown optimizer 'adamw'", "did you mean 'adam'?"});
  // "  batch_size: " is 14 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers: [relu]\n"
                       "train:\n"
                       "  epochs: 2\n"
                       "  batch_size: 0\n"),
              5, 15, {"'batch_size'", "in [1, 65536]", "found '0'"});
  // "  optimizer: {adam: {beta_1: " is 29 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers: [relu]\n"
                       "train:\n"
                       "  batch_size: 8\n"
                       "  optimizer: {adam: {beta_1: 1.0}}\n"),
              5, 30, {"'beta_1'", "in [0, 1)", "found '1.0'"});
  // sgd has no beta_1: "  optimizer: {sgd: {" is 20 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers: [relu]\n"
                       "train:\n"
                       "  optimizer: {sgd: {beta_1: 0.9}}\n"),
              4, 21, {"unknown key 'beta_1'", "learning_rate, momentum"});
  check_error(error_of("input: {shape: [8]}\n"
                       "layers: [relu]\n"
                       "train: {loss: mse}\n"),
              3, 15, {"unknown loss 'mse'", "categorical_crossentropy"});
}

TEST_CASE("layer and model names must be identifiers", "[errors]") {
  // "  - dense: {name: " is 18 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {name: 1st, units: 3}\n"),
              3, 19, {"'1st' is not a valid name", "letters, digits and '_'"});
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - dense: {name: my-layer, units: 3}\n"),
              3, 19, {"'my-layer' is not a valid name"});
  check_error(error_of("name: my model\n"
                       "input: {shape: [8]}\n"
                       "layers: [relu]\n"),
              1, 7, {"model 'name'", "'my model' is not a valid name"});
  // Names in inputs: too; "  - relu: {inputs: [" is 20 characters.
  check_error(error_of("input: {shape: [8]}\n"
                       "layers:\n"
                       "  - relu: {inputs: [a.b]}\n"),
              3, 21, {"'a.b' is not a valid name"});
}

TEST_CASE("file errors: missing, a directory, too large", "[errors]") {
  ScratchDir scratch;
  std::string missing = (scratch.path / "missing.yaml").string();
  try {
    parse_model_file(missing);
    FAIL("a missing file was accepted");
  } catch (const UserError& error) {
    CHECK(error.loc().file == missing);
    CHECK(error.loc().line == 0);  // the file as a whole: no line
    CHECK(error.formatted() == missing + ": error: cannot open the model file: No such file or directory");
  }

  try {
    parse_model_file(scratch.path.string());
    FAIL("a directory was accepted");
  } catch (const UserError& error) {
    CHECK(error.loc().line == 0);
    CHECK_THAT(error.message(), Contains("directory"));
  }

  // One byte over the limit: a comment, which would parse if the size were allowed.
  std::string big = (scratch.path / "big.yaml").string();
  {
    std::ofstream out(big, std::ios::binary);
    out << std::string(kMaxModelFileBytes, '#') << '\n';
  }
  try {
    parse_model_file(big);
    FAIL("a file over 1 MiB was accepted");
  } catch (const UserError& error) {
    CHECK(error.loc().line == 0);
    CHECK_THAT(error.message(), Contains("1048577 bytes") && Contains("at most 1048576"));
  }

  // At the limit it is read and parsed (and is empty of YAML).
  {
    std::ofstream out(big, std::ios::binary | std::ios::trunc);
    out << std::string(kMaxModelFileBytes - 1, '#') << '\n';
  }
  try {
    parse_model_file(big);
    FAIL("a file of only a comment was accepted");
  } catch (const UserError& error) {
    CHECK(error.loc().line == 1);
    CHECK_THAT(error.message(), Contains("empty"));
  }
}

TEST_CASE("a model name that would clash with the Halide runtime's symbols is rejected", "[errors]") {
  try {
    cnnc::parse_model_text("name: halide_net\ninput: {shape: [4]}\nlayers:\n  - dense: {units: 2}\n", "m.yaml");
    FAIL("expected a UserError");
  } catch (const cnnc::UserError& error) {
    CHECK(error.loc().line == 1);
    CHECK(error.loc().column == 7);
    CHECK_THAT(error.message(), Catch::Contains("'halide_net' is reserved"));
  }
}

TEST_CASE("zero_padding2d, upsampling2d and activation attributes: errors at the value written", "[errors]") {
  const std::string head = "input: {shape: [4, 4, 2]}\nlayers:\n";
  // A negative side: the value's own column.
  check_error(error_of(head + "  - zero_padding2d: {padding: [[1, -1], [0, 0]]}\n"), 3, 36, {"'padding'", "in [0, 4096]", "'-1'"});
  // Neither an integer, a pair nor a pair of pairs.
  check_error(error_of(head + "  - zero_padding2d: {padding: [1, 2, 3]}\n"), 3, 31,
              {"'padding'", "[[top, bottom], [left, right]]", "a list of 3"});
  check_error(error_of(head + "  - zero_padding2d: {padding: [[1, 2], 3]}\n"), 3, 40, {"'padding'", "each side a list of 2"});
  check_error(error_of(head + "  - zero_padding2d: {padding: same}\n"), 3, 31, {"'padding'", "integer"});
  // Keras's other key name is not ours.
  check_error(error_of(head + "  - upsampling2d: {size: 2, interpolation: nearest}\n"), 3, 29, {"unknown key 'interpolation'"});
  check_error(error_of(head + "  - upsampling2d: {size: [2, 0]}\n"), 3, 30, {"'size'", "in [1, 64]"});
  check_error(error_of(head + "  - upsampling2d: {size: 100}\n"), 3, 26, {"'size'", "in [1, 64]"});
  // alpha is an attribute of the layers leaky_relu and elu, never negative.
  check_error(error_of(head + "  - leaky_relu: {alpha: -0.1}\n"), 3, 25, {"'alpha'", "in [0, 1000]"});
  check_error(error_of(head + "  - relu6: {alpha: 0.1}\n"), 3, 13, {"unknown key 'alpha'"});
  // global pooling needs an image.
  check_error(error_of("input: {shape: [8]}\nlayers:\n  - global_avgpool2d\n"), 3, 5, {"global_avgpool2d", "rank 3"});
}

TEST_CASE("conv2d dilation: stride and dilation together, and a dilated kernel larger than the input", "[errors]") {
  const std::string head = "input: {shape: [6, 6, 2]}\nlayers:\n";
  // "  - conv2d: {filters: 2, kernel: 3, stride: 2, dilation: " is 57 characters.
  check_error(error_of(head + "  - conv2d: {filters: 2, kernel: 3, stride: 2, dilation: 2}\n"), 3, 58,
              {"stride 2x2 and dilation 2x2", "not both"});
  // A 3x3 kernel dilated by 3 spans 7 > 6 rows: the error is at the kernel.
  check_error(error_of(head + "  - conv2d: {filters: 2, kernel: 3, dilation: 3}\n"), 3, 34,
              {"kernel 7x7 (dilated) is larger than the input 6x6", "padding: same"});
  check_error(error_of(head + "  - conv2d: {filters: 2, kernel: 3, dilation: [1, 0]}\n"), 3, 51, {"'dilation'", "in [1, 64]"});
}

TEST_CASE("depthwise_conv2d and separable_conv2d: their attributes' errors point at their lines", "[errors]") {
  const std::string head = "input: {shape: [6, 6, 2]}\nlayers:\n";
  // "  - depthwise_conv2d: {kernel: 3, stride: 2, dilation: " is 55 characters.
  check_error(error_of(head + "  - depthwise_conv2d: {kernel: 3, stride: 2, dilation: 2}\n"), 3, 56,
              {"stride 2x2 and dilation 2x2", "not both"});
  check_error(error_of(head + "  - depthwise_conv2d: {kernel: 7}\n"), 3, 32,
              {"kernel 7x7 is larger than the input 6x6", "padding: same"});
  check_error(error_of(head + "  - depthwise_conv2d: {kernel: 3, depth_multiplier: 0}\n"), 3, 53,
              {"'depth_multiplier'", "in [1, 4096]"});
  // Keras's names are depth_multiplier and dilation_rate; ours are depth_multiplier and dilation.
  check_error(error_of(head + "  - depthwise_conv2d: {kernel: 3, dilation_rate: 2}\n"), 3, 35,
              {"unknown key 'dilation_rate'", "dilation"});
  // depthwise_conv2d has no filters: its output channels are input channels x depth_multiplier.
  check_error(error_of(head + "  - depthwise_conv2d: {kernel: 3, filters: 4}\n"), 3, 35, {"unknown key 'filters'"});
  check_error(error_of(head + "  - depthwise_conv2d: {stride: 2}\n"), 3, 5, {"depthwise_conv2d", "'kernel'"});
  check_error(error_of("input: {shape: [8]}\nlayers:\n  - depthwise_conv2d: {kernel: 1}\n"), 3, 5,
              {"depthwise_conv2d", "rank 3"});
  // 1,000,000 channels x 4096 is beyond the 2^31 limit: the error is at depth_multiplier.
  check_error(error_of("input: {shape: [1, 1, 1000000]}\nlayers:\n  - depthwise_conv2d: {kernel: 1, depth_multiplier: 4096}\n"),
              3, 53, {"depth_multiplier 4096", "more than cnnc supports"});

  check_error(error_of(head + "  - separable_conv2d: {kernel: 3}\n"), 3, 5, {"separable_conv2d", "'filters'"});
  // "  - separable_conv2d: {filters: 4, kernel: 3, stride: [1, 2], dilation: " is 72 characters.
  check_error(error_of(head + "  - separable_conv2d: {filters: 4, kernel: 3, stride: [1, 2], dilation: 2}\n"), 3, 73,
              {"stride 1x2 and dilation 2x2", "not both"});
  check_error(error_of(head + "  - separable_conv2d: {filters: 4, kernel: [2, 9]}\n"), 3, 44,
              {"kernel 2x9 is larger than the input 6x6"});
  check_error(error_of(head + "  - separable_conv2d: {filters: 4, kernel: 3, depth_multiplier: -1}\n"), 3, 65,
              {"'depth_multiplier'", "in [1, 4096]"});
  check_error(error_of(head + "  - separable_conv2d: {filters: 4, kernel: 3, activation: swishh}\n"), 3, 59,
              {"'activation'", "did you mean 'swish'"});
}
