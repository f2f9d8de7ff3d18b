// ONNX import checked against ONNX's own conformance data (Debian's libonnx-testdata): every case
// listed in tests/onnx_conformance.txt is imported, compiled and run by cnnc on the case's input,
// and its output must match the case's expected output within 1e-4 — or the case must be refused
// with the reason the list gives. Also: hostile files get clear errors.
//
// Node cases feed their weights as graph inputs (x, W, B ...); cnnc networks take one input, so
// the harness binds every input after the first to its test data as an initializer (a constant
// weight), as a framework's export would.
//
// CNNC_ONNX_TABLE=FILE writes the observed results as the Markdown table of docs/onnx.md.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <random>
#include <typeinfo>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include "onnx/onnx_import.h"
#include "test_support.h"
#include "weights.h"

using namespace cnnc;
using namespace cnnc::test;
namespace fs = std::filesystem;

namespace {

const char* kTestData = "/usr/share/libonnx-testdata/data";

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

onnx::TensorProto read_tensor(const fs::path& path) {
  onnx::TensorProto tensor;
  std::string bytes = read_bytes(path);
  REQUIRE(tensor.ParseFromString(bytes));
  return tensor;
}

std::vector<float> floats_of(const onnx::TensorProto& tensor) {
  int64_t n = 1;
  for (int64_t d : tensor.dims()) n *= d;
  std::vector<float> values(static_cast<size_t>(n));
  if (tensor.has_raw_data()) {
    REQUIRE(tensor.raw_data().size() == size_t(n) * 4);
    std::memcpy(values.data(), tensor.raw_data().data(), size_t(n) * 4);
  } else {
    REQUIRE(tensor.float_data_size() == n);
    for (int64_t i = 0; i < n; ++i) values[size_t(i)] = tensor.float_data(int(i));
  }
  return values;
}

struct Outcome {
  bool passed = false;
  std::string detail;  // the refusal, or the largest difference
};

// Runs one case directory: import (binding extra inputs as initializers), compile, run, compare.
Outcome run_case(const fs::path& dir) {
  onnx::ModelProto model;
  REQUIRE(model.ParseFromString(read_bytes(dir / "model.onnx")));
  fs::path data = dir / "test_data_set_0";
  std::set<std::string> initializers;
  for (const auto& t : model.graph().initializer()) initializers.insert(t.name());
  int graph_input = 0;
  std::string first_input;
  for (const auto& input : model.graph().input()) {
    if (initializers.count(input.name())) continue;
    fs::path file = data / fmt::format("input_{}.pb", graph_input);
    if (graph_input == 0) {
      first_input = input.name();
    } else if (fs::exists(file)) {
      onnx::TensorProto tensor = read_tensor(file);
      tensor.set_name(input.name());
      *model.mutable_graph()->add_initializer() = tensor;
    }
    ++graph_input;
  }
  std::string bytes;
  model.SerializeToString(&bytes);
  OnnxImport imported;
  try {
    imported = import_onnx_bytes(bytes, (dir / "model.onnx").string());
  } catch (const UserError& error) {
    return {false, error.message()};
  }
  BuiltModel built;
  try {
    built = build_graph(compile_graph(imported.spec), "host");
  } catch (const UserError& error) {
    return {false, error.message()};
  }
  onnx::TensorProto input = read_tensor(data / "input_0.pb");
  onnx::TensorProto expected_tensor = read_tensor(data / "output_0.pb");
  REQUIRE(input.dims_size() >= 1);
  int64_t batch = input.dims(0);
  std::vector<float> onnx_input = floats_of(input), expected = floats_of(expected_tensor);
  REQUIRE(int64_t(onnx_input.size()) == batch * shape_elements(imported.onnx_input_shape));

  rt::Network network(built.package);
  std::map<std::string, rt::Tensor> weights;  // every parameter, each of its shape (set_params checks)
  for (const auto& [name, tensor] : imported.weights) weights[name] = rt::Tensor{tensor.shape, tensor.data};
  rt::set_params(network, weights, "imported");
  std::vector<float> output = network.forward(imported.onnx_input_to_cnnc(onnx_input.data(), batch), int(batch));
  std::vector<float> got = imported.cnnc_output_to_onnx(output.data(), batch);
  REQUIRE(got.size() == expected.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double error = std::fabs(double(got[i]) - expected[i]) / std::max(1.0, std::fabs(double(expected[i])));
    if (!(error <= worst)) worst = std::isnan(error) ? INFINITY : error;
  }
  if (worst > 1e-4) return {false, fmt::format("output differs by {:.3g} (relative)", worst)};
  return {true, fmt::format("max relative difference {:.2g}", worst)};
}

struct Expectation {
  std::string name;
  bool pass = false;
  std::string reason;  // a part of the refusal's message
};

std::vector<Expectation> expectations(const std::string& suite) {
  std::ifstream in(source_path("tests/onnx_conformance.txt"));
  REQUIRE(in);
  std::vector<Expectation> list;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string where, name, verdict;
    fields >> where >> name >> verdict;
    if (where != suite) continue;
    Expectation e{name, verdict == "pass", ""};
    if (!e.pass) {
      REQUIRE(verdict == "refused:");
      std::getline(fields, e.reason);
      e.reason.erase(0, e.reason.find_first_not_of(' '));
    }
    list.push_back(e);
  }
  return list;
}

