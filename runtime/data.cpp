#include "data.h"

#include <zlib.h>

#include <cstring>
#include <memory>

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

ImageSet read_image(const std::string& path, int channels) {
  int width = 0, height = 0, original = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> data(stbi_load(path.c_str(), &width, &height, &original, channels),
                                                 stbi_image_free);
  if (!data)
    throw UserError(SourceLoc{path, 0, 0}, fmt::format("cannot read the image: {}", stbi_failure_reason()));
  ImageSet image;
  image.count = 1;
  image.height = height;
  image.width = width;
  image.channels = channels;
  image.pixels.assign(data.get(), data.get() + image.image_bytes());
  return image;
}

void to_floats(const ImageSet& images, int64_t first, int64_t count, float* out) {
  const uint8_t* in = images.pixels.data() + first * images.image_bytes();
  int64_t total = count * images.image_bytes();
  for (int64_t i = 0; i < total; ++i) out[i] = float(in[i]) * (1.0f / 255.0f);
}

}  // namespace cnnc::rt
