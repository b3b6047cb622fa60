#pragma once
// K-quant super-block encoders and decoders (Q2_K .. Q6_K, 256 elements per super-block), written to produce
// the same bytes as ggml's reference quantizers (the ones llama-quantize uses without an importance matrix) and
// to decode exactly like ggml's dequantizers.
//
// Every function handles one row: `n` is the number of elements, a multiple of 256, and the byte buffer holds
// n/256 consecutive super-blocks. They are single-threaded and allocate nothing; callers parallelise over rows.
#include <cstdint>

#include "util/isa.h"

namespace mlx2gguf {

inline constexpr int64_t kKQuantSuperBlock = 256;

// Bytes of one super-block of each type.
inline constexpr int64_t kQ2KBlockBytes = 84;
inline constexpr int64_t kQ3KBlockBytes = 110;
inline constexpr int64_t kQ4KBlockBytes = 144;
inline constexpr int64_t kQ5KBlockBytes = 176;
inline constexpr int64_t kQ6KBlockBytes = 210;

void quantize_row_q2_k(const float* x, int64_t n, uint8_t* out);
void quantize_row_q3_k(const float* x, int64_t n, uint8_t* out);
void quantize_row_q4_k(const float* x, int64_t n, uint8_t* out);
void quantize_row_q5_k(const float* x, int64_t n, uint8_t* out);
void quantize_row_q6_k(const float* x, int64_t n, uint8_t* out);

// The same with the search kernels of a given instruction set (one of supported_isas(); the functions above use
// best_isa()). Every instruction set writes the same bytes.
void quantize_row_q2_k(const float* x, int64_t n, uint8_t* out, Isa isa);
void quantize_row_q3_k(const float* x, int64_t n, uint8_t* out, Isa isa);
void quantize_row_q4_k(const float* x, int64_t n, uint8_t* out, Isa isa);
void quantize_row_q5_k(const float* x, int64_t n, uint8_t* out, Isa isa);
void quantize_row_q6_k(const float* x, int64_t n, uint8_t* out, Isa isa);

void dequantize_row_q2_k(const uint8_t* in, int64_t n, float* out);
void dequantize_row_q3_k(const uint8_t* in, int64_t n, float* out);
void dequantize_row_q4_k(const uint8_t* in, int64_t n, float* out);
void dequantize_row_q5_k(const uint8_t* in, int64_t n, float* out);
void dequantize_row_q6_k(const uint8_t* in, int64_t n, float* out);

}  // namespace mlx2gguf
