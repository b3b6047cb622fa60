#pragma once
// Importance-weighted encoders: what ggml's quantizers do instead of their plain search when llama-quantize hands
// them an importance matrix (--imatrix). Each element's squared error counts in proportion to how strongly the
// model's activations use its column: `importance` holds one non-negative weight per column of the row (per
// expert for stacked experts, chosen by the caller), the mean squared activation llama-imatrix measured.
//
// Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K .. Q6_K change their search with the weights; every other type ignores them,
// as ggml does (Q8_0, MXFP4, NVFP4 and the float types round each value on its own). The bytes are the ones
// ggml_quantize_chunk writes for the same rows and weights.
#include <cstdint>

#include "gguf/gguf_types.h"

namespace mlx2gguf {

// Whether `type`'s bytes depend on importance weights.
bool uses_importance(GgmlType type);

// Encodes `rows` rows of `row_length` floats, every row weighted by the same `importance` (row_length values).
// Types that ignore the weights are encoded as encode_rows does.
void encode_rows_weighted(GgmlType type, const float* in, int64_t rows, int64_t row_length, const float* importance,
                          uint8_t* out);

// One row of `n` elements each (a multiple of the block size: 32, or 256 for the K types).
void quantize_row_q4_0_weighted(const float* x, int64_t n, const float* importance, uint8_t* out);
void quantize_row_q4_1_weighted(const float* x, int64_t n, const float* importance, uint8_t* out);
void quantize_row_q5_0_weighted(const float* x, int64_t n, const float* importance, uint8_t* out);
void quantize_row_q5_1_weighted(const float* x, int64_t n, const float* importance, uint8_t* out);
void quantize_row_q2_k_weighted(const float* x, int64_t n, const float* importance, uint8_t* out);
void quantize_row_q3_k_weighted(const float* x, int64_t n, const float* importance, uint8_t* out);
void quantize_row_q4_k_weighted(const float* x, int64_t n, const float* importance, uint8_t* out);
void quantize_row_q5_k_weighted(const float* x, int64_t n, const float* importance, uint8_t* out);
void quantize_row_q6_k_weighted(const float* x, int64_t n, const float* importance, uint8_t* out);

}  // namespace mlx2gguf
