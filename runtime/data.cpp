#include "data.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <stb_image.h>

#include "support/diagnostics.h"

namespace cnnc::rt {

namespace {

// gzopen reads gzipped and plain files alike.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (!file_) throw UserError(SourceLoc{path, 0, 0}, fmt::format("cannot open: {}", std::strerror(errno)));
  }
  ~GzFile() { gzclose(file_); }
  // Reads up to `bytes`; returns how many were read. Throws on a corrupt gzip stream.
  int64_t read(void* out, int64_t bytes) {
    int64_t total = 0;
    while (total < bytes) {
      unsigned chunk = unsigned(std::min<int64_t>(bytes - total, 1 << 30));
      int got = gzread(file_, static_cast<char*>(out) + total, chunk);
      if (got < 0) {
        int code = 0;
        const char* message = gzerror(file_, &code);
        throw UserError(SourceLoc{path_, 0, 0}, fmt::format("corrupt compressed data: {}", message));
      }
      if (got == 0) break;
      total += got;
    }
    return total;
  }
  // The first 4 bytes must be `expected`: an IDX file of unsigned bytes of `kind` ("image",
  // "label") in `layout` (said in the error).
  void expect_magic(uint32_t expected, const char* kind, const char* layout) {
    uint32_t magic = read_u32("magic number");
    if (magic != expected)
      throw UserError(SourceLoc{path_, 0, 0}, fmt::format("not an IDX {} file: magic number 0x{:08x}, expected 0x{:08x} ({})",
                                                          kind, magic, expected, layout));
  }

  uint32_t read_u32(const char* what) {
    unsigned char bytes[4];
    if (read(bytes, 4) != 4)
      throw UserError(SourceLoc{path_, 0, 0}, fmt::format("not an IDX file: it ends before its {}", what));
    return uint32_t(bytes[0]) << 24 | uint32_t(bytes[1]) << 16 | uint32_t(bytes[2]) << 8 | bytes[3];
  }

 private:
  std::string path_;
  gzFile file_;
};

}  // namespace

bool is_idx_file(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) return false;
  unsigned char bytes[4] = {0xff, 0xff, 0xff, 0xff};
  int got = gzread(file, bytes, 4);
  gzclose(file);
  return got == 4 && bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0x08 && (bytes[3] == 1 || bytes[3] == 3);
}

ImageSet read_idx_images(const std::string& path, int64_t limit) {
  SourceLoc where{path, 0, 0};
  GzFile file(path);
  file.expect_magic(0x00000803, "image", "unsigned bytes, 3 dimensions");
  ImageSet images;
  images.count = file.read_u32("image count");
  images.height = file.read_u32("row count");
  images.width = file.read_u32("column count");
  if (images.height == 0 || images.width == 0 || images.height > 65536 || images.width > 65536)
    throw UserError(where, fmt::format("implausible image size {}x{}", images.height, images.width));
  int64_t announced = images.count;
  if (limit >= 0) images.count = std::min(images.count, limit);
  int64_t bytes = images.count * images.image_bytes();
  if (bytes > (int64_t(1) << 34))
    throw UserError(where, fmt::format("{} images of {}x{} is more than 16 GiB", images.count, images.height, images.width));
  images.pixels.resize(size_t(bytes));
  int64_t got = file.read(images.pixels.data(), bytes);
  if (got != bytes)
    throw UserError(where, fmt::format("truncated: the header announces {} images of {}x{}, but the file ends after {} "
                                       "of them",
                                       announced, images.height, images.width, got / images.image_bytes()));
  return images;
}