void check_suite(const std::string& suite) {
  fs::path root = fs::path(kTestData) / suite;
  INFO("libonnx-testdata is installed by scripts/setup.sh");
  REQUIRE(fs::is_directory(root));
  std::vector<Expectation> list = expectations(suite);
  REQUIRE(list.size() >= 20);
  const char* table = std::getenv("CNNC_ONNX_TABLE");
  std::ofstream out;
  if (table) out.open(table, std::ios::app);
  int passed = 0;
  for (const Expectation& e : list) {
    INFO(suite << "/" << e.name);
    Outcome outcome = run_case(root / e.name);
    if (table)
      out << fmt::format("| {} | `{}` | {} | {} |\n", suite, e.name, outcome.passed ? "passed" : "refused",
                         outcome.detail);
    INFO(outcome.detail);
    CHECK(outcome.passed == e.pass);
    if (!e.pass && !outcome.passed) CHECK_THAT(outcome.detail, Catch::Contains(e.reason));
    passed += outcome.passed;
  }
  WARN(fmt::format("{}: {} of {} cases passed, the others refused as listed", suite, passed, list.size()));
}

}  // namespace

TEST_CASE("ONNX conformance: pytorch-converted cases match their expected outputs or are refused as listed") {
  check_suite("pytorch-converted");
}

TEST_CASE("ONNX conformance: node cases match their expected outputs or are refused as listed") { check_suite("node"); }

// ---------------------------------------------------------------------------------------------
// Hostile files: a clear UserError naming the file, never a crash, a huge allocation or a wrong
// network.

namespace {

// A small valid model: Conv (3x3, pads 1) + Relu + Flatten + Gemm on a [N, 1, 4, 4] input.
onnx::ModelProto small_model() {
  onnx::ModelProto model;
  model.set_ir_version(8);
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  auto* graph = model.mutable_graph();
  graph->set_name("small");
  auto add_input = [&](onnx::ValueInfoProto* info, const std::string& name, std::vector<int64_t> dims) {
    info->set_name(name);
    auto* tensor = info->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) {
      auto* dim = tensor->mutable_shape()->add_dim();
      if (d < 0) dim->set_dim_param("batch");
      else dim->set_dim_value(d);
    }
  };
  add_input(graph->add_input(), "x", {-1, 1, 4, 4});
  add_input(graph->add_output(), "y", {-1, 3});
  auto add_weights = [&](const std::string& name, std::vector<int64_t> dims) {
    auto* t = graph->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    int64_t n = 1;
    for (int64_t d : dims) t->add_dims(d), n *= d;
    for (int64_t i = 0; i < n; ++i) t->add_float_data(float((i * 7) % 11) / 11.0f - 0.4f);
  };
  add_weights("w", {2, 1, 3, 3});
  add_weights("b", {2});
  add_weights("fc", {32, 3});
  auto add_node = [&](const std::string& op, std::vector<std::string> in, std::string out) {
    auto* node = graph->add_node();
    node->set_op_type(op);
    node->set_name(out + "_node");
    for (auto& i : in) node->add_input(i);
    node->add_output(out);
    return node;
  };
  auto* conv = add_node("Conv", {"x", "w", "b"}, "c");
  auto* pads = conv->add_attribute();
  pads->set_name("pads");
  pads->set_type(onnx::AttributeProto::INTS);
  for (int k = 0; k < 4; ++k) pads->add_ints(1);
  add_node("Relu", {"c"}, "r");
  add_node("Flatten", {"r"}, "f");
  add_node("Gemm", {"f", "fc"}, "y");
  return model;
}

