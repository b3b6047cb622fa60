#pragma once
// Importance matrices written by llama.cpp's llama-imatrix, in its GGUF format or its legacy `.dat` format, read
// into the per-column weights llama-quantize gives its quantizers.
//
// GGUF: for each tensor `<name>` two F32 tensors, `<name>.in_sum2` (sums of squared activations, ne0 values per
// expert) and `<name>.counts` (activations counted, one per expert), and the keys imatrix.datasets,
// imatrix.chunk_count and imatrix.chunk_size. The weight is in_sum2 / count per expert (1 where never counted).
// Legacy: int32 entry count; per entry int32 name length, the name, int32 call count, int32 value count and the
// float values; optionally int32 chunk count, int32 length and the dataset name. The weight is value / calls.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace mlx2gguf {

struct ImportanceMatrix {
  std::filesystem::path path;
  bool legacy = false;                                // the .dat format
  std::map<std::string, std::vector<float>> entries;  // GGUF tensor name → ne0 × experts weights
  std::vector<std::string> datasets;                  // what it was computed on (may be empty)
  uint32_t chunk_count = 0;                           // 0 when the file does not say

  const std::vector<float>* find(const std::string& tensor_name) const {
    const auto it = entries.find(tensor_name);
    return it == entries.end() ? nullptr : &it->second;
  }
};

// Reads either format (told apart by the GGUF magic). Throws Error naming the file and the entry or key for
// anything malformed: truncation, sizes that do not fit the file, sums without counts, non-F32 data, non-finite
// weights, or a GGUF file without llama-imatrix's metadata keys (which llama-quantize refuses too).
ImportanceMatrix read_imatrix(const std::filesystem::path& path);

// Writers of both formats, from weights per tensor (used by tests and tools to make matrices with known values).
// The GGUF writer stores each entry's sums (ne0 × experts) and counts (one per expert) as given.
void write_imatrix_gguf(const std::filesystem::path& path, const std::map<std::string, std::vector<float>>& sums,
                        const std::map<std::string, std::vector<float>>& counts, const std::vector<std::string>& datasets,
                        uint32_t chunk_count, uint32_t chunk_size);
void write_imatrix_legacy(const std::filesystem::path& path, const std::map<std::string, std::vector<float>>& values,
                          const std::map<std::string, int32_t>& calls, int32_t chunk_count, const std::string& dataset);

}  // namespace mlx2gguf
