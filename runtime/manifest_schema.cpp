// manifest.json's keys (see manifest_schema.h): the only place that spells them.
#include "manifest_schema.h"

#include <nlohmann/json.hpp>

namespace cnnc::manifest {

namespace {

using json = nlohmann::json;

json schedule_json(const Schedule& schedule) {
  json out = {{"origin", schedule.origin}, {"knobs", schedule.knobs}, {"description", schedule.description}};
  if (schedule.executed_flops > 0) out["executed_flops"] = schedule.executed_flops;
  return out;
}

Schedule read_schedule(const json& in) {
  return {in.at("origin"), in.at("knobs"), in.at("description"), in.value("executed_flops", int64_t(0))};
}

}  // namespace

bool known_format(const json& in) { return in.is_object() && in.value("format", "") == kFormat; }

void to_json(json& out, const Manifest& manifest) {
  out = json::object();
  out["format"] = manifest.format;
  out["cnnc_version"] = manifest.cnnc_version;
  out["halide_version"] = manifest.halide_version;
  out["model"] = manifest.model;
  out["model_file"] = manifest.model_file;
  out["model_hash"] = manifest.model_hash;
  const Target& target = manifest.target;
  out["target"] = {{"name", target.name}, {"halide", target.halide}, {"gpu", target.gpu}, {"arch", target.arch}};
  out["layout"] = manifest.layout;
  out["input"] = {{"node", manifest.input.node}, {"shape", manifest.input.shape}};
  out["output"] = {{"node", manifest.output.node}, {"shape", manifest.output.shape}};
  json buffers = json::array();
  for (const Buffer& buffer : manifest.buffers) {
    json fused = json::array();
    for (const FusedOp& op : buffer.fused) fused.push_back({{"op", op.op}, {"layer", op.layer}});
    buffers.push_back({{"id", buffer.id},
                       {"name", buffer.name},
                       {"op", buffer.op},
                       {"shape", buffer.shape},
                       {"inputs", buffer.inputs},
                       {"fused", fused},
                       {"storage", buffer.storage},
                       {"view", buffer.view},
                       {"flops", buffer.flops}});
  }
  out["buffers"] = buffers;
  json params = json::array();
  for (const Param& param : manifest.params)
    params.push_back({{"name", param.name},
                      {"layer", param.layer},
                      {"shape", param.shape},
                      {"offset", param.offset},
                      {"trainable", param.trainable},
                      {"initializer", param.initializer}});
  out["params"] = params;
  out["param_floats"] = manifest.param_floats;
  json kernels = json::array();
  for (const Kernel& kernel : manifest.kernels)
    kernels.push_back({{"function", kernel.function},
                       {"node", kernel.node},
                       {"op", kernel.op},
                       {"fused", kernel.fused},
                       {"arguments", kernel.arguments},
                       {"inputs", kernel.inputs},
                       {"output", kernel.output},
                       {"flops_per_example", kernel.flops_per_example},
                       {"schedule", schedule_json(kernel.schedule)}});
  out["kernels"] = kernels;
  out["trainable"] = manifest.trainable;
  if (!manifest.trainable) out["untrainable_reason"] = manifest.untrainable_reason;
  json training = json::array();
  for (const TrainingKernel& kernel : manifest.training_kernels)
    training.push_back({{"function", kernel.function},
                        {"kind", kernel.kind},
                        {"node", kernel.node},
                        {"flops_per_example", kernel.flops_per_example},
                        {"schedule", schedule_json(kernel.schedule)}});
  out["training_kernels"] = training;
  out["plan"] = manifest.plan;
}

void from_json(const json& in, Manifest& manifest) {
  manifest.format = in.at("format");
  manifest.cnnc_version = in.at("cnnc_version");
  manifest.halide_version = in.at("halide_version");
  manifest.model = in.at("model");
  manifest.model_file = in.at("model_file");
  manifest.model_hash = in.at("model_hash");
  const json& target = in.at("target");
  manifest.target = {target.at("name"), target.at("halide"), target.at("gpu"), target.at("arch")};
  manifest.layout = in.at("layout");
  for (auto [key, tensor] : {std::pair{"input", &manifest.input}, std::pair{"output", &manifest.output}}) {
    tensor->node = in.at(key).at("node");
    tensor->shape = in.at(key).at("shape").get<std::vector<int64_t>>();
  }
  manifest.buffers.clear();
  for (const json& node : in.at("buffers")) {
    Buffer buffer;
    buffer.id = node.at("id");
    buffer.name = node.at("name");
    buffer.op = node.at("op");
    buffer.shape = node.at("shape").get<std::vector<int64_t>>();
    buffer.inputs = node.at("inputs").get<std::vector<int>>();
    for (const json& fused : node.at("fused")) buffer.fused.push_back({fused.at("op"), fused.at("layer")});
    buffer.storage = node.at("storage");
    buffer.view = node.at("view");
    buffer.flops = node.at("flops");
    manifest.buffers.push_back(buffer);
  }
  manifest.params.clear();
  for (const json& param : in.at("params"))
    manifest.params.push_back({param.at("name"), param.at("layer"), param.at("shape").get<std::vector<int64_t>>(),
                               param.at("offset"), param.at("trainable"), param.value("initializer", "")});
  manifest.param_floats = in.at("param_floats");
  manifest.kernels.clear();
  for (const json& kernel : in.at("kernels"))
    manifest.kernels.push_back({kernel.at("function"), kernel.at("node"), kernel.at("op"),
                                kernel.at("fused").get<std::vector<std::string>>(),
                                kernel.at("arguments").get<std::vector<std::string>>(),
                                kernel.at("inputs").get<std::vector<int>>(), kernel.at("output"),
                                kernel.at("flops_per_example"), read_schedule(kernel.at("schedule"))});
  manifest.trainable = in.at("trainable");
  manifest.untrainable_reason = in.value("untrainable_reason", "");
  manifest.training_kernels.clear();
  for (const json& kernel : in.at("training_kernels"))
    manifest.training_kernels.push_back({kernel.at("function"), kernel.at("kind"), kernel.at("node"),
                                         kernel.at("flops_per_example"), read_schedule(kernel.at("schedule"))});
  manifest.plan = in.at("plan").get<std::vector<std::string>>();
}

}  // namespace cnnc::manifest
