#pragma once
// What the benchmark tools measure a model folder by: the bytes of its safetensors files, in MiB for printing.
#include <cstdint>
#include <filesystem>

namespace mlx2gguf::tools {

constexpr double kMiB = 1024.0 * 1024.0;

inline uint64_t safetensors_bytes(const std::filesystem::path& dir) {
  uint64_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".safetensors") total += entry.file_size();
  return total;
}

}  // namespace mlx2gguf::tools
