#pragma once
// Lossless repacking: MLX-quantized rows moved into GGUF blocks that hold exactly the same values. The codes are
// copied, never recomputed; only the per-group scale (and bias) changes its storage format, and only where that
// conversion is exact.
//   affine 2/3/4-bit → Q4_1 (d = scale, m = bias, one MLX group = group_size/32 blocks sharing d and m)
//   affine 5-bit     → Q5_1
//   mxfp4            → MXFP4 (same E8M0 byte, codes re-paired within the block)
//   nvfp4            → NVFP4 (E4M3 scale bytes of four groups of 16 per block; must be non-negative)
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "read/source_model.h"
#include "gguf/gguf_types.h"
#include "util/isa.h"

namespace mlx2gguf {

// The GGUF type that holds this MLX quantization exactly, or a reason why none does.
struct LosslessTarget {
  std::optional<GgmlType> type;
  std::string reason;  // set when `type` is empty
};
LosslessTarget lossless_target(const QuantSpec& spec, int64_t row_length);

// Checks every stored scale and bias of `tensor` against `target`'s scale format. Returns a description of the
// first value that would change (naming the tensor), or nullopt when the whole tensor repacks exactly.
std::optional<std::string> repack_obstacle(const SourceTensor& tensor, GgmlType target);

// A column map as a map of whole quantization groups: output group g = source group result[g]. Returns nullopt
// when some output group is not one source group taken in order (then the tensor must go through floats).
std::optional<std::vector<int64_t>> column_map_as_groups(const std::vector<int64_t>& column_map, int64_t group_size);

// Writes one `target` row (ggml_row_bytes(target, row_length) bytes) from packed source row `row`, output group g
// taken from source group groups[g] (empty: identity).
void repack_row(const SourceTensor& tensor, int64_t row, GgmlType target, const std::vector<int64_t>& groups,
                uint8_t* out);
// The same with the vector instructions of `isa` (one of supported_isas()) for the 4-bit cases, so that tests can
// compare every version; repack_row uses best_isa().
void repack_row(const SourceTensor& tensor, int64_t row, GgmlType target, const std::vector<int64_t>& groups,
                uint8_t* out, Isa isa);

}  // namespace mlx2gguf