std::string serialized(const onnx::ModelProto& model) {
  std::string bytes;
  model.SerializeToString(&bytes);
  return bytes;
}

// The UserError's message for importing `bytes` as `path`; fails the test if it imports.
std::string import_error(const std::string& bytes, const std::string& path = "/tmp/hostile.onnx") {
  try {
    import_onnx_bytes(bytes, path);
  } catch (const UserError& error) {
    CHECK(error.loc().file == path);
    return error.message();
  }
  FAIL("imported without an error");
  return "";
}

}  // namespace

TEST_CASE("ONNX import: a small hand-built model imports as the expected cnnc layers") {
  OnnxImport imported = import_onnx_bytes(serialized(small_model()), "small.onnx");
  REQUIRE(imported.spec.layers.size() == 3);
  CHECK(imported.spec.layers[0].op == "conv2d");
  CHECK(imported.spec.layers[0].attrs.get_string("padding") == "same");
  CHECK(imported.spec.layers[0].attrs.get_string("activation") == "relu");
  CHECK(imported.spec.layers[1].op == "flatten");
  CHECK(imported.spec.layers[2].op == "dense");
  // The Gemm's rows follow ONNX's (c, y, x) flatten; cnnc's dense reads (y, x, c).
  REQUIRE(imported.output_flattened.empty());
  const ImportedTensor& kernel = imported.weights.at(imported.spec.layers[2].name + ".kernel");
  REQUIRE(kernel.shape == Shape{32, 3});
  for (int64_t y = 0; y < 4; ++y)
    for (int64_t x = 0; x < 4; ++x)
      for (int64_t c = 0; c < 2; ++c)
        for (int64_t u = 0; u < 3; ++u) {
          int64_t onnx_row = (c * 4 + y) * 4 + x;
          float expected = float(((onnx_row * 3 + u) * 7) % 11) / 11.0f - 0.4f;
          CHECK(kernel.data[size_t(((y * 4 + x) * 2 + c) * 3 + u)] == expected);
        }
}

TEST_CASE("ONNX import: an NHWC input turned NCHW by a Transpose, and an NHWC output (tf2onnx's form)") {
  onnx::ModelProto model = small_model();
  auto* graph = model.mutable_graph();
  auto* dims = graph->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape();
  dims->mutable_dim(1)->set_dim_value(4);  // [N, 4, 4, 1]: rows, columns, channels
  dims->mutable_dim(3)->set_dim_value(1);
  graph->mutable_node(0)->set_input(0, "x_nchw");
  onnx::NodeProto to_nchw;
  to_nchw.set_op_type("Transpose");
  to_nchw.set_name("to_nchw");
  to_nchw.add_input("x");
  to_nchw.add_output("x_nchw");
  auto* perm = to_nchw.add_attribute();
  perm->set_name("perm");
  perm->set_type(onnx::AttributeProto::INTS);
  for (int p : {0, 3, 1, 2}) perm->add_ints(p);
  // Conv, Relu, then Transpose to NHWC as the output (the Flatten and Gemm dropped).
  onnx::NodeProto to_nhwc = to_nchw;
  to_nhwc.set_name("to_nhwc");
  to_nhwc.set_input(0, "r");
  to_nhwc.set_output(0, "y");
  perm = to_nhwc.mutable_attribute(0);
  perm->clear_ints();
  for (int p : {0, 2, 3, 1}) perm->add_ints(p);
  graph->mutable_node()->DeleteSubrange(2, 2);
  *graph->add_node() = to_nhwc;
  graph->mutable_node()->Add()->CopyFrom(to_nchw);
  graph->mutable_output(0)->mutable_type()->mutable_tensor_type()->clear_shape();
  // Topological order: the input's Transpose first.
  for (int n = graph->node_size() - 1; n > 0; --n) graph->mutable_node()->SwapElements(n, n - 1);
  OnnxImport imported = import_onnx_bytes(serialized(model), "nhwc.onnx");
  CHECK(imported.input_nhwc);
  CHECK(imported.output_nhwc);
  CHECK(imported.spec.input_shape == Shape{4, 4, 1});
  REQUIRE(imported.spec.layers.size() == 1);
  CHECK(imported.spec.layers[0].op == "conv2d");
  // No permutation on either side.
  std::vector<float> data(16);
  for (size_t i = 0; i < data.size(); ++i) data[i] = float(i);
  CHECK(imported.onnx_input_to_cnnc(data.data(), 1) == data);
  std::vector<float> out(32);
  for (size_t i = 0; i < out.size(); ++i) out[i] = float(i);
  CHECK(imported.cnnc_output_to_onnx(out.data(), 1) == out);
}

