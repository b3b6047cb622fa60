#pragma once
// The 32-element GGUF block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and the FP4 types (MXFP4, NVFP4): encoders
// that round like ggml's reference quantizers, and decoders that give the values llama.cpp computes with.
// Every function handles one row of `n` elements (a multiple of the type's block size).
#include <cstdint>

#include "util/isa.h"

namespace mlx2gguf {

void quantize_row_q4_0(const float* x, int64_t n, uint8_t* out);
void quantize_row_q4_1(const float* x, int64_t n, uint8_t* out);
void quantize_row_q5_0(const float* x, int64_t n, uint8_t* out);
void quantize_row_q5_1(const float* x, int64_t n, uint8_t* out);
void quantize_row_q8_0(const float* x, int64_t n, uint8_t* out);
// The same with the vector instructions of `isa` (one of supported_isas()): the same bytes; the versions above use
// best_isa(). Tests compare every version.
void quantize_row_q4_0(const float* x, int64_t n, uint8_t* out, Isa isa);
void quantize_row_q4_1(const float* x, int64_t n, uint8_t* out, Isa isa);
void quantize_row_q5_0(const float* x, int64_t n, uint8_t* out, Isa isa);
void quantize_row_q5_1(const float* x, int64_t n, uint8_t* out, Isa isa);
void quantize_row_q8_0(const float* x, int64_t n, uint8_t* out, Isa isa);
void quantize_row_mxfp4(const float* x, int64_t n, uint8_t* out);
void quantize_row_nvfp4(const float* x, int64_t n, uint8_t* out);

void dequantize_row_q4_0(const uint8_t* in, int64_t n, float* out);
void dequantize_row_q4_1(const uint8_t* in, int64_t n, float* out);
void dequantize_row_q5_0(const uint8_t* in, int64_t n, float* out);
void dequantize_row_q5_1(const uint8_t* in, int64_t n, float* out);
void dequantize_row_q8_0(const uint8_t* in, int64_t n, float* out);
void dequantize_row_mxfp4(const uint8_t* in, int64_t n, float* out);
void dequantize_row_nvfp4(const uint8_t* in, int64_t n, float* out);

// Writers of one block from integer codes, shared by the quantizers and the lossless repacker.
// `codes` holds the block's unsigned codes in element order; d and m are the stored fp16 bit patterns.
void pack_q4_1_block(uint16_t d, uint16_t m, const uint8_t* codes, uint8_t* block);  // 32 codes 0..15
void pack_q5_1_block(uint16_t d, uint16_t m, const uint8_t* codes, uint8_t* block);  // 32 codes 0..31
void pack_mxfp4_block(uint8_t e8m0, const uint8_t* codes, uint8_t* block);          // 32 E2M1 codes
void pack_nvfp4_block(const uint8_t* ue4m3, const uint8_t* codes, uint8_t* block);  // 4 scales, 64 codes

// ggml's FP4 values: twice the E2M1 value of each 4-bit code (bit 3 = sign), paired with halved scales.
extern const int8_t kFp4DoubledValues[16];
float e8m0_half_to_f32(uint8_t e);     // 2^(e - 128)
float ue4m3_half_to_f32(uint8_t code); // half the unsigned E4M3 value; 0 and 0x7F mean zero
uint8_t f32_to_ue4m3(float x);         // nearest unsigned E4M3 code, saturating at 448

}  // namespace mlx2gguf
