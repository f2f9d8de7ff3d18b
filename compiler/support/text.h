// Text for people: counted nouns ("1 epoch", "3 epochs") and progress lines on a terminal.
// Header-only; shared by the compiler and the runtime (no Halide, fmt only).
#pragma once

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace cnnc {

// The noun for `count` of it: "epoch" for 1, else "epochs" (or `plural_form`, for "batch" ->
// "batches").
inline std::string plural_noun(int64_t count, const std::string& noun, const std::string& plural_form = "") {
  if (count == 1) return noun;
  return plural_form.empty() ? noun + "s" : plural_form;
}

// "1 epoch", "0 epochs", "2 batches" (with plural_form "batches").
inline std::string plural(int64_t count, const std::string& noun, const std::string& plural_form = "") {
  return fmt::format("{} {}", count, plural_noun(count, noun, plural_form));
}

// The width of the terminal on `fd`, or `fallback` when it is not one or does not say.
inline int terminal_columns(int fd, int fallback = 80) {
  struct winsize size {};
  if (ioctl(fd, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return int(size.ws_col);
  return fallback;
}

// `line` cut to `columns` - 1 characters ("..." at the end where cut), so that a line rewritten
// in place with "\r\033[K" never wraps onto a second row that "\r" cannot reach.
inline std::string fit_line(const std::string& line, int columns) {
  size_t width = columns > 4 ? size_t(columns - 1) : 3;
  if (line.size() <= width) return line;
  return line.substr(0, width - 3) + "...";
}

// A duration as a clock shows it: "42s", "9:18", "1:02:03".
inline std::string clock_duration(double seconds) {
  if (!(seconds > 0)) seconds = 0;
  int64_t s = int64_t(seconds + 0.5);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}:{:02d}", s / 60, s % 60);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60);
}

}  // namespace cnnc
