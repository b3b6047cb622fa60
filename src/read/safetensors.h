#pragma once
// safetensors reader. Every header is validated before any tensor is used: a file that lies about its
// contents is rejected with a message naming the file and the tensor.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "read/mapped_file.h"

namespace mlx2gguf {

// Storage types mlx-lm writes for model weights. U32 holds packed quantized codes, U8 the scales of
// the fp quantization modes. Everything else is rejected by name when a file is opened.
enum class DType { F32, F16, BF16, U32, U8 };

const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

// A tensor stored in a safetensors file: a view into the mapped file, possibly unaligned.
struct StoredTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;
  std::filesystem::path file;

  int64_t element_count() const;
};

class SafetensorsFile {
 public:
  // Largest accepted JSON header; real headers of huge MoE models stay far below this.
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return map_.path(); }
  const std::map<std::string, StoredTensor>& tensors() const { return tensors_; }
  const nlohmann::json& metadata() const { return metadata_; }

 private:
  explicit SafetensorsFile(const std::filesystem::path& path) : map_(path) {}
  void parse();

  MappedFile map_;
  std::map<std::string, StoredTensor> tensors_;
  nlohmann::json metadata_;
};

}  // namespace mlx2gguf
