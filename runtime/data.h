// Input data: IDX files (the MNIST format, gzipped or not) and images (PNG, JPEG, BMP, ... via stb).
// Images stay bytes; convert a batch at a time with to_floats.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cnnc::rt {

struct ImageSet {
  int64_t count = 0;
  int64_t height = 0, width = 0, channels = 1;
  std::vector<uint8_t> pixels;  // count x height x width x channels, row-major (NHWC)
  int64_t image_bytes() const { return height * width * channels; }
};

// Reads an IDX3 image file (magic 0x00000803); `limit` >= 0 reads at most that many images.
// Validates the magic number, the dimensions and that the file holds every image it announces.
ImageSet read_idx_images(const std::string& path, int64_t limit = -1);
// Reads an IDX1 label file (magic 0x00000801).
std::vector<uint8_t> read_idx_labels(const std::string& path, int64_t limit = -1);

// Decodes one image file with `channels` channels (1: grayscale, 3: RGB).
ImageSet read_image(const std::string& path, int channels);

// Pixels of images [first, first + count) as floats in [0, 1] (x / 255).
void to_floats(const ImageSet& images, int64_t first, int64_t count, float* out);

// Is this file an IDX file (by its magic number)?
bool is_idx_file(const std::string& path);

}  // namespace cnnc::rt
