// Fuzzing the front end: mutated models, random bytes and deep nesting must either compile or be
// rejected with a UserError that names the file; never another exception type, a crash or a hang.
//
// Inputs come from std::mt19937 with fixed seeds, so a failure reproduces; a time budget keeps the
// whole file to about 10 seconds in a Release build (a slower build just tries fewer inputs).
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <typeinfo>
#include <vector>

#include <fmt/format.h>

#include "frontend/parse_model.h"
#include "graph/pipeline.h"

using namespace cnnc;

namespace {

using Clock = std::chrono::steady_clock;

// The input with bytes outside printable ASCII escaped, for the failure message.
std::string printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (c == '\n' || c == '\t' || (c >= 0x20 && c < 0x7f)) out += char(c);
    else out += fmt::format("\\x{:02x}", c);
  }
  return out;
}

struct Outcome {
  int accepted = 0;
  int rejected = 0;
};

// Runs the front end and the graph passes on `text`; fails the test unless that succeeds or throws
// a UserError whose diagnostic starts with the file name.
void run_one(const std::string& text, const std::string& origin, Outcome& outcome) {
  try {
    compile_graph(parse_model_text(text, "m.yaml"));
    ++outcome.accepted;
    return;
  } catch (const UserError& error) {
    if (error.formatted().rfind("m.yaml:", 0) == 0) {
      ++outcome.rejected;
      return;
    }
    FAIL("a UserError without a position: " << error.formatted() << "\ninput (" << origin << "):\n"
                                            << printable(text));
  } catch (const std::exception& error) {
    FAIL("unexpected " << typeid(error).name() << ": " << error.what() << "\ninput (" << origin << "):\n"
                       << printable(text));
  } catch (...) {
    FAIL("an exception of unknown type\ninput (" << origin << "):\n" << printable(text));
  }
}

std::vector<std::string> model_texts() {
  std::vector<std::string> texts;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(CNNC_SOURCE_DIR) + "/models")) {
    if (entry.path().extension() != ".yaml") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream buffer;
    buffer << in.rdbuf();
    texts.push_back(buffer.str());
  }
  std::sort(texts.begin(), texts.end());  // directory order is not stable; the seed's meaning should be
  return texts;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  return text;
}

// Words a mutation may put where a key or value was: real keys and ops (so that mutants stay close
// to valid models), near misses and noise.
const std::vector<std::string> kWords = {
    "name", "input", "shape", "layers", "train", "inputs", "filters", "kernel", "stride", "padding", "activation",
    "use_bias", "units", "size", "rate", "momentum", "epsilon", "axis", "loss", "optimizer", "batch_size",
    "epochs", "seed", "learning_rate", "beta_1", "beta_2", "adam", "sgd", "conv2d", "maxpool2d", "avgpool2d",
    "dense", "flatten", "dropout", "relu", "sigmoid", "tanh", "softmax", "batchnorm", "add", "concat", "same",
    "valid", "linear", "none", "true", "false", "null", "~", "conv2", "filter", "x", "_", "a.b", "1st", "stem",
    "block1_out", "dense_1", "conv2d_1", "<<", "!!int", "&a", "*a", "? ", "|", ">", "'", "\"", "%YAML 1.2", "---",
    "..."};

const std::vector<std::string> kNumbers = {
    "0", "-1", "-0", "1", "2", "1.5", "0.5", "-2.5", "2147483647", "2147483648", "-2147483648", "4294967296",
    "9223372036854775807", "9223372036854775808", "99999999999999999999999", "1e308", "1e309", "-1e308", "1e-400",
    "nan", ".nan", "inf", ".inf", "-.inf", "0x10", "0o7", "3_000", "+5", "1e3", "1.", ".5", "100000", "65536",
    "65537"};

const std::string kPunctuation = "{}[]:,-#&*!|>'\"%@`? \t\n\r.~0123456789";