TEST_CASE("ONNX import: hostile files get a clear error") {
  std::string good = serialized(small_model());
  SECTION("truncated") { CHECK_THAT(import_error(good.substr(0, good.size() / 2)), Catch::Contains("not an ONNX model")); }
  SECTION("not protobuf") { CHECK_THAT(import_error("name: not an onnx file\n"), Catch::Contains("not an ONNX model")); }
  SECTION("empty") { CHECK_THAT(import_error(""), Catch::Contains("empty")); }
  SECTION("huge declared input") {
    onnx::ModelProto model = small_model();
    auto* dims = model.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape();
    dims->mutable_dim(2)->set_dim_value(int64_t(1) << 40);
    dims->mutable_dim(3)->set_dim_value(int64_t(1) << 40);
    CHECK_THAT(import_error(serialized(model)), Catch::Contains("larger than cnnc supports"));
  }
  SECTION("huge declared initializer") {
    onnx::ModelProto model = small_model();
    model.mutable_graph()->mutable_initializer(2)->set_dims(0, int64_t(1) << 40);
    CHECK_THAT(import_error(serialized(model)), Catch::Contains("more than cnnc supports"));
  }
  SECTION("an initializer whose data does not match its shape") {
    onnx::ModelProto model = small_model();
    model.mutable_graph()->mutable_initializer(0)->set_dims(0, 3);
    CHECK_THAT(import_error(serialized(model)), Catch::Contains("values for shape [3, 1, 3, 3]"));
    model = small_model();
    auto* t = model.mutable_graph()->mutable_initializer(1);
    t->clear_float_data();
    t->set_raw_data(std::string(7, '\0'));
    CHECK_THAT(import_error(serialized(model)), Catch::Contains("7 bytes of data for shape [2]"));
  }
  SECTION("a cycle") {
    onnx::ModelProto model = small_model();
    model.mutable_graph()->mutable_node(1)->set_input(0, "f");  // Relu reads Flatten's output
    CHECK_THAT(import_error(serialized(model)), Catch::Contains("not defined before it"));
  }
  SECTION("a value defined twice") {
    onnx::ModelProto model = small_model();
    model.mutable_graph()->mutable_node(1)->set_output(0, "c");
    CHECK_THAT(import_error(serialized(model)), Catch::Contains("'c' is defined twice"));
  }
  SECTION("external data outside the model's folder") {
    for (const char* location : {"../secret.bin", "/etc/passwd", "sub/../../x.bin"}) {
      onnx::ModelProto model = small_model();
      auto* t = model.mutable_graph()->mutable_initializer(0);
      t->clear_float_data();
      t->set_data_location(onnx::TensorProto::EXTERNAL);
      auto* entry = t->add_external_data();
      entry->set_key("location");
      entry->set_value(location);
      CHECK_THAT(import_error(serialized(model), "/tmp/models/hostile.onnx"), Catch::Contains("outside the model's folder"));
    }
  }
  SECTION("external data beside the model is read, and its size checked") {
    test::Scratch scratch("onnx-external");
    onnx::ModelProto model = small_model();
    auto* t = model.mutable_graph()->mutable_initializer(0);
    std::vector<float> values(t->float_data().begin(), t->float_data().end());
    t->clear_float_data();
    t->set_data_location(onnx::TensorProto::EXTERNAL);
    auto* entry = t->add_external_data();
    entry->set_key("location");
    entry->set_value("weights.bin");
    std::string path = (scratch.path / "model.onnx").string();
    {
      std::ofstream out(scratch.path / "weights.bin", std::ios::binary);
      out.write(reinterpret_cast<const char*>(values.data()), std::streamsize(values.size() * 4));
    }
    OnnxImport imported = import_onnx_bytes(serialized(model), path);
    CHECK(imported.weights.at(imported.spec.layers[0].name + ".kernel").data.size() == 18);
    std::filesystem::resize_file(scratch.path / "weights.bin", 40);
    CHECK_THAT(import_error(serialized(model), path), Catch::Contains("the tensor needs 72"));
  }
  SECTION("unsupported ops and attributes name the node") {
    onnx::ModelProto model = small_model();
    model.mutable_graph()->mutable_node(1)->set_op_type("Selu");
    CHECK_THAT(import_error(serialized(model)), Catch::Contains("node 1 'r_node' (Selu): op type Selu is not supported"));
    model = small_model();
    auto* group = model.mutable_graph()->mutable_node(0)->add_attribute();
    group->set_name("group");
    group->set_i(2);
    CHECK_THAT(import_error(serialized(model)), Catch::Contains("node 0 'c_node' (Conv): group 2"));
  }
  SECTION("two inputs, two outputs, other opsets") {
    onnx::ModelProto model = small_model();
    *model.mutable_graph()->add_output() = model.graph().output(0);
    CHECK_THAT(import_error(serialized(model)), Catch::Contains("2 outputs"));
    model = small_model();
    model.mutable_opset_import(0)->set_version(99);
    CHECK_THAT(import_error(serialized(model)), Catch::Contains("opset 99"));
  }
}