std::vector<uint8_t> read_idx_labels(const std::string& path, int64_t limit) {
  SourceLoc where{path, 0, 0};
  GzFile file(path);
  file.expect_magic(0x00000801, "label", "unsigned bytes, 1 dimension");
  int64_t announced = file.read_u32("label count");
  int64_t count = limit >= 0 ? std::min(announced, limit) : announced;
  if (count > (int64_t(1) << 32)) throw UserError(where, "implausible label count");
  std::vector<uint8_t> labels(static_cast<size_t>(count));
  int64_t got = file.read(labels.data(), count);
  if (got != count)
    throw UserError(where, fmt::format("truncated: the header announces {} labels, but the file ends after {}", announced, got));
  return labels;
}

namespace {

// Decodes one image file into `image` with `channels` channels; returns why it could not ("" on
// success). The size is read from the header and checked before any pixel is decoded. stb keeps
// its failure reason per thread, so image folders decode on several threads.
std::string decode_image(const std::string& path, int channels, ImageSet& image) {
  int width = 0, height = 0, original = 0;
  if (!stbi_info(path.c_str(), &width, &height, &original))
    return fmt::format("cannot read the image: {}", stbi_failure_reason());
  if (int64_t(width) * int64_t(height) > kMaxImagePixels)
    return fmt::format("the image is {}x{} pixels, more than cnnc reads ({})", width, height, kMaxImagePixels);
  std::unique_ptr<stbi_uc, void (*)(void*)> data(stbi_load(path.c_str(), &width, &height, &original, channels),
                                                 stbi_image_free);
  if (!data) return fmt::format("cannot read the image: {}", stbi_failure_reason());
  image.count = 1;
  image.height = height;
  image.width = width;
  image.channels = channels;
  image.pixels.assign(data.get(), data.get() + image.image_bytes());
  return "";
}

}  // namespace

ImageSet read_image(const std::string& path, int channels) {
  ImageSet image;
  if (std::string error = decode_image(path, channels, image); !error.empty()) throw UserError(SourceLoc{path, 0, 0}, error);
  return image;
}

void to_floats(const ImageSet& images, int64_t first, int64_t count, float* out) {
  const uint8_t* in = images.pixels.data() + first * images.image_bytes();
  int64_t total = count * images.image_bytes();
  for (int64_t i = 0; i < total; ++i) out[i] = float(in[i]) * (1.0f / 255.0f);
}

std::vector<uint8_t> resize_bilinear(const uint8_t* pixels, int64_t height, int64_t width, int64_t channels,
                                     int64_t out_height, int64_t out_width) {
  std::vector<uint8_t> out(size_t(out_height * out_width * channels));
  if (out_height == height && out_width == width) {
    std::copy(pixels, pixels + out.size(), out.begin());
    return out;
  }
  // Source coordinate of an output pixel centre; clamped so that edges repeat.
  auto source = [](int64_t i, int64_t in, int64_t outn, int64_t& i0, int64_t& i1, float& t) {
    double x = (double(i) + 0.5) * double(in) / double(outn) - 0.5;
    x = std::clamp(x, 0.0, double(in - 1));
    i0 = int64_t(std::floor(x));
    i1 = std::min(i0 + 1, in - 1);
    t = float(x - double(i0));
  };
  for (int64_t y = 0; y < out_height; ++y) {
    int64_t y0, y1;
    float ty;
    source(y, height, out_height, y0, y1, ty);
    for (int64_t x = 0; x < out_width; ++x) {
      int64_t x0, x1;
      float tx;
      source(x, width, out_width, x0, x1, tx);
      for (int64_t c = 0; c < channels; ++c) {
        auto at = [&](int64_t yy, int64_t xx) { return float(pixels[(yy * width + xx) * channels + c]); };
        float top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * tx;
        float bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * tx;
        float value = top + (bottom - top) * ty;
        out[size_t((y * out_width + x) * channels + c)] = uint8_t(std::clamp(std::lround(value), 0l, 255l));
      }
    }
  }
  return out;
}

