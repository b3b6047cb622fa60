#pragma once
// Q3_K, Q4_K and Q5_K encoding of values that an MLX affine quantization produced, keeping the MLX codes where
// the format allows instead of re-rounding the dequantized floats.
//
// An MLX group holds w = s·q + b (q in 0..2^bits-1, one s and b per group of 32/64/128); a Q4_K/Q5_K sub-block of
// 32 holds w = d·sc·q' - dmin·m (q' in 0..15 or 0..31, 6-bit sc and m, one fp16 d and dmin per 256). Each
// sub-block lies inside one MLX group, so if d·sc equals s/k and dmin·m equals -b, every MLX value is exactly
// q' = k·q: the only error left is the 6-bit quantization of the sub-block scales and minimums, which the search
// below minimises jointly (d, dmin and all sc, m chosen for the least squared error with the MLX codes fixed;
// codes are then re-rounded against what was stored, which can only lower the error). Each super-block keeps
// whichever of this encoding and ggml's reference encoding (encode/k_quants.h) decodes closer to the input.
//
// Q3_K (16 sub-blocks of 16, w = d·sc·q' with q' in -4..3 and a signed 6-bit sc, no minimum) relies on MLX's
// quantizer putting zero on every group's lattice: a sub-block whose codes, counted from the zero code, fit -4..3
// (or -3..4 with a negative sc) is exact up to the scale quantization; the others get the step of least squared
// error.
//
// The lattice of each MLX group (s, b, the codes) is recovered from the values themselves, so the encoder works
// on any rows that are whole MLX groups (row maps and group-preserving column maps included).
#include <cstdint>

#include "gguf/gguf_types.h"
#include "read/quant_config.h"

namespace mlx2gguf {

// Whether `type` has an MLX-aware encoding for sources quantized as `spec`: Q3_K for affine 2/3-bit, Q4_K for
// affine 2/3/4-bit, Q5_K for affine 2..5-bit, groups of 32, 64 or 128.
bool has_mlx_aware_encoding(GgmlType type, const QuantSpec& spec);

// Encodes `rows` rows of `row_length` (a multiple of 256) MLX-dequantized values into `type` blocks.
void encode_rows_mlx_aware(GgmlType type, const QuantSpec& spec, const float* in, int64_t rows, int64_t row_length,
                           uint8_t* out);

}  // namespace mlx2gguf
