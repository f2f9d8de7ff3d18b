// manifest.json's schema is one struct (runtime/manifest_schema.h) that the code generator
// writes and the runtime reads: a package's manifest reads back into it and writes out the same.
#include <catch2/catch.hpp>

#include <fstream>

#include <nlohmann/json.hpp>

#include "manifest_schema.h"
#include "test_support.h"

using namespace cnnc;

TEST_CASE("manifest: a package's manifest reads into the schema and writes back the same", "[manifest]") {
  for (const char* model : {"tests/models/train_small.yaml", "tests/models/grad_bn.yaml"}) {
    INFO(model);
    test::BuiltModel built = test::build_model(model);
    std::ifstream in(built.result.dir + "/manifest.json");
    nlohmann::json json = nlohmann::json::parse(in);
    manifest::Manifest read = json.get<manifest::Manifest>();
    CHECK(read.format == manifest::kFormat);
    CHECK(read.model == built.graph.name);
    CHECK(read.buffers.size() == built.graph.nodes.size());
    CHECK(nlohmann::json(read) == json);
  }
  nlohmann::json incomplete = {{"format", manifest::kFormat}, {"model", "m"}};
  CHECK(manifest::known_format(incomplete));
  CHECK_THROWS_AS(incomplete.get<manifest::Manifest>(), nlohmann::json::exception);
  CHECK(!manifest::known_format(nlohmann::json{{"format", "cnnc-package-0"}}));
}
