#pragma once
// What a conversion plan will write, tensor by tensor, in words: the table `convert --dry-run` prints and the
// `tensors` list of the `--json` run summary.
#include <cstdint>
#include <string>
#include <vector>

#include "plan/plan.h"

namespace mlx2gguf {

struct PlannedTensor {
  std::string name;          // GGUF tensor name
  std::vector<int64_t> ne;   // GGUF dimensions (ne[0] contiguous)
  std::string type;          // GGUF type name, e.g. "Q4_1"
  uint64_t bytes = 0;        // tensor data size in the file (without alignment padding)
  std::string source;        // source tensor name(s), or "computed"
  std::string source_type;   // "MLX affine 4-bit g64", "bfloat16", ...
  std::string transform;     // e.g. "repack", "dequantize, encode; rows reordered"
  bool repack = false;       // codes moved losslessly from the MLX packed weights
  bool keep_f32 = false;     // F32 whatever the output type (norms, routers, conv kernels ...)
  std::string note;          // why this type (lossless repack, or why a quantized source was re-encoded)
};

std::vector<PlannedTensor> describe_tensors(const ConversionPlan& plan);

// Size of the GGUF file the plan makes, header and alignment included.
uint64_t planned_file_size(const ConversionPlan& plan);

}  // namespace mlx2gguf