TEST_CASE("ONNX import fuzz: mutated models import or fail with a UserError") {
  std::string good = serialized(small_model());
  std::mt19937 random(12345);
  auto start = std::chrono::steady_clock::now();
  int imported = 0, refused = 0;
  for (int i = 0; i < 3000 && std::chrono::steady_clock::now() - start < std::chrono::seconds(8); ++i) {
    std::string bytes = good;
    int edits = 1 + int(random() % 4);
    for (int e = 0; e < edits; ++e) {
      size_t at = random() % bytes.size();
      switch (random() % 4) {
        case 0: bytes[at] = char(random()); break;                              // flip a byte
        case 1: bytes.resize(at); break;                                         // truncate
        case 2: bytes.insert(at, 1, char(random())); break;                      // insert
        default: bytes[at] = char(bytes[at] ^ (1 << (random() % 8))); break;     // flip a bit
      }
      if (bytes.empty()) bytes = "x";
    }
    try {
      OnnxImport result = import_onnx_bytes(bytes, "fuzz.onnx");
      compile_graph(result.spec);
      ++imported;
    } catch (const UserError& error) {
      ++refused;
    } catch (const std::exception& error) {
      FAIL(fmt::format("mutation {}: {} ({})", i, error.what(), typeid(error).name()));
    }
  }
  WARN(fmt::format("{} mutated models imported, {} refused with a UserError", imported, refused));
  CHECK(imported + refused > 100);
}

// ---------------------------------------------------------------------------------------------
// Graphs the importer must refuse, or import in one exact way, rather than guess (each once
// imported wrongly, found by review).

namespace {

// A small graph builder: one float input "x", nodes, initializers, one output.
struct Builder {
  onnx::ModelProto model;
  explicit Builder(std::vector<int64_t> input, int opset = 13) {
    model.set_ir_version(8);
    auto* o = model.add_opset_import();
    o->set_version(opset);
    value_info(model.mutable_graph()->add_input(), "x", input);
  }
  static void value_info(onnx::ValueInfoProto* info, const std::string& name, const std::vector<int64_t>& dims) {
    info->set_name(name);
    auto* tensor = info->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) tensor->mutable_shape()->add_dim()->set_dim_value(d);
  }
  onnx::NodeProto* node(const std::string& op, std::vector<std::string> in, std::vector<std::string> out) {
    auto* n = model.mutable_graph()->add_node();
    n->set_op_type(op);
    n->set_name(out[0] + "_node");
    for (auto& i : in) n->add_input(i);
    for (auto& o : out) n->add_output(o);
    return n;
  }
  void init(const std::string& name, std::vector<int64_t> dims) {
    auto* t = model.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    int64_t n = 1;
    for (int64_t d : dims) t->add_dims(d), n *= d;
    for (int64_t i = 0; i < n; ++i) t->add_float_data(0.25f * float(i % 5) - 0.5f);
  }
  std::string bytes(const std::string& output, std::vector<int64_t> dims = {}) {
    auto* out = model.mutable_graph()->add_output();
    if (dims.empty()) out->set_name(output);
    else value_info(out, output, dims);
    return serialized(model);
  }
};

void set_float(onnx::NodeProto* node, const std::string& name, float value) {
  auto* a = node->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(value);
}

std::vector<std::string> ops_of(const OnnxImport& imported) {
  std::vector<std::string> ops;
  for (const LayerSpec& layer : imported.spec.layers)
    ops.push_back(layer.op + (layer.attrs.has("activation") ? "+" + layer.attrs.get_string("activation") : ""));
  return ops;
}

}  // namespace

