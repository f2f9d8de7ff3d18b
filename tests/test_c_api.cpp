// The C API is defined once, in compiler/codegen/c_api.def (the header's declarations, the
// runtime's table and the check of plan_runtime.c's definitions all come from it); here
// docs/c-api.md is checked against that list, both ways.
#include <catch2/catch.hpp>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

namespace {

const char* const kFunctions[] = {
#define CNNC_API_DOC(text)
#define CNNC_API(return_type, name, parameters) #name,
#include "codegen/c_api.def"
#undef CNNC_API
#undef CNNC_API_DOC
};

std::string read_docs() {
  std::ifstream in(std::string(CNNC_SOURCE_DIR) + "/docs/c-api.md");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

TEST_CASE("docs/c-api.md describes every function of c_api.def, and no other", "[c_api]") {
  std::string docs = read_docs();
  REQUIRE(!docs.empty());
  std::set<std::string> listed(std::begin(kFunctions), std::end(kFunctions));
  CHECK(listed.size() == std::size(kFunctions));  // no name twice
  // The docs write the prefix as `m`: m_create(void), m_forward(m_model *, ...).
  for (const std::string& name : listed) {
    INFO("m_" << name);
    CHECK(std::regex_search(docs, std::regex("(^|[^A-Za-z0-9_])m_" + name + "\\(")));
  }
  std::regex call("(^|[^A-Za-z0-9_])m_([a-z_0-9]+)\\(");
  for (std::sregex_iterator it(docs.begin(), docs.end(), call), end; it != end; ++it) {
    INFO("docs/c-api.md names m_" << (*it)[2] << ", which c_api.def does not have");
    CHECK(listed.count((*it)[2]) == 1);
  }
}