FolderImages read_image_folder(const std::string& dir, std::vector<std::string>& classes, int64_t height, int64_t width,
                               int channels, bool skip_bad, int64_t limit) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::is_directory(dir, error)) throw UserError(SourceLoc{dir, 0, 0}, "not a directory");
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir, error))
    if (entry.is_directory()) found.push_back(entry.path().filename().string());
  std::sort(found.begin(), found.end());
  if (classes.empty()) classes = found;
  if (classes.empty()) throw UserError(SourceLoc{dir, 0, 0}, "no class folders here; expected DIR/<class>/<image files>");
  // Every example: (path, label), in a fixed order (class, then file name).
  std::vector<std::pair<std::string, uint8_t>> files;
  const std::vector<std::string> extensions = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga"};
  if (classes.size() > 256) throw UserError(SourceLoc{dir, 0, 0}, "more than 256 class folders");
  for (const std::string& name : found) {
    auto it = std::find(classes.begin(), classes.end(), name);
    if (it == classes.end())
      throw UserError(SourceLoc{(fs::path(dir) / name).string(), 0, 0},
                      fmt::format("class folder '{}' is not one of the training classes ({})", name, fmt::join(classes, ", ")));
    std::vector<std::string> paths;
    for (const auto& entry : fs::directory_iterator(fs::path(dir) / name, error)) {
      std::string ext = entry.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
      if (entry.is_regular_file() && std::find(extensions.begin(), extensions.end(), ext) != extensions.end())
        paths.push_back(entry.path().string());
    }
    std::sort(paths.begin(), paths.end());
    for (const std::string& path : paths) files.emplace_back(path, uint8_t(it - classes.begin()));
  }
  if (limit >= 0 && int64_t(files.size()) > limit) {
    // A limit keeps an even spread of the classes: every k-th file of the ordered list.
    std::vector<std::pair<std::string, uint8_t>> kept;
    for (int64_t i = 0; i < limit; ++i) kept.push_back(files[size_t(i * int64_t(files.size()) / limit)]);
    files = kept;
  }
  if (files.empty()) throw UserError(SourceLoc{dir, 0, 0}, "no image files (.png, .jpg, .jpeg, .bmp, .gif, .tga) in the class folders");

  FolderImages result;
  ImageSet& images = result.images;
  images.height = height;
  images.width = width;
  images.channels = channels;
  const int64_t bytes = images.image_bytes();
  images.pixels.assign(size_t(bytes) * files.size(), 0);
  std::vector<std::string> errors(files.size());
  std::vector<char> resized(files.size(), 0);
  auto decode = [&](size_t first, size_t step) {
    for (size_t i = first; i < files.size(); i += step) {
      ImageSet image;
      errors[i] = decode_image(files[i].first, channels, image);
      if (!errors[i].empty()) continue;
      std::vector<uint8_t> pixels = resize_bilinear(image.pixels.data(), image.height, image.width, channels, height, width);
      resized[i] = image.height != height || image.width != width;
      std::copy(pixels.begin(), pixels.end(), images.pixels.begin() + int64_t(i) * bytes);
    }
  };
  unsigned threads = std::max(1u, std::min(8u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(decode, size_t(t), size_t(threads));
  decode(0, threads);
  for (std::thread& thread : pool) thread.join();

  int64_t kept = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    if (!errors[i].empty()) {
      if (!skip_bad)
        throw UserError(SourceLoc{files[i].first, 0, 0},
                        fmt::format("{} (--skip-bad-images leaves such files out)", errors[i]));
      result.skipped.push_back(files[i].first + ": " + errors[i]);
      continue;
    }
    if (kept != int64_t(i))
      std::copy(images.pixels.begin() + int64_t(i) * bytes, images.pixels.begin() + int64_t(i + 1) * bytes,
                images.pixels.begin() + kept * bytes);
    result.labels.push_back(files[i].second);
    result.resized += resized[i];
    ++kept;
  }
  images.count = kept;
  images.pixels.resize(size_t(kept * bytes));
  if (kept == 0) throw UserError(SourceLoc{dir, 0, 0}, "no readable images");
  return result;
}

}  // namespace cnnc::rt
