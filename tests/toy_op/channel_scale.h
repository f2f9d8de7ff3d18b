// A toy op registered by the test suite (channel_scale.cpp).
#pragma once

namespace cnnc::toy {

// Registers channel_scale's definition, Halide half and reference (once per process).
void register_channel_scale();

}  // namespace cnnc::toy
