#pragma once
// Read-only memory map of a whole file. Inputs are never copied into memory: tensors are views into the map.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace mlx2gguf {

class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace mlx2gguf
