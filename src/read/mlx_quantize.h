#pragma once
// MLX's quantizers, as `mlx.core.quantize` (and so mlx_lm.convert -q) computes them, producing the exact tensors
// an MLX model folder stores: packed uint32 codes, per-group scales and (affine only) biases.
#include <cmath>
#include <cstdint>
#include <vector>

#include "read/quant_config.h"
#include "read/safetensors.h"
#include "util/half.h"

namespace mlx2gguf {

// Quantized form of a [rows, cols] matrix (stacked experts are just more rows).
struct QuantizedRows {
  std::vector<uint32_t> packed;  // rows × cols·bits/32 words; each row is an LSB-first bit stream of codes
  std::vector<uint8_t> scales;   // rows × cols/group_size values: floats in `scale_dtype` (affine), U8 codes (fp modes)
  std::vector<uint8_t> biases;   // affine only, same layout and dtype as scales
  DType scale_dtype = DType::BF16;
};

// Affine quantization of rows whose values are already representable in `scale_dtype` (the model's float
// storage type, which MLX also uses for scales and biases). Per group of `group_size`:
// scale = max((max - min) / (2^bits - 1), 1e-7), negated unless |min| > |max|; the edge (min or max) becomes the
// bias and the scale is adjusted so that the edge maps to an integer code, which keeps 0 exactly representable;
// codes = clamp(round((w - bias) / scale), 0, 2^bits - 1). Scales and biases are computed in float32 and only
// then rounded to `scale_dtype`, so the codes come from the unrounded values, as in MLX.
QuantizedRows quantize_affine(const float* w, int64_t rows, int64_t cols, int bits, int group_size, DType scale_dtype);

// mxfp4 (E2M1 codes, E8M0 scale per 32), nvfp4 (E2M1 codes, E4M3 scale per 16) or mxfp8 (E4M3 codes, E8M0 scale
// per 32). Scales are U8; there are no biases.
QuantizedRows quantize_fp(const float* w, int64_t rows, int64_t cols, QuantMode mode);

// Appends `count` codes of `bits` each to a zeroed word buffer as one little-endian, LSB-first bit stream:
// code i occupies stream bits [i·bits, (i+1)·bits), so 3/5/6-bit codes straddle word boundaries.
void pack_codes(const uint32_t* codes, int64_t count, int bits, uint32_t* words);

// Encoders of the fp formats, rounding to nearest with ties to the even code and saturating at the largest
// finite value.
uint8_t f32_to_e2m1(float value);  // bit 3 = sign
uint8_t f32_to_e4m3(float value);  // OCP E4M3 "fn": bias 7, max 448, 0x7F is NaN

// Stores `value` rounded to `dtype` (F32, F16 or BF16) at `out`, little-endian.
void store_float(float value, DType dtype, uint8_t* out);
// `value` rounded to what `dtype` (F32, F16 or BF16) can represent. Inline: merges call it per weight.
inline float round_to_dtype(float value, DType dtype) {
  switch (dtype) {
    case DType::BF16: return bf16_to_f32(f32_to_bf16(value));
    case DType::F16: return f16_to_f32(f32_to_f16(value));
    default: return value;
  }
}

// Round to nearest, ties to even, as std::nearbyint in the default rounding mode, without a library call:
// adding and removing 2^23 leaves no fraction bits, so the addition itself rounds.
inline float round_half_even(float x) {
  constexpr float kTwo23 = 8388608.0f;
  if (!(std::fabs(x) < kTwo23)) return x;  // already an integer (or NaN)
  return x >= 0.0f ? (x + kTwo23) - kTwo23 : (x - kTwo23) + kTwo23;
}

}  // namespace mlx2gguf