template <typename T>
const T& pick(std::mt19937& rng, const std::vector<T>& items) {
  return items[std::uniform_int_distribution<size_t>(0, items.size() - 1)(rng)];
}

size_t below(std::mt19937& rng, size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng); }

char random_byte(std::mt19937& rng) {
  // Half YAML punctuation, half any byte but NUL (NUL is rejected before parsing; tested apart).
  if (rng() % 2) return kPunctuation[below(rng, kPunctuation.size())];
  return char(1 + below(rng, 255));
}

std::string mutate(std::string text, std::mt19937& rng, const std::vector<std::string>& all_lines) {
  int steps = 1 + int(below(rng, 4));
  for (int step = 0; step < steps; ++step) {
    std::vector<std::string> lines = split_lines(text);
    switch (below(rng, 11)) {
      case 0:  // delete a line
        if (!lines.empty()) lines.erase(lines.begin() + long(below(rng, lines.size())));
        text = join_lines(lines);
        break;
      case 1:  // insert a line from any model
        lines.insert(lines.begin() + long(below(rng, lines.size() + 1)), pick(rng, all_lines));
        text = join_lines(lines);
        break;
      case 2:  // duplicate a line
        if (!lines.empty()) {
          size_t at = below(rng, lines.size());
          lines.insert(lines.begin() + long(at), lines[at]);
        }
        text = join_lines(lines);
        break;
      case 3:  // swap two lines
        if (lines.size() > 1) std::swap(lines[below(rng, lines.size())], lines[below(rng, lines.size())]);
        text = join_lines(lines);
        break;
      case 4: {  // replace a few bytes
        int count = 1 + int(below(rng, 4));
        for (int i = 0; i < count && !text.empty(); ++i) text[below(rng, text.size())] = random_byte(rng);
        break;
      }
      case 5:  // insert a byte
        text.insert(text.begin() + long(below(rng, text.size() + 1)), random_byte(rng));
        break;
      case 6: {  // replace a number with an extreme or malformed one
        std::vector<size_t> starts;
        for (size_t i = 0; i < text.size(); ++i)
          if (std::isdigit(static_cast<unsigned char>(text[i])) &&
              (i == 0 || !std::isdigit(static_cast<unsigned char>(text[i - 1]))))
            starts.push_back(i);
        if (starts.empty()) break;
        size_t at = pick(rng, starts), end = at;
        while (end < text.size() && (std::isdigit(static_cast<unsigned char>(text[end])) || text[end] == '.')) ++end;
        text.replace(at, end - at, pick(rng, kNumbers));
        break;
      }
      case 7:  // truncate
        text.resize(below(rng, text.size() + 1));
        break;
      case 8: {  // replace a key (a word before ':') or any word with another word
        std::vector<std::pair<size_t, size_t>> words;
        for (size_t i = 0; i < text.size();) {
          if (!std::isalpha(static_cast<unsigned char>(text[i])) && text[i] != '_') {
            ++i;
            continue;
          }
          size_t end = i;
          while (end < text.size() && (std::isalnum(static_cast<unsigned char>(text[end])) || text[end] == '_')) ++end;
          words.push_back({i, end - i});
          i = end;
        }
        if (words.empty()) break;
        auto [at, length] = pick(rng, words);
        text.replace(at, length, pick(rng, kWords));
        break;
      }
      case 9: {  // nest brackets deeply at a random point, closed or not
        size_t depth = 1 + below(rng, 700);
        bool square = rng() % 2;
        std::string open(depth, square ? '[' : '{');
        std::string close = rng() % 2 ? std::string(depth, square ? ']' : '}') : "";
        text.insert(below(rng, text.size() + 1), open + (square ? "1" : "a: 1") + close);
        break;
      }
      case 10: {  // indent or unindent a line
        if (lines.empty()) break;
        std::string& line = lines[below(rng, lines.size())];
        if (rng() % 2) line.insert(0, std::string(1 + below(rng, 4), ' '));
        else if (!line.empty() && line[0] == ' ') line.erase(0, std::min(line.find_first_not_of(' '), size_t(2)));
        text = join_lines(lines);
        break;
      }
    }
  }
  return text;
}

}  // namespace