TEST_CASE("ONNX import: folds only what is exact") {
  SECTION("a LeakyRelu folds into the conv only with the slope `activation: leaky_relu` has (0.2)") {
    for (float alpha : {0.2f, 0.3f}) {
      Builder g({1, 1, 5, 5});
      g.init("w", {2, 1, 3, 3});
      g.node("Conv", {"x", "w"}, {"c"});
      set_float(g.node("LeakyRelu", {"c"}, {"y"}), "alpha", alpha);
      OnnxImport imported = import_onnx_bytes(g.bytes("y"), "leaky.onnx");
      if (alpha == 0.2f) CHECK(ops_of(imported) == std::vector<std::string>{"conv2d+leaky_relu"});
      else CHECK(ops_of(imported) == std::vector<std::string>{"conv2d+linear", "leaky_relu"});
    }
  }
  SECTION("an activation after an Identity of a value something else reads is not folded") {
    Builder g({1, 1, 5, 5});
    g.init("w", {2, 1, 3, 3});
    g.node("Conv", {"x", "w"}, {"c"});
    g.node("Identity", {"c"}, {"i"});
    g.node("Relu", {"i"}, {"r"});
    g.node("Add", {"r", "c"}, {"y"});
    OnnxImport imported = import_onnx_bytes(g.bytes("y"), "alias.onnx");
    CHECK(ops_of(imported) == std::vector<std::string>{"conv2d+linear", "relu", "add"});
  }
  SECTION("a globally pooled [N, C, 1, 1] keeps its rank: Softmax over the last axis is refused") {
    Builder g({1, 3, 4, 4});
    g.node("GlobalAveragePool", {"x"}, {"p"});
    g.node("Softmax", {"p"}, {"y"});
    CHECK_THAT(import_error(g.bytes("y")), Catch::Contains("Softmax over axis -1 of a rank-4 tensor"));
  }
  SECTION("a [C] constant added to a map broadcasts along the width: not a bias") {
    Builder g({1, 1, 4, 1});
    g.init("w", {3, 1, 1, 1});
    g.init("b", {3});
    g.node("Conv", {"x", "w"}, {"c"});
    g.node("Add", {"c", "b"}, {"y"});
    CHECK_THAT(import_error(g.bytes("y")), Catch::Contains("Add of a constant"));
  }
  SECTION("MatMul + Add of a [M, 1] constant is no dense bias") {
    Builder g({1, 4});
    g.init("w", {4, 3});
    g.init("b", {3, 1});
    g.node("MatMul", {"x", "w"}, {"m"});
    g.node("Add", {"m", "b"}, {"y"});
    CHECK_THAT(import_error(g.bytes("y")), Catch::Contains("Add of a constant"));
  }
  SECTION("BatchNormalization in its training form (opset 9: five outputs) is refused") {
    Builder g({1, 2, 3, 3}, 9);
    for (const char* p : {"s", "b", "m", "v"}) g.init(p, {2});
    g.node("BatchNormalization", {"x", "s", "b", "m", "v"}, {"y", "rm", "rv", "sm", "sv"});
    CHECK_THAT(import_error(g.bytes("y")), Catch::Contains("the training form"));
  }
  SECTION("malformed nodes and attributes are errors, not crashes") {
    Builder g({1, 3});
    auto* sig = g.node("Sigmoid", {}, {"s"});
    (void)sig;
    g.node("Mul", {"x", "s"}, {"y"});
    CHECK_THAT(import_error(g.bytes("y")), Catch::Contains("input 0 is missing"));
    Builder h({1, 4});
    h.init("w", {3, 4});
    set_float(h.node("Gemm", {"x", "w"}, {"y"}), "transA", 1.0f);
    CHECK_THAT(import_error(h.bytes("y")), Catch::Contains("attribute transA has type FLOAT, not INT"));
  }
  SECTION("an output shape other than the one declared is refused") {
    Builder g({1, 4});
    g.init("w", {4, 3});
    g.node("Gemm", {"x", "w"}, {"y"});
    CHECK_THAT(import_error(g.bytes("y", {1, 5})), Catch::Contains("declares its output 'y' as [1, 5]"));
    Builder ok({1, 4});
    ok.init("w", {4, 3});
    ok.node("Gemm", {"x", "w"}, {"y"});
    CHECK(import_onnx_bytes(ok.bytes("y", {1, 3}), "ok.onnx").spec.layers.size() == 1);
  }
}
