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

// Decodes one image file with `channels` channels (1: grayscale, 3: RGB). Images of more than
// kMaxImagePixels pixels are refused before they are decoded.
ImageSet read_image(const std::string& path, int channels);

// Pixels of images [first, first + count) as floats in [0, 1] (x / 255).
void to_floats(const ImageSet& images, int64_t first, int64_t count, float* out);

// Is this file an IDX file (by its magic number)?
bool is_idx_file(const std::string& path);

// Images larger than this (width x height) are refused before they are decoded.
constexpr int64_t kMaxImagePixels = int64_t(1) << 26;

// Resizes one image (height x width x channels bytes) to out_height x out_width: bilinear
// interpolation between the four nearest pixels, pixel centres aligned (as OpenCV's INTER_LINEAR
// and PIL's BILINEAR without antialiasing), rounded to the nearest byte.
std::vector<uint8_t> resize_bilinear(const uint8_t* pixels, int64_t height, int64_t width, int64_t channels,
                                     int64_t out_height, int64_t out_width);

// Images from a folder of class folders, DIR/<class>/*.{png,jpg,jpeg,bmp,gif,tga}: decoded with
// `channels` channels (stb: grayscale as luminance, RGB), resized to height x width with
// resize_bilinear, labelled by the index of their folder among `classes` (the sorted folder
// names when `classes` is empty on entry, filled in). A file that cannot be decoded is an error
// naming it, or with skip_bad is left out and reported through `skipped`. Decoded on all cores.
struct FolderImages {
  ImageSet images;
  std::vector<uint8_t> labels;
  std::vector<std::string> skipped;  // "path: reason"
  int64_t resized = 0;               // how many needed resizing
};
FolderImages read_image_folder(const std::string& dir, std::vector<std::string>& classes, int64_t height, int64_t width,
                               int channels, bool skip_bad, int64_t limit = -1);

}  // namespace cnnc::rt
