// ONNX in: an ONNX CNN graph becomes a cnnc model (its YAML text and ModelSpec) and its weights.
//
// ONNX is NCHW, cnnc NHWC (Keras layouts): the importer converts every weight (a Conv's
// [out, in, kh, kw] to [kh, kw, in, out], a Gemm's rows after a Flatten of an NCHW map to cnnc's
// row-major [H, W, C] order) and folds what has no cnnc layer of its own (a Pad into the next
// window's padding where exact, Clip(0, 6) into relu6, x * Sigmoid(x) into swish, an activation
// into the Conv or Gemm before it, MatMul + Add into a dense with bias). Anything it cannot
// express exactly is refused with an error that names the node, its op type and index and what is
// supported: never a wrong network. The file is read through the ONNX library's protobuf classes
// (libonnx-dev); sizes, shapes and external data are checked before anything is allocated.
//
// No Halide and no ONNX headers here: the protobuf types stay inside onnx_import.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "frontend/model_spec.h"

namespace cnnc {

// Largest .onnx file read (weights included, external data excluded).
constexpr int64_t kMaxOnnxFileBytes = int64_t(1) << 31;

struct ImportedTensor {
  Shape shape;
  std::vector<float> data;  // row-major, cnnc's layout for the parameter
};

struct OnnxImport {
  std::string yaml;  // the model in cnnc's language, as `cnnc import` writes it
  ModelSpec spec;    // parsed from `yaml`; errors in it point at the .onnx file
  // The weights, named as in cnnc's safetensors files ("conv2d.kernel"), in cnnc's layouts.
  std::map<std::string, ImportedTensor> weights;
  // The ONNX interface: the input's dimensions without the batch ([C, H, W], [C, L] or [F]) and
  // the output's. cnnc's input and output are NHWC; to compare with ONNX, permute.
  Shape onnx_input_shape, onnx_output_shape;
  std::string input_name, output_name;  // the ONNX graph's
  // For an output that is a flattened NCHW map: that map's [H, W, C] (cnnc flattens it in h, w, c
  // order, ONNX in c, h, w; see cnnc_output_to_onnx); empty when the two orders agree.
  Shape output_flattened;
  // The file's input is NHWC, turned NCHW by a Transpose (tf2onnx), or its output is a Transpose
  // to NHWC: that side needs no permutation.
  bool input_nhwc = false, output_nhwc = false;
  // One line for each fold the importer made ("Clip(0, 6) node 4 became relu6"), for --verbose.
  std::vector<std::string> notes;
  int64_t opset = 0;

  // One example's input in ONNX layout (NCHW) to cnnc's (NHWC), and cnnc's output back.
  std::vector<float> onnx_input_to_cnnc(const float* onnx, int64_t batch) const;
  std::vector<float> cnnc_output_to_onnx(const float* cnnc, int64_t batch) const;
};

// Reads and converts `path`. Throws UserError (file: node ...: message) on anything it cannot
// import exactly.
OnnxImport import_onnx_file(const std::string& path);
// The same for a serialized ModelProto already in memory; `path` names it in messages and its
// folder anchors external data.
OnnxImport import_onnx_bytes(const std::string& bytes, const std::string& path);

// True for a path cnnc treats as ONNX (".onnx", any case).
bool is_onnx_path(const std::string& path);

}  // namespace cnnc
