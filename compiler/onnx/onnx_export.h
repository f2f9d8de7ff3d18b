// ONNX out: a compiled cnnc graph and its weights as an ONNX model (opset 14) with the NCHW
// interface other tools expect. The layout change is inside: weights are written in ONNX's
// layouts ([out, in, kh, kw] kernels, Gemm B as [in, out]) and a flatten is a Transpose to NHWC
// followed by Flatten, so the exported network computes exactly what cnnc computes and
// import_onnx_file gives back the same model and bit-identical weights.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "graph/graph.h"
#include "onnx/onnx_import.h"

namespace cnnc {

// The serialized ModelProto. `weights` holds every parameter of the graph by its cnnc name
// ("conv2d.kernel"), in cnnc's layout. Throws UserError for what ONNX cannot express.
std::string export_onnx_bytes(const Graph& graph, const std::map<std::string, ImportedTensor>& weights);
// Writes it to `path` atomically (a temporary file in the same directory, renamed over `path`
// once the checker, with full_check, accepts what was written: a rejected model leaves no file).
// Returns the number of ONNX nodes.
int64_t export_onnx_file(const Graph& graph, const std::map<std::string, ImportedTensor>& weights,
                         const std::string& path);
// onnx::checker::check_model on a serialized model; throws UserError with the checker's message.
// With full_check, also ONNX's strict shape inference with type checks (as Python's
// check_model(full_check=True)), which checks the value_info shapes the exporter writes.
void check_onnx_bytes(const std::string& bytes, const std::string& path, bool full_check = false);

}  // namespace cnnc
