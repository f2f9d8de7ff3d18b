// Diagnostics: source positions and the one exception type for user errors.
//
// A UserError is a mistake in the user's input (a model file, a flag, a data file). It is printed
// as `FILE:LINE:COL: error: MESSAGE` and makes the driver exit with status 1. Bugs in cnnc itself
// are not UserErrors: they are caught by CNNC_ASSERT, which names the broken invariant.
#pragma once

#include <stdexcept>
#include <initializer_list>
#include <string>
#include <vector>

namespace cnnc {

// A position in a source file. line and column are 1-based; 0 means "unknown".
struct SourceLoc {
  std::string file;
  int line = 0;
  int column = 0;

  // "file:line:col", or "file" where the position is unknown.
  std::string str() const;
};

class UserError : public std::runtime_error {
 public:
  UserError(SourceLoc loc, const std::string& message);

  const SourceLoc& loc() const { return loc_; }
  const std::string& message() const { return message_; }
  // The whole diagnostic, as printed: "file:line:col: error: message".
  std::string formatted() const;

 private:
  SourceLoc loc_;
  std::string message_;
};

// Raised by CNNC_ASSERT: an internal invariant broke, i.e. a bug in cnnc.
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

[[noreturn]] void internal_error(const char* file, int line, const char* condition, const std::string& message);

#define CNNC_ASSERT(condition, message)                                        \
  do {                                                                          \
    if (!(condition)) ::cnnc::internal_error(__FILE__, __LINE__, #condition, (message)); \
  } while (0)

// The candidate closest to `word` by edit distance, or "" if none is close enough to suggest.
std::string closest_match(const std::string& word, const std::initializer_list<std::string>& candidates);
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

// " (did you mean 'x'?)" or "" where nothing is close.
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace cnnc
