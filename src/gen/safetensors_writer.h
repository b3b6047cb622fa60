#pragma once
// Writes safetensors files byte for byte as MLX's `save_safetensors` does: the header is compact JSON with
// sorted keys ("__metadata__" first), it is not padded, so the data starts right at 8 + header length, and
// tensors follow each other without gaps (so their data is often misaligned).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "read/safetensors.h"

namespace mlx2gguf::gen {

struct GenTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // little-endian values, row-major

  int64_t element_count() const;
};

// Tensor data from values: floats stored in `dtype` (F32, F16 or BF16), packed uint32 words little-endian.
std::vector<uint8_t> float_bytes(const std::vector<float>& values, DType dtype);
std::vector<uint8_t> word_bytes(const std::vector<uint32_t>& words);

// Data is laid out in the order of `tensors`; the header lists them sorted by name regardless. `metadata` is
// stored as "__metadata__": MLX model shards carry {"format": "mlx"}, files saved without metadata a JSON null.
// `header_alignment` > 1 pads the header with spaces to a multiple of it, as the safetensors library (and so
// every Hugging Face checkpoint) does with 8; MLX does not pad.
void write_safetensors(const std::filesystem::path& path, const std::vector<GenTensor>& tensors,
                       const nlohmann::json& metadata, size_t header_alignment = 1);

// The header JSON write_safetensors produces for `tensors` (without the 8-byte length prefix), padded likewise.
std::string safetensors_header(const std::vector<GenTensor>& tensors, const nlohmann::json& metadata,
                               size_t header_alignment = 1);

}  // namespace mlx2gguf::gen
