#include "support/diagnostics.h"

#include <algorithm>
#include <cctype>
#include <vector>

#include <fmt/format.h>

namespace cnnc {

std::string SourceLoc::str() const {
  if (line <= 0) return file;
  return fmt::format("{}:{}:{}", file, line, column > 0 ? column : 1);
}

UserError::UserError(SourceLoc loc, const std::string& message)
    : std::runtime_error(loc.str() + ": error: " + message), loc_(std::move(loc)), message_(message) {}

std::string UserError::formatted() const { return what(); }

void internal_error(const char* file, int line, const char* condition, const std::string& message) {
  throw InternalError(fmt::format("internal error at {}:{}: '{}' failed: {} (this is a bug in cnnc)", file,
                                  line, condition, message));
}

namespace {

// Case-insensitive: 'SAME' is one edit from nothing, so that TensorFlow spellings get a suggestion.
size_t edit_distance(const std::string& a, const std::string& b) {
  auto lower = [](char c) { return char(std::tolower(static_cast<unsigned char>(c))); };
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      size_t substitution = diagonal + (lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1);
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, substitution});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  // Only suggest when the typo is small relative to the word: a third of its length, at least 1.
  if (word.size() > 64) return "";
  size_t best_distance = std::max<size_t>(1, (word.size() + 2) / 3) + 1;
  std::string best;
  for (const std::string& candidate : candidates) {
    size_t distance = edit_distance(word, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  return best;
}

std::string closest_match(const std::string& word, const std::initializer_list<std::string>& candidates) {
  return closest_match(word, std::vector<std::string>(candidates));
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
  std::string match = closest_match(word, candidates);
  return match.empty() ? "" : fmt::format(" (did you mean '{}'?)", match);
}

}  // namespace cnnc