TEST_CASE("fuzz: mutated models compile or raise a UserError", "[fuzz]") {
  const std::vector<std::string> models = model_texts();
  REQUIRE(models.size() >= 3);
  std::vector<std::string> all_lines;
  for (const std::string& model : models)
    for (const std::string& line : split_lines(model)) all_lines.push_back(line);

  // The unmutated models must compile, or the mutants test little.
  Outcome originals;
  for (const std::string& model : models) run_one(model, "an unmutated model", originals);
  REQUIRE(originals.accepted == int(models.size()));

  std::mt19937 rng(20240611);
  Outcome outcome;
  const auto deadline = Clock::now() + std::chrono::seconds(6);
  int tried = 0;
  for (; tried < 200000 && Clock::now() < deadline; ++tried) {
    const std::string& model = models[size_t(tried) % models.size()];
    std::string text = mutate(model, rng, all_lines);
    run_one(text, fmt::format("mutant {} of model {}, seed 20240611", tried, size_t(tried) % models.size()), outcome);
  }
  WARN("mutants: " << tried << " tried, " << outcome.accepted << " accepted, " << outcome.rejected << " rejected");
  // Both outcomes must occur, or the mutations are too weak (all accepted) or too wild (all rejected).
  CHECK(tried >= 1000);
  CHECK(outcome.accepted > 0);
  CHECK(outcome.rejected > 0);
}

TEST_CASE("fuzz: random bytes raise a UserError, never anything else", "[fuzz]") {
  std::mt19937 rng(7);
  Outcome outcome;
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  int tried = 0;
  for (; tried < 100000 && Clock::now() < deadline; ++tried) {
    std::string text(below(rng, 200), '\0');
    for (char& c : text) c = random_byte(rng);
    if (tried % 50 == 0 && !text.empty()) text[below(rng, text.size())] = '\0';
    run_one(text, fmt::format("random bytes {}, seed 7", tried), outcome);
  }
  WARN("random inputs: " << tried << " tried, " << outcome.rejected << " rejected");
  CHECK(tried >= 1000);
  CHECK(outcome.accepted == 0);  // no random string is a model
}

TEST_CASE("fuzz: deep nesting is rejected without exhausting the stack", "[fuzz]") {
  Outcome outcome;
  const std::string model_head = "input: {shape: [4]}\nlayers:\n";
  for (size_t depth : {2, 3, 10, 100, 400, 499, 500, 501, 1000, 5000, 100000}) {
    auto repeat = [depth](const std::string& piece) {
      std::string out;
      out.reserve(piece.size() * depth);
      for (size_t i = 0; i < depth; ++i) out += piece;
      return out;
    };
    std::string origin = fmt::format("nesting of depth {}", depth);
    run_one(repeat("[") + repeat("]"), origin, outcome);
    run_one(repeat("["), origin, outcome);
    run_one(repeat("{") + repeat("}"), origin, outcome);
    run_one(repeat("{"), origin, outcome);
    run_one(repeat("{a: ") + "1" + repeat("}"), origin, outcome);
    run_one(repeat("- "), origin, outcome);
    run_one(repeat("[{"), origin, outcome);
    run_one(model_head + "  - " + repeat("[") + "relu" + repeat("]") + "\n", origin, outcome);
    run_one(model_head + "  - dense: {units: " + repeat("[") + "3" + repeat("]") + "}\n", origin, outcome);
    run_one("input: {shape: " + repeat("[") + "4" + repeat("]") + "}\nlayers: [relu]\n", origin, outcome);
    run_one(model_head + "  - add: {inputs: " + repeat("[") + "input" + repeat("]") + "}\n", origin, outcome);
  }
  CHECK(outcome.accepted == 0);
  CHECK(outcome.rejected == 11 * 11);
}
