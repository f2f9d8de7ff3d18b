// The op registry: every op of the language has every phase, and the compiler decides by traits.
// Adding an op without its Halide half, its reference, a gradient-check model, its section in
// docs/dsl.md or a place in the random-network generator fails here, naming the op and the phase.
#include <catch2/catch.hpp>

#include <fstream>
#include <set>
#include <sstream>

#include "codegen/codegen.h"
#include "random_nets.h"
#include "test_support.h"

using namespace cnnc;

namespace {

// The ops a model uses: its layers' ops and the values of their `activation:` attributes.
void collect_ops(const ModelSpec& model, std::set<std::string>& ops) {
  PipelineOptions options;
  options.fuse = false;
  Graph graph = compile_graph(model, options);
  for (const Node& node : graph.nodes) {
    if (!node.def) continue;
    ops.insert(node.def->name);
    if (node.attrs.has("activation")) ops.insert(node.attrs.get_string("activation"));
  }
}

// The op names in the `### ` headings of docs/dsl.md ("### maxpool2d, avgpool2d — pooling").
std::set<std::string> documented_ops() {
  std::ifstream file(test::source_path("docs/dsl.md"));
  std::set<std::string> names;
  std::string line;
  while (std::getline(file, line)) {
    if (line.rfind("### ", 0) != 0) continue;
    std::string head = line.substr(4, line.find(" —") == std::string::npos ? std::string::npos : line.find(" —") - 4);
    std::istringstream words(head);
    std::string word;
    while (std::getline(words, word, ',')) {
      while (!word.empty() && word.front() == ' ') word.erase(word.begin());
      while (!word.empty() && word.back() == ' ') word.pop_back();
      names.insert(word);
    }
  }
  return names;
}

}  // namespace

TEST_CASE("op registry: every op has its Halide half, a reference, a gradient check, docs and a place in the fuzzer",
          "[ops]") {
  std::vector<std::string> problems = op_registry_problems();
  INFO("op registry: " << (problems.empty() ? std::string("complete") : problems.front()));
  CHECK(problems.empty());

  std::set<std::string> gradient_checked;
  for (const test::GradientModel& model : test::gradient_check_models())
    collect_ops(parse_model_file(test::source_path(model.path)), gradient_checked);
  std::set<std::string> fuzzed;
  for (uint32_t seed = 1; seed <= 200; ++seed)
    collect_ops(parse_model_text(test::random_model_yaml(seed), "random.yaml"), fuzzed);
  std::set<std::string> documented = documented_ops();

  REQUIRE(all_ops().size() >= 13);
  for (const OpDef* op : all_ops()) {
    INFO("op '" << op->name << "'");
    CHECK(reference::has_reference_op(op->name));  // tests/reference/reference_ops.cpp
    CHECK(gradient_checked.count(op->name));        // a model of test::gradient_check_models()
    CHECK(fuzzed.count(op->name));                  // test::random_model_yaml (tests/random_nets.cpp)
    CHECK(documented.count(op->name));              // a "### name" heading in docs/dsl.md
    CHECK(!op->summary.empty());
    for (const AttrSpec& attr : op->attrs) {
      INFO("attribute '" << attr.name << "'");
      CHECK(!attr.help.empty());
    }
  }
}

TEST_CASE("op registry: activation: accepts exactly the activation ops", "[ops]") {
  std::set<std::string> expected = {"linear", "none"};
  for (const OpDef* op : all_ops())
    if (op->traits.activation || op->traits.softmax) expected.insert(op->name);
  std::set<std::string> accepted(activation_names().begin(), activation_names().end());
  CHECK(accepted == expected);
  const OpDef* conv = find_op("conv2d");
  REQUIRE(conv);
  CHECK(conv->find_attr("activation")->choices == activation_names());
}

TEST_CASE("op registry: an op's name is taken once, and an op without hooks is refused", "[ops]") {
  OpDef again = *find_op("relu");
  CHECK_THROWS_AS(register_op(again), std::logic_error);
  OpDef empty;
  empty.name = "no_hooks";
  CHECK_THROWS_AS(register_op(empty), std::logic_error);
  CHECK(find_op("no_hooks") == nullptr);
}
