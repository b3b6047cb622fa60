#pragma once
// ggml's own reading of a GGUF file's header: what tests compare mlx2gguf's `inspect` with, so that the expected
// values do not come from mlx2gguf's reader.
#include <cstdint>
#include <string>
#include <vector>

namespace oracle {

struct GgufListing {
  struct Tensor {
    std::string name;
    std::string type;           // ggml_type_name: "f32", "bf16", "q8_0", "q4_K", ...
    std::vector<int64_t> ne;    // four entries, 1 past the tensor's own dimensions
    uint64_t file_offset = 0;   // of its data, from the start of the file
    uint64_t bytes = 0;
  };
  uint32_t version = 0;
  std::vector<std::string> keys;  // in file order
  std::vector<Tensor> tensors;    // in file order
};

// Throws std::runtime_error when ggml rejects the file.
GgufListing gguf_list_file(const std::string& path);

}  // namespace oracle
