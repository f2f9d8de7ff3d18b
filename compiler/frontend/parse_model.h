// The front end: YAML text to a ModelSpec.
//
// Contract: returns a ModelSpec whose every layer names a known op, has every attribute of that op
// set (defaults filled in) with the right type and range, and has a valid identifier as name.
// Anything else in the input — bad YAML, unknown keys, wrong types, bad values, stray bytes —
// throws UserError with the file, line and column. Never crashes, hangs or allocates in proportion
// to numbers written in the file.
#pragma once

#include <string>

#include "frontend/model_spec.h"

namespace cnnc {

// Largest model file accepted; larger ones are rejected before parsing.
constexpr size_t kMaxModelFileBytes = 1 << 20;

ModelSpec parse_model_file(const std::string& path);
// `file` is only used in error messages.
ModelSpec parse_model_text(const std::string& text, const std::string& file);

// Model and layer names become C identifiers in generated code, so they must be identifiers.
bool is_valid_identifier(const std::string& name);
// Model names that would make the package's C symbols clash with the Halide runtime's ("halide...").
bool is_reserved_model_name(const std::string& name);

}  // namespace cnnc
