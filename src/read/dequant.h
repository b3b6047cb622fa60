#pragma once
// Dequantization of MLX-quantized rows to float32, exactly as MLX defines it.
#include <cstdint>

#include "read/quant_config.h"
#include "read/safetensors.h"

namespace mlx2gguf {

// Value of the `index`-th `bits`-wide code in a little-endian, LSB-first bit stream (MLX's packing for every
// affine width: 2/4/8-bit codes never straddle words, 3/5/6-bit codes do).
inline uint32_t unpack_code(const uint8_t* stream, int64_t index, int bits) {
  const int64_t bit = index * bits;
  const uint8_t* p = stream + (bit >> 3);
  const int shift = static_cast<int>(bit & 7);
  // A code of up to 8 bits spans at most two bytes.
  const uint32_t window = static_cast<uint32_t>(p[0]) | (shift + bits > 8 ? static_cast<uint32_t>(p[1]) << 8 : 0u);
  return (window >> shift) & ((1u << bits) - 1u);
}

// Reads element `i` of a float tensor stored as F32/F16/BF16 (possibly unaligned).
float load_float(const uint8_t* data, DType dtype, int64_t i);

// Converts `count` consecutive stored floats to float32.
void load_floats(const uint8_t* data, DType dtype, int64_t count, float* out);

// One row of `length` weights: `packed` holds the row's codes, `scales`/`biases` the row's per-group values
// (biases null for the fp modes). `scale_dtype` is the storage type of scales and biases (affine only).
void dequantize_row(const QuantSpec& spec, const uint8_t* packed, const uint8_t* scales, const uint8_t* biases,
                    DType scale_dtype, int64_t length, float* out);

// Decoders of the fp formats MLX uses.
float e8m0_to_f32(uint8_t e);    // 2^(e-127); 0 decodes as 2^-127
float e4m3_to_f32(uint8_t code);  // OCP E4M3 "fn": bias 7, no infinities
float e2m1_to_f32(uint8_t code);  // OCP E2M1 (bit 3 = sign)

}  // namespace mlx2gguf
